"""The AEC comparison benchmark (bench/compare_aec.py) and its echo-canceller adapters (bench/aec_peers).

Peers are optional: each peer test skips with the adapter's reason when its package (or, for
Speex, the system's libspeexdsp) is missing. Synthetic signals of 1 s, no timing assertions.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.aec_peers import PEERS, EchoCanceller, SpeechkitEchoCanceller
from bench.peers.base import Availability
from bench.peers.delay import estimate_delay

RATE = 16000
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def gliding_voice(seconds: float, seed: int, level: float = 0.2, rate: int = RATE) -> np.ndarray:
    """A ``[T]`` speech-like signal with a gliding pitch (no periodic ambiguity for cross-correlation)."""
    rng = np.random.default_rng(seed)
    time = np.arange(int(round(seconds * rate))) / rate
    pitch = 110.0 + 40.0 * seed + 80.0 * time / seconds + 15.0 * np.sin(2 * np.pi * 1.3 * time)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3.0 * time - np.pi / 2))
    return (level * envelope * voiced / 2.6 + 0.002 * rng.standard_normal(time.shape)).astype(np.float32)


def linear_echo(far_end: np.ndarray, delay: int = 480) -> np.ndarray:
    """A two-tap echo of ``far_end`` (bulk ``delay`` samples, then a weaker reflection 40 samples later)."""
    padded = np.concatenate([np.zeros(delay + 40, np.float32), far_end])  # [T] -> [T + delay + 40]
    return (0.5 * padded[40 : 40 + far_end.shape[0]] + 0.25 * padded[: far_end.shape[0]]).astype(np.float32)


def require_peer(peer: type[EchoCanceller]) -> EchoCanceller:
    available, reason = peer.is_available()
    if not available:
        pytest.skip(reason)
    return peer()


class OracleCanceller(EchoCanceller):
    """A fake 48 kHz canceller: mic minus the (known) echo of the reference, delayed by ``stream_delay``."""

    name = "oracle"
    native_rate = 48000
    block_size = 480
    stream_delay = 240

    @classmethod
    def availability(cls) -> Availability:
        return Availability(True)

    def process_native(self, audio: np.ndarray, state: Any) -> np.ndarray:
        cleaned = audio[0] - 0.5 * audio[1]
        return np.concatenate([np.zeros(self.stream_delay, np.float32), cleaned])[: cleaned.shape[0]]


# ----------------------------------------------------------------------------- the interface
def test_echo_canceller_resamples_flushes_and_keeps_the_declared_delay() -> None:
    far_end = gliding_voice(0.5, seed=1)
    near_end = gliding_voice(0.5, seed=2)
    canceller = OracleCanceller()
    output = canceller.cancel(near_end + 0.5 * far_end, far_end, RATE)
    assert output.shape == (far_end.shape[0] + canceller.flush_length(RATE),)
    delay, peak = estimate_delay([output], [near_end], 400)
    assert delay == 80  # 240 samples at 48 kHz
    assert peak > 0.95
    assert canceller.algorithmic_latency == pytest.approx((480 + 240) / 48000)


def test_echo_canceller_refuses_mono_input() -> None:
    with pytest.raises(ValueError, match=r"\[2, T\]"):
        OracleCanceller().process(np.zeros(160, np.float32), RATE)
    with pytest.raises(ValueError, match="one length"):
        OracleCanceller().cancel(np.zeros(160, np.float32), np.zeros(100, np.float32), RATE)


def test_registry_lists_every_peer_with_a_package() -> None:
    assert list(PEERS) == ["speex_aec", "webrtc_aec3", "webrtc_aec3_ns"]
    for name, peer in PEERS.items():
        assert peer.name == name and peer.package
        available, reason = peer.is_available()
        assert available or reason


# ----------------------------------------------------------------------------- real peers
@pytest.mark.parametrize("name", list(PEERS))
def test_peer_output_delay_matches_the_declared_one(name: str) -> None:
    """Near-end single talk (silent far end): the output is the near end, delayed by ``stream_delay``."""
    canceller = require_peer(PEERS[name])
    near_end = gliding_voice(1.0, seed=1)
    output = canceller.cancel(near_end, np.zeros_like(near_end), RATE)
    assert output.shape == (near_end.shape[0] + canceller.flush_length(RATE),)
    delay, peak = estimate_delay([output], [near_end], 800)
    assert abs(delay - canceller.stream_delay) <= 4, f"{name}: measured {delay}, declared {canceller.stream_delay}"
    assert peak > 0.5


@pytest.mark.parametrize("name", list(PEERS))
def test_peer_removes_a_delayed_linear_echo(name: str) -> None:
    """Far-end single talk with a 30 ms bulk delay: every peer attenuates the echo once converged."""
    from speechkit.metrics import erle

    canceller = require_peer(PEERS[name])
    far_end = gliding_voice(1.0, seed=3)
    echo = linear_echo(far_end)
    output = canceller.cancel(echo, far_end, RATE)[: echo.shape[0]]
    second_half = slice(RATE // 2, None)
    assert erle(echo[second_half], output[second_half]) > 6.0


# ----------------------------------------------------------------------------- speechkit
def test_speechkit_adapter_runs_an_untrained_preset_and_says_so() -> None:
    canceller = SpeechkitEchoCanceller("untrained:tiny")
    assert not canceller.trained
    far_end = gliding_voice(0.5, seed=1)
    output = canceller.cancel(linear_echo(far_end) + gliding_voice(0.5, seed=2), far_end, RATE)
    assert output.shape == far_end.shape and np.isfinite(output).all()
    assert canceller.algorithmic_latency == pytest.approx(canceller.network.algorithmic_latency / RATE)
    summary = canceller.describe()
    assert summary["trained"] is False and summary["provenance"]["untrained"] is True


def test_speechkit_adapter_refuses_a_missing_checkpoint(tmp_path: Path) -> None:
    from speechkit.errors import SpeechkitError

    with pytest.raises(SpeechkitError):
        SpeechkitEchoCanceller(tmp_path / "missing.safetensors")


# ----------------------------------------------------------------------------- scoring
def synthetic_items() -> list[dict[str, Any]]:
    """One item of each scenario built from gliding voices (no noise; the echo is what OracleCanceller removes)."""
    far_end, near_end = gliding_voice(1.0, seed=1), gliding_voice(1.0, seed=2)
    echo, silence = 0.5 * far_end, np.zeros_like(far_end)
    layouts = {
        "far_end_single_talk": (silence, echo, far_end),
        "double_talk": (near_end, echo, far_end),
        "near_end_single_talk": (near_end, silence, silence),
    }
    items = []
    for scenario, (near, echo_part, reference) in layouts.items():
        items.append({
            "name": scenario, "scenario": scenario, "mic": near + echo_part, "far_end": reference,
            "near_end": near, "echo": echo_part, "noise": silence, "delay_ms": 0.0, "ser_db": 0.0,
            "snr_db": math.inf, "nonlinearity": "linear", "rir": "measured", "echo_path_change_sample": -1,
        })
    return items


def test_evaluate_system_scores_the_unprocessed_mic_and_a_canceller() -> None:
    from bench.compare_aec import evaluate_system, markdown_report

    items = synthetic_items()
    unprocessed = evaluate_system(None, "mic (unprocessed)", items, with_aecmos=False)
    assert unprocessed["summary"]["fst_erle"] == pytest.approx(0.0, abs=1e-6)
    assert [row["scenario"] for row in unprocessed["items"]] == [item["scenario"] for item in items]
    oracle = evaluate_system(OracleCanceller(), "oracle", items, with_aecmos=False)
    assert oracle["delay_ms"] == pytest.approx(5.0)  # 240 samples at 48 kHz, found and compensated
    summary = oracle["summary"]
    assert summary["fst_erle"] > 20.0  # the oracle removes most of the echo (resampling leaves a residue)
    assert summary["dt_si_sdr"] > unprocessed["summary"]["dt_si_sdr"] + 10.0
    assert summary["breakdown"]["fst_erle_measured_rir"] == pytest.approx(summary["fst_erle"])
    report = {
        "date": "today", "machine": {"cpu": "cpu", "cores": 2, "platform": "linux"},
        "data": {"items_per_scenario": 1}, "skipped": {"speechkit": "no checkpoint"}, "notes": ["a note"],
        "systems": [unprocessed, oracle],
    }
    markdown = markdown_report(report)
    assert "| oracle |" in markdown and "Skipped: speechkit: no checkpoint" in markdown


@pytest.mark.slow
def test_aecmos_scores_rate_a_cancelled_echo_above_the_raw_echo() -> None:
    pytest.importorskip("speechmos")
    pytest.importorskip("librosa")
    from bench.compare_aec import aecmos_scores

    far_end = gliding_voice(1.0, seed=1)
    echo = linear_echo(far_end)
    raw = aecmos_scores(far_end, echo, echo, "st")
    cancelled = aecmos_scores(far_end, echo, 1e-4 * gliding_voice(1.0, seed=5), "st")
    for scores in (raw, cancelled):
        assert set(scores) == {"aecmos_echo", "aecmos_deg"}
        assert all(0.5 < value < 5.5 for value in scores.values())
    assert cancelled["aecmos_echo"] > raw["aecmos_echo"]


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data (the mini corpus) is not on this machine")
def test_held_out_set_is_written_once_and_reread_identically(tmp_path: Path) -> None:
    from bench.compare_aec import SCENARIOS, data_description, held_out_set

    first = held_out_set(1, cache_root=tmp_path)
    assert [item["scenario"] for item in first] == list(SCENARIOS)
    assert len(list((tmp_path / "fixed" / "compare_aec_16k").iterdir())) == 3
    again = held_out_set(1, cache_root=tmp_path)
    for one, two in zip(first, again):
        np.testing.assert_array_equal(one["mic"], two["mic"])
    fst, _, nst = first
    assert not fst["near_end"].any() and not nst["far_end"].any()
    description = data_description(first, 1)
    assert description["scenarios"] == {scenario: 1 for scenario in SCENARIOS}


def draw_echo_from_the_fake_train_split(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make ``recipes.train.realworld_echo`` draw every split from the fake cache's train split (its
    other splits hold one speaker and one room), simulated rooms, unfiltered; returns the list of
    splits asked for, filled as the builders call it."""
    import recipes.train

    built: list[str] = []
    original = recipes.train.realworld_echo

    def fake_cache_echo(corpus_root, split, *args, **kwargs):
        kwargs["echo_options"] = {**kwargs["echo_options"], "rir_source": "simulated"}
        built.append(split)
        return original(corpus_root, "train", *args, max_floor_db=None, **kwargs)

    monkeypatch.setattr(recipes.train, "realworld_echo", fake_cache_echo)
    return built


