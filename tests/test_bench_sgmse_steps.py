"""bench/compare_sgmse_steps.py: one row per sampler setting on the noisy groups, per-group means,
partial reports assembled with --reuse (nothing scored twice), settings refused with a reason.

The held-out groups are stand-in single-channel fixed sets in the layout the real-world set is
written in; the SGMSE+ checkpoint is the ``tiny`` preset with random weights (the rows check the
plumbing, not quality).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench import compare_array_enhancers, compare_realworld
from bench import compare_sgmse_steps as bench

RATE = 16000


def _write_group_sets(cache_root: Path) -> None:
    """Two 0.25 s items per group folder (a tone plus noise), named as ``group_sets`` expects."""
    folders = compare_realworld.group_folders(compare_realworld.DEFAULT_ITEMS, cache_root)
    generator = np.random.default_rng(0)
    time_axis = np.arange(RATE // 4) / RATE
    for position, group in enumerate(bench.NOISY_GROUPS):
        root = folders[group]
        root.mkdir(parents=True)
        lines = []
        for index in range(2):
            clean = (0.3 * np.sin(2 * np.pi * (200 + 40 * position + 20 * index) * time_axis)).astype(np.float32)
            mixture = (clean + 0.05 * generator.standard_normal(clean.shape)).astype(np.float32)
            folder = root / f"{index:05d}"
            folder.mkdir()
            sf.write(folder / "mixture.wav", mixture[:, None], RATE, subtype="FLOAT")
            sf.write(folder / "targets.wav", clean[:, None], RATE, subtype="FLOAT")
            tensors = {"mixture": {"file": f"{index:05d}/mixture.wav", "shape": [1, clean.size]},
                       "targets": {"file": f"{index:05d}/targets.wav", "shape": [1, 1, clean.size]}}
            lines.append(json.dumps({"name": f"{index:05d}", "meta": {"snr_db": 5.0}, "tensors": tensors}))
        (root / "items.jsonl").write_text("\n".join(lines) + "\n")
        (root / "index.json").write_text(json.dumps({"sample_rate": RATE}))


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, list[str]]:
    import torch

    import speechkit
    from speechkit.checkpoint import save_checkpoint

    torch.manual_seed(0)
    checkpoint = save_checkpoint(speechkit.build_model("sgmse", "tiny"), tmp_path / "sgmse.safetensors",
                                 provenance={"steps_trained": 7, "model_preset": "tiny"})
    _write_group_sets(tmp_path / "cache")
    common = ["--model", str(checkpoint), "--baseline", "--per-group", "1", "--cache-root", str(tmp_path / "cache"),
              "--mac-seconds", "0.25", "--no-dnsmos"]
    return checkpoint, common


def test_one_row_per_setting_with_per_group_means(setup: tuple[Path, list[str]], tmp_path: Path) -> None:
    checkpoint, common = setup
    out = tmp_path / "steps.json"
    assert bench.main([*common, "--settings", "pc:1", "ode:2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    unprocessed, pc, ode = report["systems"]
    assert [pc["model"], ode["model"]] == [f"{checkpoint}#sampler=pc,steps=1,seed=0",
                                           f"{checkpoint}#sampler=ode,steps=2,seed=0"]
    assert pc["steps_trained"] == 7
    for system in report["systems"]:
        assert {group: summary["items"] for group, summary in system["summary"].items()} == {
            "all": len(bench.NOISY_GROUPS), **{bench.group_sets(tmp_path, tmp_path / "cache")[index].name: 1
                                               for index in range(len(bench.NOISY_GROUPS))}}
    assert pc["rows"] != ode["rows"]  # the sampler option reached the model
    assert ode["gmacs_per_second"] == pytest.approx(pc["gmacs_per_second"], rel=0.05)  # 2 evaluations each
    markdown = out.with_suffix(".md").read_text()
    assert markdown.startswith("# SGMSE+ sampler settings on the held-out real-world set")
    assert "Items: the first 1 of each noisy group" in markdown


def test_partial_reports_assemble_without_scoring_again(
    setup: tuple[Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint, common = setup
    first, second, whole = tmp_path / "first.json", tmp_path / "second.json", tmp_path / "whole.json"
    assert bench.main([*common, "--settings", "pc:1", "--out", str(first)]) == 0
    assert bench.main([*common, "--settings", "pc:1", "pc:2", "--out", str(second), "--reuse", str(first)]) == 0
    monkeypatch.setattr(compare_array_enhancers, "evaluate_model", lambda *args: pytest.fail("scored again"))
    monkeypatch.setattr(compare_array_enhancers, "evaluate_input", lambda *args: pytest.fail("scored again"))
    assert bench.main([*common, "--settings", "pc:2", "pc:1", "--out", str(whole), "--reuse", str(first), str(second)]) == 0
    models = [system["model"] for system in json.loads(whole.read_text())["systems"][1:]]
    assert models == [f"{checkpoint}#sampler=pc,steps=2,seed=0", f"{checkpoint}#sampler=pc,steps=1,seed=0"]
    with pytest.raises(pytest.fail.Exception, match="scored again"):  # another seed is another row
        bench.main([*common, "--settings", "pc:1", "--seed", "1", "--out", str(whole), "--reuse", str(second)])


@pytest.mark.parametrize("setting", ["pc", "euler:5", "pc:0", "ode:x"])
def test_a_malformed_setting_is_refused_with_the_reason(setting: str, setup, capsys) -> None:
    _checkpoint, common = setup
    with pytest.raises(SystemExit) as exited:
        bench.main([*common, "--settings", setting])
    assert exited.value.code == 2
    assert "argument --settings: a setting is SAMPLER:STEPS" in capsys.readouterr().err
