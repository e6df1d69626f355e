"""The comparison benchmark's peer adapters (bench/peers) and delay compensation.

Peers are optional: each peer test skips with the adapter's reason when its package is missing.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bench.peers import PEERS, Enhancer, SpeechkitEnhancer
from bench.peers.base import resample
from bench.peers.delay import compensate_delay, cross_correlation, estimate_delay
from bench.peers.speechkit_model import is_trained

RATE = 16000


def gliding_voice(seconds: float, rate: int = RATE, seed: int = 0, level: float = 0.2) -> np.ndarray:
    """A ``[T]`` speech-like signal with a gliding pitch (no periodic ambiguity for cross-correlation)."""
    rng = np.random.default_rng(seed)
    time = np.arange(int(round(seconds * rate))) / rate
    pitch = 110.0 + 80.0 * time / max(seconds, 1e-9) + 15.0 * np.sin(2 * np.pi * 1.3 * time)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3.0 * time - np.pi / 2))
    return (level * envelope * voiced / 2.6 + 0.002 * rng.standard_normal(time.shape)).astype(np.float32)


class PureDelay(Enhancer):
    """A fake 48 kHz peer whose output is its input delayed by ``stream_delay`` samples."""

    name = "pure_delay"
    native_rate = 48000
    block_size = 480
    stream_delay = 720

    @classmethod
    def availability(cls):
        from bench.peers.base import Availability

        return Availability(True)

    def process_native(self, audio: np.ndarray, state: Any) -> np.ndarray:
        return np.concatenate([np.zeros(self.stream_delay, np.float32), audio])[: audio.shape[0]]


# ----------------------------------------------------------------------------- delay estimation
@pytest.mark.parametrize("delay", [0, 1, 37, 480, -25])
def test_estimate_delay_finds_an_integer_shift(delay: int) -> None:
    reference = np.random.default_rng(1).standard_normal(RATE // 2).astype(np.float32)
    shifted = compensate_delay(reference, -delay, reference.shape[0] + max(delay, 0))  # y[n] = x[n - delay]
    found, peak = estimate_delay([shifted], [reference], max_lag=800)
    assert found == delay
    assert peak > 0.9
    restored = compensate_delay(shifted, found, reference.shape[0])
    valid = slice(max(-delay, 0), None)  # an advanced output lost its first -delay samples
    np.testing.assert_array_equal(restored[valid], reference[valid])


def test_estimate_delay_pools_items_and_survives_silent_outputs() -> None:
    rng = np.random.default_rng(2)
    references = [rng.standard_normal(4000).astype(np.float32) for _ in range(3)]
    outputs = [compensate_delay(reference, -96, 4200) for reference in references]
    outputs[1] = np.zeros(4200, np.float32)  # a system that muted one item
    outputs[2] = outputs[2] + 3.0 * rng.standard_normal(4200).astype(np.float32)  # and mangled another
    found, _ = estimate_delay(outputs, references, max_lag=400)
    assert found == 96


def test_cross_correlation_is_normalised() -> None:
    signal = np.random.default_rng(3).standard_normal(1000)
    values = cross_correlation(5.0 * signal, signal, max_lag=10)
    assert values.shape == (21,)
    assert values[10] == pytest.approx(1.0, abs=1e-9)


def test_compensate_delay_pads_and_cuts_to_length() -> None:
    output = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(compensate_delay(output, 3, 8), [3, 4, 5, 6, 7, 8, 9, 0])
    np.testing.assert_array_equal(compensate_delay(output, -2, 5), [0, 0, 0, 1, 2])


# ----------------------------------------------------------------------------- adapter interface
def test_adapter_interface_resamples_flushes_and_declares_latency() -> None:
    system = PureDelay()
    assert system.is_available() == (True, "")
    assert system.algorithmic_latency == pytest.approx((480 + 720) / 48000)
    audio = gliding_voice(0.5)
    output = system.process(audio, RATE)
    assert output.shape == (audio.shape[0] + system.flush_length(RATE),)
    delay, _ = estimate_delay([output], [audio], max_lag=800)
    assert delay == 720 * RATE // 48000
    aligned = compensate_delay(output, delay, audio.shape[0])
    error = aligned - audio
    assert 10 * np.log10(np.sum(audio**2) / np.sum(error**2)) > 30  # only soxr's resampling error remains


def test_resample_round_trip_keeps_alignment() -> None:
    audio = gliding_voice(0.25)
    back = resample(resample(audio, RATE, 48000), 48000, RATE)
    assert back.shape == audio.shape
    assert estimate_delay([back], [audio], max_lag=50)[0] == 0


@pytest.mark.parametrize("name", list(PEERS))
def test_peer_runs_and_its_declared_delay_matches_the_measured_one(name: str) -> None:
    peer_class = PEERS[name]
    available, reason = peer_class.is_available()
    if not available:
        pytest.skip(reason)
    assert reason == ""
    system = peer_class()
    assert system.name == name and system.native_rate in (16000, 48000)
    assert 0 < system.algorithmic_latency <= 0.05
    audio = gliding_voice(1.0, seed=4)
    noisy = audio + 0.01 * np.random.default_rng(5).standard_normal(audio.shape[0]).astype(np.float32)
    output = system.process(noisy, RATE)
    assert output.dtype == np.float32
    assert output.shape == (noisy.shape[0] + system.flush_length(RATE),)
    assert np.all(np.isfinite(output))
    assert np.sqrt(np.mean(output**2)) > 1e-3  # speech passes through
    delay, _ = estimate_delay([output], [audio], max_lag=1600)
    declared = system.stream_delay * RATE / system.native_rate
    assert abs(delay - declared) <= 8  # 0.5 ms: a suppressor's filtering may move the peak a little
    system.close()


def test_unavailable_peer_reports_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def refuse(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("speexdsp_ns"):
            raise ImportError("no speexdsp_ns here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
    available, reason = PEERS["speex_ns"].is_available()
    assert not available
    assert "pip install speexdsp-ns" in reason


# ----------------------------------------------------------------------------- speechkit adapter
@pytest.fixture
def tiny_checkpoint(tmp_path):
    import torch

    import speechkit
    from speechkit.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = speechkit.build_model("conv_tasnet", "tiny", n_src=1, sample_rate=RATE, causal=True, norm_type="cLN")
    return save_checkpoint(model, tmp_path / "tiny.safetensors", provenance={"untrained": True})


@pytest.fixture
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-block steps are tiny: extra threads only add contention
    yield
    torch.set_num_threads(threads)


def test_speechkit_adapter_offline_and_streaming_agree(tiny_checkpoint, one_thread) -> None:
    offline = SpeechkitEnhancer(tiny_checkpoint)
    streaming = SpeechkitEnhancer(tiny_checkpoint, streaming=True)
    assert not offline.trained
    model = offline.processor.model
    assert offline.algorithmic_latency == pytest.approx(model.algorithmic_latency / RATE)
    assert (streaming.block_size, streaming.stream_delay) == (model.block_size, model.stream_delay)
    audio = gliding_voice(0.1)
    offline_output = offline.process(audio, RATE)
    assert offline_output.shape == audio.shape and offline.flush_length(RATE) == 0
    streamed = streaming.process(audio, RATE)
    assert streamed.shape == (audio.shape[0] + streaming.flush_length(RATE),)
    aligned = compensate_delay(streamed, model.stream_delay, audio.shape[0])
    np.testing.assert_allclose(aligned, offline_output, atol=1e-4)


def test_is_trained_reads_provenance() -> None:
    assert not is_trained({})
    assert not is_trained({"untrained": True, "steps_trained": 10})
    assert is_trained({"steps_trained": 1200})


# ----------------------------------------------------------------------------- benchmark plumbing
def test_evaluate_system_compensates_delay_and_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pesq")
    pytest.importorskip("pystoi")
    from bench import compare_enhancers

    clean = gliding_voice(1.0, seed=6)
    noise = 0.02 * np.random.default_rng(7).standard_normal(clean.shape[0]).astype(np.float32)
    items = [{"name": "a", "snr_db": 5.0, "mixture": clean + noise, "clean": clean}]
    result = compare_enhancers.evaluate_system(PureDelay(), "pure delay", items, [], with_dnsmos=False)
    assert result["delay_samples"] == 240
    assert result["declared_delay_ms"] == pytest.approx(15.0)
    baseline = compare_enhancers.evaluate_system(None, "noisy input (unprocessed)", items, [], with_dnsmos=False)
    # a compensated pure delay scores like the unprocessed input
    assert result["summary"]["si_sdr"] == pytest.approx(baseline["summary"]["si_sdr"], abs=0.5)
    report = {
        "date": "today", "machine": {"cpu": "cpu", "cores": 2, "platform": "test"},
        "data": {"items": 1, "real_recordings": 0}, "skipped": {"rnnoise": "not installed"}, "notes": ["n"],
        "systems": [baseline, result],
    }
    table = compare_enhancers.markdown_report(report)
    assert "| pure delay |" in table and "15.0 / 15.0" in table and "rnnoise: not installed" in table


def test_evaluate_system_falls_back_to_the_declared_delay_for_unrelated_output() -> None:
    pytest.importorskip("pesq")
    pytest.importorskip("pystoi")
    from bench import compare_enhancers

    class NoiseOut(PureDelay):
        def process_native(self, audio: np.ndarray, state: Any) -> np.ndarray:
            return 0.1 * np.random.default_rng(0).standard_normal(audio.shape[0]).astype(np.float32)

    clean = gliding_voice(1.0, seed=10)
    items = [{"name": "a", "snr_db": 0.0, "mixture": clean + 0.05 * gliding_voice(1.0, seed=11)[::-1], "clean": clean}]
    result = compare_enhancers.evaluate_system(NoiseOut(), "noise", items, [], with_dnsmos=False)
    assert result["compensated_delay_samples"] == 240
    assert result["delay_source"].startswith("declared")


def test_noise_floor_snr_ranks_noisier_recordings_lower() -> None:
    from bench.compare_enhancers import noise_floor_snr_db

    voice = gliding_voice(1.0, seed=8)
    rng = np.random.default_rng(9)
    quiet = voice + 0.001 * rng.standard_normal(voice.shape[0]).astype(np.float32)
    noisy = voice + 0.05 * rng.standard_normal(voice.shape[0]).astype(np.float32)
    assert noise_floor_snr_db(noisy) < noise_floor_snr_db(quiet)


def test_speechkit_adapter_attenuation_limit(tiny_checkpoint, one_thread) -> None:
    from speechkit.errors import ConfigError

    plain = SpeechkitEnhancer(tiny_checkpoint)
    limited = SpeechkitEnhancer(tiny_checkpoint, attenuation_limit_db=20.0)
    assert limited.name == "speechkit-attlim20" and plain.name == "speechkit"
    audio = gliding_voice(0.1)
    np.testing.assert_allclose(limited.process(audio, RATE), plain.process(audio, RATE) + 0.1 * audio, atol=1e-5)
    with pytest.raises(ConfigError, match="offline API only"):
        SpeechkitEnhancer(tiny_checkpoint, streaming=True, attenuation_limit_db=20.0)


def test_finish_report_writes_header_and_sections(tmp_path, capsys):
    import json
    import time

    from bench.peers.report import finish_report

    out = tmp_path / "sub" / "bench.json"
    status = finish_report(
        "compare_x", ["--quick"], ["numpy"], time.perf_counter(), lambda report: f"| {report['benchmark']} |\n", out,
        data={"items": 2}, notes=["n"], systems=[{"name": "a"}],
    )
    report = json.loads(out.read_text())
    assert status == 0
    assert list(report)[-4:] == ["data", "notes", "systems", "elapsed_seconds"]
    assert report["benchmark"] == "compare_x" and report["command"] == "python -m bench.compare_x --quick"
    assert report["data"] == {"items": 2} and "elapsed_seconds" in report
    assert out.with_suffix(".md").read_text() == "| compare_x |\n"
    assert "| compare_x |" in capsys.readouterr().out
