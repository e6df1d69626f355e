"""bench/compare_separators.py: scores on a tiny fixed set, cost columns, validation against logged training time.

No clock is read and no speed or cost is asserted here: the report's cost columns (MACs, RTF, CPU
time, memory) are only checked to be present, and their figures live in bench/results. The "hours" of
the validation table are arithmetic on the training logs that the tests themselves write.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench import compare_separators

RATE = 16000


def _write_fixed_set(root: Path, count: int = 2) -> Path:
    """A fixed set of two-talker mixtures (two tones) in the layout ``speechkit eval --test-set`` reads."""
    root.mkdir()
    lines = []
    time_axis = np.arange(int(0.5 * RATE)) / RATE
    for index in range(count):
        talkers = np.stack([0.3 * np.sin(2 * np.pi * (180 + 40 * index) * time_axis),
                            0.2 * np.sin(2 * np.pi * (700 + 50 * index) * time_axis)]).astype(np.float32)  # [S, T]
        mixture = talkers.sum(axis=0, keepdims=True)  # [1, T]
        folder = root / f"{index:05d}"
        folder.mkdir()
        tensors = {}
        for key, audio in (("mixture", mixture), ("targets", talkers)):
            sf.write(folder / f"{key}.wav", audio.T, RATE, subtype="FLOAT")
            shape = [1, audio.shape[-1]] if key == "mixture" else [2, 1, audio.shape[-1]]
            tensors[key] = {"file": f"{index:05d}/{key}.wav", "shape": shape}
        lines.append(json.dumps({"name": f"{index:05d}", "tensors": tensors}))
    (root / "items.jsonl").write_text("\n".join(lines) + "\n")
    (root / "index.json").write_text(json.dumps({"sample_rate": RATE}))
    return root


def _write_run(run_dir: Path, valid: list[tuple[int, float]], logged_hours_per_step: float) -> Path:
    """A run folder whose train log says each step took ``logged_hours_per_step`` (the trainer logs seconds)."""
    run_dir.mkdir()
    steps = sorted({step for step, _ in valid} | {1})
    train = ["step,epoch,loss,grad_norm,lr,train_seconds"]
    train += [f"{step},0,0.0,1.0,0.001,{step * logged_hours_per_step * 3600.0}" for step in steps]
    (run_dir / "train_log.csv").write_text("\n".join(train) + "\n")
    rows = ["step,epoch,si_sdr,si_sdri,mixture_si_sdr,loss,lr,lr_reduced"]
    rows += [f"{step},0,{value},{value},0.0,{-value},0.001,0" for step, value in valid]
    (run_dir / "valid_log.csv").write_text("\n".join(rows) + "\n")
    return run_dir


def test_best_by_hours_keeps_the_best_value_reached_by_each_mark(tmp_path: Path) -> None:
    per_step = 0.01  # logged hours per step: arithmetic on the written log, no clock is read
    run = _write_run(tmp_path / "run", [(100, 1.0), (200, 3.0), (300, 2.5), (400, 4.0)], logged_hours_per_step=per_step)
    curve, end_of_log = compare_separators.validation_curve(run)
    assert [step for _, step, _ in curve] == [100, 200, 300, 400]
    assert curve[0][0] == pytest.approx(100 * per_step)
    marks = compare_separators.best_by_hours(curve, [50 * per_step, 200 * per_step, 350 * per_step, 1000 * per_step])
    assert [mark["si_sdri"] for mark in marks] == [None, 3.0, 3.0, 4.0]
    assert [mark["step"] for mark in marks] == [None, 200, 200, 400]
    assert end_of_log == pytest.approx(400 * per_step)
    summary = compare_separators.run_summary(run, [350 * per_step, 450 * per_step])
    assert [mark.get("ended", False) for mark in summary["marks"]] == [False, True]  # marked: the run stopped before


def test_runs_count_from_their_own_recipes_first_stage(tmp_path: Path) -> None:
    import speechkit
    from speechkit.checkpoint import save_checkpoint

    # the log this test writes: steps 1-100 on the old recipe (another validation set), then the fine-tune
    per_step = 0.01  # logged hours per step: arithmetic on the written log, no clock is read
    run = _write_run(tmp_path / "run", [(100, 9.0), (150, 1.0), (200, 2.0)], logged_hours_per_step=per_step)
    model = speechkit.build_model("conv_tasnet", "tiny", n_src=2, sample_rate=RATE)
    lineage = [{"recipe": "clean", "steps_trained": 60, "train_hours": 60 * per_step},
               {"recipe": "clean", "steps_trained": 40, "train_hours": 40 * per_step},
               {"recipe": "noisy", "steps_trained": 50, "train_hours": 50 * per_step}]
    save_checkpoint(model, run / "best.safetensors", provenance={"recipe": "noisy", "lineage": lineage})
    summary = compare_separators.run_summary(run, [50 * per_step, 100 * per_step], from_recipe_start=True)
    assert summary["start_step"] == 100  # the two "clean" stages are left out, the earlier "noisy" stage is not
    assert [step for _, step, _ in summary["curve"]] == [150, 200]
    assert [mark["si_sdri"] for mark in summary["marks"]] == [1.0, 2.0]  # the old set's 9.0 is not counted
    plain = compare_separators.run_summary(run, [100 * per_step])
    assert plain["marks"][0]["si_sdri"] == 9.0 and plain["start_step"] == 0
    (run / "best.safetensors").unlink()  # a logs-only release has no lineage to read
    with pytest.raises(SystemExit, match="no best.safetensors"):
        compare_separators.run_summary(run, [1.0], from_recipe_start=True)


def test_report_scores_a_checkpoint_and_tables_the_runs(tmp_path: Path) -> None:
    import torch

    import speechkit
    from speechkit.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = speechkit.build_model("conv_tasnet", "tiny", n_src=2, sample_rate=RATE)
    checkpoint = save_checkpoint(model, tmp_path / "tiny.safetensors",
                                 provenance={"steps_trained": 7, "train_hours": 0.25, "model_preset": "tiny"})
    test_set = _write_fixed_set(tmp_path / "test")
    run = _write_run(tmp_path / "run", [(10, 1.5)], logged_hours_per_step=0.025)
    out = tmp_path / "report.json"
    argv = ["--models", str(checkpoint), "--test-set", str(test_set), "--rss-seconds", "0", "--mac-seconds", "0.5",
            "--runs", str(run), "--hours", "0.1", "0.25", "0.5", "--out", str(out)]
    assert compare_separators.main(argv) == 0
    report = json.loads(out.read_text())
    system = report["systems"][0]
    result = system["test_sets"][0]
    assert result["items"] == 2
    assert system["parameters"] == sum(parameter.numel() for parameter in model.parameters())
    assert system["steps_trained"] == 7
    assert system["gmacs_per_second"] > 0  # counted operations, not measured time (the report tables its speed)
    summary, inputs = result["summary"], result["input"]
    assert np.isfinite(summary["si_sdri"]) and summary["sdri"] == pytest.approx(summary["sdr"] - inputs["sdr"])
    assert [mark["si_sdri"] for mark in report["runs"][0]["marks"]] == [None, 1.5, 1.5]
    assert [mark.get("ended", False) for mark in report["runs"][0]["marks"]] == [False, False, True]
    markdown = out.with_suffix(".md").read_text()
    assert "| tiny.safetensors" not in markdown and f"| {checkpoint} | 7 |" in markdown
    assert "| 0.25 | 1.50 (10) |" in markdown and "| 0.5 | 1.50 (10), ended at 0.25 h |" in markdown


def test_inference_options_follow_the_model_after_a_hash(tmp_path: Path) -> None:
    import torch

    import speechkit
    from speechkit.checkpoint import save_checkpoint

    torch.manual_seed(0)
    checkpoint = save_checkpoint(speechkit.build_model("tiger", "tiny", sample_rate=RATE), tmp_path / "tiger.safetensors")
    test_set = _write_fixed_set(tmp_path / "test", count=1)
    systems = [compare_separators.evaluate_model(f"{checkpoint}#iterations={count}", [test_set], None, 0.25, None)
               for count in (1, 2)]
    assert [system["options"]["iterations"] for system in systems] == [1, 2]
    first, second = (system["test_sets"][0]["summary"]["si_sdr"] for system in systems)
    assert first != second  # the option reached the model: a second pass of the shared FFI block changes the output


def test_reuse_copies_an_unchanged_model_and_scores_new_weights_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    import speechkit
    from speechkit.checkpoint import save_checkpoint

    torch.manual_seed(0)
    kept = save_checkpoint(speechkit.build_model("conv_tasnet", "tiny", n_src=2, sample_rate=RATE),
                           tmp_path / "kept.safetensors", provenance={"steps_trained": 7})
    changed = save_checkpoint(speechkit.build_model("conv_tasnet", "tiny", n_src=2, sample_rate=RATE),
                              tmp_path / "changed.safetensors", provenance={"steps_trained": 7})
    test_set = _write_fixed_set(tmp_path / "test", count=1)
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    common = ["--models", str(kept), str(changed), "--test-set", str(test_set), "--rss-seconds", "0",
              "--mac-seconds", "0.25"]
    assert compare_separators.main([*common, "--out", str(first)]) == 0
    save_checkpoint(speechkit.build_model("conv_tasnet", "tiny", n_src=2, sample_rate=RATE), changed,
                    provenance={"steps_trained": 9}, overwrite=True)  # a continued run, same path, new weights
    scored = []
    real_evaluate_model = compare_separators.evaluate_model
    monkeypatch.setattr(compare_separators, "evaluate_model",
                        lambda model, *args: scored.append(model) or real_evaluate_model(model, *args))
    assert compare_separators.main([*common, "--out", str(second), "--reuse", str(first)]) == 0
    assert scored == [str(changed)]
    old, new = (json.loads(path.read_text())["systems"] for path in (first, second))
    assert new[0]["test_sets"] == old[0]["test_sets"] and new[0]["reused_from"] == json.loads(first.read_text())["date"]
    assert "reused_from" not in new[1] and new[1]["steps_trained"] == 9
    assert f"{kept}: copied from the report of" in second.with_suffix(".md").read_text()
    scored.clear()  # another limit is another input: nothing is copied
    assert compare_separators.main([*common, "--limit", "1", "--out", str(tmp_path / "third.json"),
                                    "--reuse", str(second)]) == 0
    assert scored == [str(kept), str(changed)]


def test_reuse_measures_memory_again_when_a_row_was_measured_the_old_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    import speechkit
    from speechkit.checkpoint import save_checkpoint

    torch.manual_seed(0)
    kept = save_checkpoint(speechkit.build_model("conv_tasnet", "tiny", n_src=2, sample_rate=RATE),
                           tmp_path / "kept.safetensors")
    test_set = _write_fixed_set(tmp_path / "test", count=1)
    measured = []
    monkeypatch.setattr(compare_separators, "peak_rss_mib",
                        lambda path, seconds: measured.append(path) or (100.0 + len(measured), 1.0))
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    common = ["--models", str(kept), "--test-set", str(test_set), "--rss-seconds", "0.5", "--mac-seconds", "0.25"]
    assert compare_separators.main([*common, "--out", str(first)]) == 0
    report = json.loads(first.read_text())
    assert report["systems"][0]["peak_rss_mib"] == 101.0
    del report["systems"][0]["rss_method"]  # a report from before the method was recorded (ru_maxrss)
    first.write_text(json.dumps(report))
    monkeypatch.setattr(compare_separators, "evaluate_model", lambda *args: pytest.fail("quality scored again"))
    assert compare_separators.main([*common, "--out", str(second), "--reuse", str(first)]) == 0
    system = json.loads(second.read_text())["systems"][0]
    assert system["peak_rss_mib"] == 102.0 and system["rss_method"] == compare_separators.RSS_METHOD
    assert system["test_sets"] == report["systems"][0]["test_sets"] and len(measured) == 2
