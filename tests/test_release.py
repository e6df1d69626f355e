"""recipes.release: a run's best weights (float16) and logs in total steps and hours, for the next machine."""
import csv

import pytest
import torch

from recipes.release import main, release_run
from speechkit.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from speechkit.errors import ConfigError
from speechkit.models import build_model


def _run(folder, provenance, train_rows, valid_rows):
    folder.mkdir(parents=True)
    save_checkpoint(build_model("conv_tasnet", "tiny"), folder / "best.safetensors", provenance=provenance)
    for name, rows in (("train_log.csv", train_rows), ("valid_log.csv", valid_rows)):
        with (folder / name).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def _rows(path):
    with path.open(newline="") as handle:
        return [(int(row["step"]), float(row.get("train_seconds", row.get("si_sdri")))) for row in csv.DictReader(handle)]


def test_a_continued_run_extends_the_released_history(tmp_path):
    first = tmp_path / "runs_a" / "sep"
    _run(first, {"recipe": "sep", "steps_trained": 200, "train_hours": 0.1},
         [{"step": s, "loss": 1.0, "train_seconds": s * 1.8} for s in (100, 200, 300)],
         [{"step": s, "si_sdri": v} for s, v in ((100, 1.0), (200, 2.0), (300, 1.5))])
    release = tmp_path / "releases" / "sep"
    weights = release_run(first, release)
    assert read_metadata(weights)["storage_dtype"] == "float16"
    assert weights.stat().st_size < (first / "best.safetensors").stat().st_size
    original = load_checkpoint(first / "best.safetensors").state_dict()
    for key, value in load_checkpoint(weights).state_dict().items():
        torch.testing.assert_close(value, original[key], rtol=1e-3, atol=1e-4)

    second = tmp_path / "runs_b" / "sep"  # continued from the release's best (step 200, 0.1 h), a new machine
    _run(second, {"recipe": "sep", "steps_trained": 100, "train_hours": 0.05,
                  "lineage": [{"recipe": "sep", "steps_trained": 200, "train_hours": 0.1}]},
         [{"step": s, "loss": 1.0, "train_seconds": s * 1.8} for s in (100,)],
         [{"step": 100, "si_sdri": 2.5}])
    with pytest.raises(ConfigError, match="--force"):
        release_run(second, release)
    release_run(second, release, force=True)
    assert _rows(release / "valid_log.csv") == [(100, 1.0), (200, 2.0), (300, 2.5)]
    assert _rows(release / "train_log.csv") == [(100, 180.0), (200, 360.0), (300, 360.0 + 180.0)]


def test_the_command_line_explains_a_run_without_weights_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--to", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "best.safetensors" in error


def test_training_continues_on_a_new_machine_from_a_release(tmp_path):
    from conftest import smoke_config
    from recipes.trainer import Trainer, run_training

    first = tmp_path / "machine_a" / "runs" / "smoke"
    assert run_training(smoke_config(first, max_steps=2, valid_every=2)) == "done"
    release = release_run(first, tmp_path / "releases" / "smoke")
    second = tmp_path / "machine_b" / "runs" / "smoke"
    trainer = Trainer(smoke_config(second, max_steps=2, valid_every=2, init={"checkpoint": str(release)}))
    released = load_checkpoint(release).state_dict()
    for name, tensor in trainer.model.state_dict().items():  # float16 storage, float32 training
        assert tensor.dtype == torch.float32 and torch.equal(tensor, released[name]), name
    assert trainer.fit() == "done"
    provenance = read_metadata(second / "best.safetensors")["provenance"]
    assert provenance["lineage"] == [{"recipe": provenance["recipe"], "steps_trained": 2,
                                      "train_hours": read_metadata(release)["provenance"]["train_hours"]}]
    assert provenance["total_steps"] == 4 and provenance["learning_rate"] > 0
    release_run(second, release.parent, force=True)
    assert [step for step, _ in _rows(release.parent / "valid_log.csv")] == [2, 4]


def test_a_fine_tune_under_a_new_name_starts_its_history_with_the_parent_release(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # provenance records the initial weights as a path relative to the repository
    parent = tmp_path / "runs" / "base"
    _run(parent, {"recipe": "base", "steps_trained": 200, "train_hours": 0.1},
         [{"step": s, "loss": 1.0, "train_seconds": s * 1.8} for s in (100, 200, 300)],
         [{"step": s, "si_sdri": v} for s, v in ((100, 1.0), (200, 2.0), (300, 1.5))])
    release_run(parent, tmp_path / "releases" / "base")
    tuned = tmp_path / "runs" / "base_level"  # other objective, one more validation column
    _run(tuned, {"recipe": "base_level", "steps_trained": 100, "train_hours": 0.05,
                 "initial_weights": "releases/base/best.safetensors",
                 "lineage": [{"recipe": "base", "steps_trained": 200, "train_hours": 0.1}]},
         [{"step": 100, "loss": 0.5, "train_seconds": 180.0}],
         [{"step": 100, "si_sdri": 2.5, "level_db": -2.0}])
    for force in (False, True):  # released again later (--force): the parent's rows stay
        release_run(tuned, tmp_path / "releases" / "base_level", force=force)
        with (tmp_path / "releases" / "base_level" / "valid_log.csv").open(newline="") as handle:
            rows = [(row["step"], row["si_sdri"], row["level_db"]) for row in csv.DictReader(handle)]
        assert rows == [("100", "1.0", ""), ("200", "2.0", ""), ("300", "2.5", "-2.0")]
    assert _rows(tmp_path / "releases" / "base_level" / "train_log.csv") == [(100, 180.0), (200, 360.0), (300, 540.0)]
