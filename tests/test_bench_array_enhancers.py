"""bench/compare_array_enhancers.py: microphones per system, per-condition means, the report, reused rows.

Quality and the microphone routing are checked here; the cost columns are not (their figures live
in bench/results). DNSMOS is replaced by a stand-in whose
value is known, so the test needs no speechmos model.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench import compare_array_enhancers as bench

RATE = 16000
MICS = 4


def _write_array_set(root: Path) -> Path:
    """Two 4-mic items (a tone reaching each microphone a few samples later, plus noise): one from
    the measured array, one simulated, in the layout ``fixed_array_enhancement`` writes."""
    root.mkdir()
    generator = np.random.default_rng(0)
    time_axis = np.arange(int(0.5 * RATE)) / RATE
    lines = []
    for index, array in enumerate(("measured stride=2", "circular rt60=0.40")):
        target = (0.3 * np.sin(2 * np.pi * (220 + 60 * index) * time_axis)).astype(np.float32)  # [T]
        mixture = np.stack([np.roll(target, 3 * mic) for mic in range(MICS)])  # [M, T]
        mixture = (mixture + 0.05 * generator.standard_normal(mixture.shape)).astype(np.float32)
        folder = root / f"{index:05d}"
        folder.mkdir()
        sf.write(folder / "mixture.wav", mixture.T, RATE, subtype="FLOAT")
        sf.write(folder / "targets.wav", target[:, None], RATE, subtype="FLOAT")
        tensors = {"mixture": {"file": f"{index:05d}/mixture.wav", "shape": [MICS, target.size]},
                   "targets": {"file": f"{index:05d}/targets.wav", "shape": [1, 1, target.size]}}
        lines.append(json.dumps({"name": f"{index:05d}", "meta": {"array": array}, "tensors": tensors}))
    (root / "items.jsonl").write_text("\n".join(lines) + "\n")
    (root / "index.json").write_text(json.dumps({"sample_rate": RATE}))
    return root


def _checkpoints(folder: Path) -> tuple[Path, Path]:
    import torch

    import speechkit
    from speechkit.checkpoint import save_checkpoint

    torch.manual_seed(0)
    array = save_checkpoint(speechkit.build_model("deftan2", "tiny"), folder / "array.safetensors",
                            provenance={"steps_trained": 12, "train_hours": 0.5, "model_preset": "tiny"})
    single = save_checkpoint(speechkit.build_model("conv_tasnet", "tiny", n_src=1, sample_rate=RATE),
                             folder / "single.safetensors")
    return array, single


def test_single_channel_models_hear_the_reference_microphone_and_array_models_all(tmp_path: Path) -> None:
    from speechkit.api import load

    array, single = _checkpoints(tmp_path)
    mixture = (0.1 * np.random.default_rng(1).standard_normal((MICS, RATE // 2))).astype(np.float32)
    changed = mixture.copy()
    changed[1:] *= -3.0  # every microphone but the reference
    single_run = bench.model_runner(load(str(single)), reference_microphone=0)
    array_run = bench.model_runner(load(str(array)), reference_microphone=0)
    assert single_run(mixture, RATE).shape == (RATE // 2,)
    np.testing.assert_allclose(single_run(mixture, RATE), single_run(changed, RATE))
    assert not np.allclose(array_run(mixture, RATE), array_run(changed, RATE))


def test_report_scores_every_system_overall_and_per_condition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from speechkit import metrics

    monkeypatch.setattr(metrics, "dnsmos", lambda audio, rate: {"dnsmos_sig": 3.0, "dnsmos_bak": 2.0, "dnsmos_ovrl": 1.5})
    array, single = _checkpoints(tmp_path)
    test_set = _write_array_set(tmp_path / "test")
    out = tmp_path / "report.json"
    argv = ["--models", str(single), str(array), "--test-set", str(test_set), "--mac-seconds", "0.25", "--out", str(out)]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    unprocessed, single_row, array_row = report["systems"]
    assert unprocessed["model"] == bench.INPUT and [single_row["microphones"], array_row["microphones"]] == [1, MICS]
    for system in report["systems"]:
        assert {group: summary["items"] for group, summary in system["summary"].items()} == {
            "all": 2, "measured": 1, "simulated": 1}
        assert system["summary"]["all"]["dnsmos_ovrl"] == pytest.approx(1.5)
    input_level = 10 * np.log10(1 + 0.05**2 / (0.3**2 / 2))  # the input's noise over the tone, in dB
    assert unprocessed["rows"][0]["level_db"] == pytest.approx(input_level, abs=0.05)
    measured, simulated = (row["si_sdr"] for row in unprocessed["rows"])
    assert unprocessed["summary"]["measured"]["si_sdr"] == pytest.approx(measured)
    assert unprocessed["summary"]["all"]["si_sdr"] == pytest.approx((measured + simulated) / 2)
    row = array_row["rows"][0]
    assert row["si_sdri"] == pytest.approx(row["si_sdr"] - measured, abs=1e-4)  # against the reference microphone
    assert array_row["steps_trained"] == 12 and array_row["latency"] == "whole chunk (8 s)"
    markdown = out.with_suffix(".md").read_text()
    assert "`test`: measured (1 items)" in markdown and f"| {array} | {MICS} | 12 | 0.5 |" in markdown


def test_reuse_copies_unchanged_systems_and_scores_a_changed_checkpoint_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    import speechkit
    from speechkit.checkpoint import save_checkpoint

    array, single = _checkpoints(tmp_path)
    test_set = _write_array_set(tmp_path / "test")
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    common = ["--models", str(single), str(array), "--test-set", str(test_set), "--mac-seconds", "0.25", "--no-dnsmos"]
    assert bench.main([*common, "--out", str(first)]) == 0
    report = json.loads(first.read_text())
    report["systems"][1]["steps_trained"] = 999  # as an older version of the benchmark may have read it
    first.write_text(json.dumps(report))
    torch.manual_seed(1)  # other weights in the array checkpoint's file
    save_checkpoint(speechkit.build_model("deftan2", "tiny"), array, provenance={"steps_trained": 13}, overwrite=True)
    scored = []
    real_evaluate_model = bench.evaluate_model
    monkeypatch.setattr(bench, "evaluate_input", lambda *args: pytest.fail("the input row was scored again"))
    monkeypatch.setattr(bench, "evaluate_model",
                        lambda model, *args: scored.append(model) or real_evaluate_model(model, *args))
    assert bench.main([*common, "--out", str(second), "--reuse", str(first)]) == 0
    assert scored == [str(array)]
    old, new = (json.loads(path.read_text())["systems"] for path in (first, second))
    assert new[0]["rows"] == old[0]["rows"] and new[1]["rows"] == old[1]["rows"]
    assert new[0]["reused_from"] == json.loads(first.read_text())["date"] and "reused_from" not in new[2]
    assert new[2]["steps_trained"] == 13 and new[2]["rows"] != old[2]["rows"]
    assert new[1]["steps_trained"] is None  # a reused row's training facts are read from its weights file again
    assert f"{single}: copied from the report of" in second.with_suffix(".md").read_text()
    monkeypatch.setattr(bench, "METRICS", ["si_sdr", "si_sdri"])  # a report scored with other metrics is not reused
    with pytest.raises(pytest.fail.Exception, match="the input row was scored again"):
        bench.main([*common, "--out", str(tmp_path / "third.json"), "--reuse", str(second)])


def test_training_facts_count_every_stage_of_a_fine_tune() -> None:
    stage = {"steps_trained": 2500, "train_hours": 0.9}
    assert bench.training_facts(stage) == stage
    assert bench.training_facts({**stage, "total_steps": 8250, "total_train_hours": 2.85}) == {
        "steps_trained": 8250, "train_hours": 2.85}