def test_held_out_sentence_set_comes_from_the_corpus_cache_test_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.compare_aec import SCENARIOS, data_description, held_out_set
    from tests.test_recipes_realworld import SPEAKERS, make_cache

    corpus = make_cache(tmp_path / "corpus")
    built = draw_echo_from_the_fake_train_split(monkeypatch)
    items = held_out_set(1, cache_root=tmp_path / "cache", corpus_root=corpus)
    assert built == ["test"] * 3 and [item["scenario"] for item in items] == list(SCENARIOS)
    assert len(list((tmp_path / "cache" / "fixed" / "compare_aec_sentences_16k").iterdir())) == 3
    fst, dt, nst = items
    assert not fst["near_end"].any() and not nst["far_end"].any() and fst["mic"].size == 64000
    assert {Path(dt["near_id"]).parent.name, Path(dt["far_id"]).parent.name} <= set(SPEAKERS["train"])
    assert data_description(items, 1, corpus)["speech"].startswith("corpus cache")
    assert data_description(items, 1)["speech"].startswith("mini corpus")


def test_compare_aec_scores_every_item_of_a_given_fixed_set(tmp_path: Path) -> None:
    import json

    import recipes.train
    from bench.compare_aec import SCENARIOS, fixed_echo_items, main
    from recipes.data.fixedset import write_fixed_set
    from tests.test_recipes_realworld import make_cache

    corpus = make_cache(tmp_path / "corpus")
    mixed = recipes.train.realworld_echo(  # a validation-like set: scenarios mixed in one folder
        str(corpus), "train", 16000, 1.0, 4, seed=3, max_floor_db=None,
        echo_options={"rir_source": "simulated", "scenario_weights": dict.fromkeys(SCENARIOS, 1.0)},
    )
    root = write_fixed_set(mixed, tmp_path / "validation", 16000, count=4)
    items = fixed_echo_items(root)
    assert [item["name"].split("_")[1] for item in items] == ["000", "001", "002", "003"]
    assert {item["name"].split("_")[0] for item in items} <= {"fst", "dt", "nst"} and items[0]["mic"].size == 16000
    with pytest.raises(SystemExit):  # the default report files hold the held-out set's results
        main(["--test-set", str(root), "--no-aecmos", "--peers"])
    out = tmp_path / "report.json"
    assert main(["--test-set", str(root), "--no-aecmos", "--peers", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["data"]["items"] == 4 and report["data"]["items_per_scenario"] is None
    assert str(root) in report["data"]["source"]
    systems = [system["system"] for system in report["systems"]]
    assert systems == ["mic (unprocessed)", "speechkit linear stage (linear_aec_16k)"]


def test_compare_aec_runs_a_streaming_export_through_the_realtime_engine(tmp_path: Path) -> None:
    """--realtime adds the export run live (delay tracked from past samples) and with the whole clip's
    delay; the latter reproduces the file path (the linear stage's row) on every item."""
    import json

    pytest.importorskip("onnxruntime")
    import recipes.train
    from bench.compare_aec import SCENARIOS, main
    from recipes.data.fixedset import write_fixed_set
    from speechkit.export import export_onnx
    from speechkit.pretrained import LINEAR_ECHO_CANCELLER, resolve_model
    from speechkit.api import load
    from tests.test_recipes_realworld import make_cache

    corpus = make_cache(tmp_path / "corpus")
    mixed = recipes.train.realworld_echo(
        str(corpus), "train", 16000, 1.0, 3, seed=4, max_floor_db=None,
        echo_options={"rir_source": "simulated", "scenario_weights": dict.fromkeys(SCENARIOS, 1.0)},
    )
    root = write_fixed_set(mixed, tmp_path / "validation", 16000, count=3)
    onnx_path = export_onnx(load(resolve_model(LINEAR_ECHO_CANCELLER)).model, tmp_path / "linear.onnx",
                            streaming=True, verify_steps=4).onnx_path
    out = tmp_path / "report.json"
    assert main(["--test-set", str(root), "--no-aecmos", "--peers", "--realtime", str(onnx_path),
                 "--out", str(out)]) == 0
    systems = {system["system"]: system for system in json.loads(out.read_text())["systems"]}
    live = systems["speechkit realtime (linear.onnx, ONNX, live delay tracking)"]
    whole = systems["speechkit realtime (linear.onnx, ONNX, delay of the whole clip)"]
    file_path = systems[f"speechkit linear stage ({LINEAR_ECHO_CANCELLER})"]
    assert live["latency_ms"] == whole["latency_ms"] == pytest.approx(file_path["latency_ms"])
    assert len(live["model"]["delays"]) == 3 and live["model"]["delays"][0]["tracked"] is True
    compared = 0
    for mine, reference in zip(whole["items"], file_path["items"]):
        for key in ("erle", "si_sdr"):
            if reference.get(key) is not None:
                assert mine[key] == pytest.approx(reference[key], abs=0.05), key
                compared += 1
    assert compared >= 3
