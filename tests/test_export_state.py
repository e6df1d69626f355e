"""recipes.export_state: a trainer state file becomes a speechkit checkpoint (EMA weights by default)."""
import json

import torch

from recipes.export_state import export_state, main
from recipes.training.lineage import training_lineage
from recipes.training.state import STATE_FORMAT, atomic_torch_save
from speechkit.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from speechkit.models import build_model


def _state(tmp_path):
    model = build_model("conv_tasnet", "tiny")
    ema = {key: value + 1.0 if value.is_floating_point() else value for key, value in model.state_dict().items()}
    config = {"name": "demo", "task": "separation", "model": {"name": "conv_tasnet", "preset": "tiny", "overrides": {}},
              "data": {"description": "synthetic", "licenses": {"synthetic": "none"}}, "init": {"checkpoint": None}}
    path = tmp_path / "step_0000010.pt"
    atomic_torch_save({"format": STATE_FORMAT, "model": model.state_dict(), "ema": ema, "step": 10,
                       "train_seconds": 36.0, "config": json.dumps(config)}, path)
    return path, model, ema


def test_exports_ema_by_default_and_raw_on_request(tmp_path):
    path, model, ema = _state(tmp_path)
    loaded = load_checkpoint(export_state(path, tmp_path / "ema.safetensors"))
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, ema[key])
    raw = load_checkpoint(export_state(path, tmp_path / "raw.safetensors", raw=True))
    for key, value in raw.state_dict().items():
        assert torch.equal(value, model.state_dict()[key])


def test_command_line_reports_bad_files_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    torch.save({"format": "other"}, bad)
    assert main([str(bad), "-o", str(tmp_path / "x.safetensors")]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_a_continued_run_keeps_the_account_of_the_stages_before_it(tmp_path):
    first_state, _, _ = _state(tmp_path)
    first = export_state(first_state, tmp_path / "release_1.safetensors")
    model = build_model("conv_tasnet", "tiny")
    config = {"name": "continued", "task": "separation",
              "model": {"name": "conv_tasnet", "preset": "tiny", "overrides": {}}, "init": {"checkpoint": str(first)}}
    second_state = tmp_path / "second" / "last.pt"
    atomic_torch_save({"format": STATE_FORMAT, "model": model.state_dict(), "ema": {}, "step": 5,
                       "train_seconds": 720.0, "config": json.dumps(config)}, second_state)
    second = export_state(second_state, tmp_path / "release_2.safetensors")
    provenance = read_metadata(second)["provenance"]
    assert provenance["lineage"] == [{"recipe": "demo", "steps_trained": 10, "train_hours": 0.01}]
    assert provenance["total_steps"] == 15
    assert provenance["total_train_hours"] == 0.21
    config["name"], config["init"]["checkpoint"] = "third", str(second)
    atomic_torch_save({"format": STATE_FORMAT, "model": model.state_dict(), "ema": {}, "step": 1,
                       "train_seconds": 0.0, "config": json.dumps(config)}, second_state)
    third = read_metadata(export_state(second_state, tmp_path / "release_3.safetensors"))["provenance"]
    assert [stage["recipe"] for stage in third["lineage"]] == ["demo", "continued"]
    assert third["total_steps"] == 16


def test_weights_without_training_provenance_leave_the_totals_unknown(tmp_path):
    bundled_like = tmp_path / "converted.safetensors"
    save_checkpoint(build_model("conv_tasnet", "tiny"), bundled_like, provenance={"source": "official"})
    lineage = training_lineage(str(bundled_like))
    assert lineage == [{"recipe": str(bundled_like), "steps_trained": None, "train_hours": None}]
    assert training_lineage(None) == []
