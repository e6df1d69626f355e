"""The shared trainer: configs, LR schedule, smoke runs, export, and bit-exact resume."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from conftest import smoke_config, trained_weights
from recipes.trainer import (
    DEFAULT_CONFIG,
    ExponentialMovingAverage,
    LearningRateController,
    SyntheticMixtures,
    Trainer,
    load_config,
    load_train_state,
    merge_config,
    run_training,
)
from recipes.training.config import update_nested
from speechkit.checkpoint import load_checkpoint, read_metadata
from speechkit.errors import CheckpointError, ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_config_merging_and_overrides(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "smoke_synthetic.yaml", ["optim.lr=5e-4", "max_steps=3", f"run_dir={tmp_path}"])
    assert config["optim"]["lr"] == pytest.approx(5e-4)
    assert config["optim"]["clip_grad_norm"] == DEFAULT_CONFIG["optim"]["clip_grad_norm"]
    assert config["max_steps"] == 3
    with pytest.raises(ConfigError, match="unknown config key 'optim.learning_rate'"):
        merge_config(DEFAULT_CONFIG, {"optim": {"learning_rate": 1.0}})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_every_recipe_config_loads() -> None:
    for path in sorted(CONFIGS.glob("*.yaml")):
        config = load_config(path)
        assert config["model"]["name"], path


def test_learning_rate_controller_warmup_cosine_and_plateau() -> None:
    schedule = {**DEFAULT_CONFIG["schedule"], "warmup_steps": 4, "cosine": True, "plateau_patience": 2}
    controller = LearningRateController(1.0, 104, schedule)
    assert controller.lr(0) == pytest.approx(0.25)
    assert controller.lr(3) == pytest.approx(1.0)
    assert controller.lr(54) == pytest.approx(0.5)  # half way through the cosine
    assert controller.lr(104) == pytest.approx(0.0, abs=1e-12)
    plateau = LearningRateController(1.0, 100, {**DEFAULT_CONFIG["schedule"], "plateau_patience": 2})
    assert not plateau.report_validation(1.0)
    assert not plateau.report_validation(0.5)
    assert plateau.report_validation(0.9)  # second validation without improvement: halve
    assert plateau.lr(50) == pytest.approx(0.5)
    restored = LearningRateController(1.0, 100, DEFAULT_CONFIG["schedule"])
    restored.load_state_dict(plateau.state_dict())
    assert restored.lr(50) == pytest.approx(0.5)


def test_ema_warmup_forgets_the_initialisation() -> None:
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    plain, warm = ExponentialMovingAverage(model, 0.999), ExponentialMovingAverage(model, 0.999, warmup=True)
    assert warm.decay_at(1) == pytest.approx(2 / 11) and warm.decay_at(100_000) == pytest.approx(0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)  # trained weights held constant: the average should reach them
    for step in range(1, 501):
        plain.update(model)
        warm.update(model, step)
    # without warm-up 0.999 ** 500 = 61 % of the initial (zero) weight remains
    assert plain.state_dict()["weight"].item() == pytest.approx(1 - 0.999**500, rel=1e-4)
    # with it, prod_n (1 + n) / (10 + n) = 10! * 501! / 510! (about 2e-18) of it remains
    assert warm.state_dict()["weight"].item() > 1 - 1e-6
    with pytest.raises(ValueError, match="update count"):
        warm.update(model)


def test_synthetic_dataset_is_deterministic() -> None:
    dataset = SyntheticMixtures(num_items=3, num_samples=800, num_sources=2, num_channels=2)
    first, again = dataset[1], dataset[1]
    assert first["mixture"].shape == (2, 800)
    assert first["targets"].shape == (2, 2, 800)
    assert torch.equal(first["mixture"], again["mixture"])
    assert not torch.equal(dataset[0]["mixture"], first["mixture"])


def test_smoke_run_logs_and_exports(tmp_path: Path) -> None:
    config = smoke_config(tmp_path)
    assert run_training(config, command="pytest smoke") == "done"
    for name in ("last.pt", "best_model.pt", "best.safetensors", "train_log.csv", "valid_log.csv", "config.json"):
        assert (tmp_path / name).is_file(), name
    assert len(list(tmp_path.glob("step_*.pt"))) == config["keep_checkpoints"]
    valid_rows = (tmp_path / "valid_log.csv").read_text().strip().splitlines()
    assert valid_rows[0].startswith("step,epoch,si_sdr,si_sdri")
    assert len(valid_rows) == 1 + 2  # validations at steps 3 and 6
    model = load_checkpoint(tmp_path / "best.safetensors")
    assert model.num_sources == 1 and model.sample_rate == 8000
    provenance = read_metadata(tmp_path / "best.safetensors")["provenance"]
    assert provenance["steps_trained"] == 6
    assert provenance["command"] == "pytest smoke"
    assert "valid_si_sdri" in provenance["validation"]
    assert provenance["hardware"]["processes"] == 1
    assert provenance["data"]["train_items"] == 16
    assert provenance["ema_decay"] == 0.9 and provenance["ema_warmup"] is False
    state = load_train_state(tmp_path / "last.pt")  # weights_only=True inside
    assert state["step"] == 6 and state["ema"]


def test_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    warmup = "ema.warmup=true"  # the ramp follows the restored step count
    straight = smoke_config(tmp_path / "straight", warmup, max_steps=7)
    assert run_training(straight) == "done"
    first_half = smoke_config(tmp_path / "split", warmup, max_steps=3)  # stops mid-epoch (4 batches per epoch)
    assert run_training(first_half) == "done"
    second_half = smoke_config(tmp_path / "split", warmup, max_steps=7)
    assert run_training(second_half, resume=True) == "done"
    expected, resumed = trained_weights(tmp_path / "straight"), trained_weights(tmp_path / "split")
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=0, atol=1e-7)
    expected_state = load_train_state(tmp_path / "straight" / "last.pt")
    resumed_state = load_train_state(tmp_path / "split" / "last.pt")
    for key in expected_state["ema"]:
        torch.testing.assert_close(resumed_state["ema"][key], expected_state["ema"][key], rtol=0, atol=1e-7)
    assert resumed_state["epoch"] == expected_state["epoch"] == 1
    logged_steps = [line.split(",")[0] for line in (tmp_path / "split" / "train_log.csv").read_text().splitlines()[1:]]
    assert logged_steps == [str(step) for step in range(1, 8)]


def test_a_fresh_start_in_a_used_run_dir_sets_the_earlier_run_aside(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert run_training(smoke_config(run_dir, max_steps=3)) == "done"
    first_log = (run_dir / "train_log.csv").read_text()
    next_stage = smoke_config(run_dir, f"init.checkpoint={run_dir / 'best.safetensors'}", max_steps=2)
    assert run_training(next_stage) == "done"  # a new stage from the run's own weights, without --resume
    (earlier,) = (run_dir / "earlier").iterdir()
    assert (earlier / "train_log.csv").read_text() == first_log
    assert {"last.pt", "best.safetensors", "valid_log.csv", "config.json"} <= {path.name for path in earlier.iterdir()}
    logged_steps = [line.split(",")[0] for line in (run_dir / "train_log.csv").read_text().splitlines()[1:]]
    assert logged_steps == ["1", "2"]  # the new stage's rows alone, not appended to the first run's
    assert run_training(smoke_config(run_dir, max_steps=4), resume=True) == "done"
    assert len(list((run_dir / "earlier").iterdir())) == 1  # a resumed run is the same run: nothing set aside
    logged_steps = [line.split(",")[0] for line in (run_dir / "train_log.csv").read_text().splitlines()[1:]]
    assert logged_steps == ["1", "2", "3", "4"]


class SignalAtItem(SyntheticMixtures):
    """Sends SIGTERM to this process while loading item ``trigger`` (simulates a scheduler kill)."""

    def __init__(self, trigger: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.trigger = trigger
        self.fired = False

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index == self.trigger and not self.fired:
            self.fired = True
            os.kill(os.getpid(), signal.SIGTERM)
        return super().__getitem__(index)


def test_sigterm_saves_state_and_resume_continues(tmp_path: Path) -> None:
    config = smoke_config(tmp_path / "killed", max_steps=7, checkpoint_every=100)
    data = config["data"]["train"]["kwargs"]
    valid = SyntheticMixtures(**config["data"]["valid"]["kwargs"])
    previous = signal.getsignal(signal.SIGTERM)
    trainer = Trainer(config, train_dataset=SignalAtItem(trigger=5, **data), valid_dataset=valid)
    assert trainer.fit() == "interrupted"
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored
    state = load_train_state(tmp_path / "killed" / "last.pt")
    assert 1 <= state["step"] < 7
    assert run_training(config, resume=True) == "done"
    straight = smoke_config(tmp_path / "straight", max_steps=7)
    assert run_training(straight) == "done"
    expected, resumed = trained_weights(tmp_path / "straight"), trained_weights(tmp_path / "killed")
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=0, atol=1e-7)


def test_resume_refuses_a_different_model(tmp_path: Path) -> None:
    assert run_training(smoke_config(tmp_path, max_steps=2)) == "done"
    other = smoke_config(tmp_path, max_steps=4)
    other["model"] = {**other["model"], "overrides": {"n_src": 1, "sample_rate": 8000, "n_filters": 32}}
    with pytest.raises(ConfigError, match="was trained with model"):
        run_training(other, resume=True)


def test_separation_uses_permutation_invariant_loss(tmp_path: Path) -> None:
    config = smoke_config(tmp_path, task="separation", max_steps=2, valid_every=2)
    config["model"] = {"name": "conv_tasnet", "preset": "tiny", "overrides": {"n_src": 2, "sample_rate": 8000}}
    for split in ("train", "valid"):
        config["data"][split]["kwargs"]["num_sources"] = 2
    assert run_training(config) == "done"
    row = (tmp_path / "valid_log.csv").read_text().splitlines()[-1].split(",")
    assert all(value != "nan" for value in row)


def test_train_cli_smoke(tmp_path: Path) -> None:
    from recipes import train

    code = train.main([str(CONFIGS / "smoke_synthetic.yaml"), "max_steps=2", "--run-dir", str(tmp_path)])
    assert code == 0
    provenance = read_metadata(tmp_path / "best.safetensors")["provenance"]
    assert provenance["command"].startswith("python -m recipes.train")
    assert json.loads((tmp_path / "config.json").read_text())["max_steps"] == 2
    assert train.main([str(tmp_path / "nope.yaml")]) == 2


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data (the mini corpus)")
@pytest.mark.parametrize("recipe", sorted(path.name for path in CONFIGS.glob("*_smoke.yaml")))  # every recipe's smoke run
def test_recipe_smoke_on_mini_corpus(tmp_path: Path, recipe: str) -> None:
    config = load_config(
        CONFIGS / recipe, [f"run_dir={tmp_path / 'run'}", f"data.valid.kwargs.root={tmp_path / 'valid'}"]
    )
    assert run_training(config) == "done"
    provenance = read_metadata(tmp_path / "run" / "best.safetensors")["provenance"]
    assert provenance["steps_trained"] == config["max_steps"]


def test_config_base_chain_merges_at_every_depth(tmp_path: Path) -> None:
    four = load_config(CONFIGS / "separation_4spk_8k.yaml")
    three = load_config(CONFIGS / "separation_3spk_8k.yaml")
    assert four["name"] == "separation_4spk_8k" and four["run_dir"] == str(Path("runs") / "separation_4spk_8k")
    assert four["model"]["overrides"] == {**three["model"]["overrides"], "n_src": 4}  # kwargs/overrides merge too
    assert four["data"]["train"]["kwargs"] == {**three["data"]["train"]["kwargs"], "speaker_counts": [4]}
    assert four["data"]["valid"]["kwargs"]["root"].endswith("separation4_8k/validation")
    assert four["optim"] == three["optim"] and four["batch_size"] == three["batch_size"]
    (tmp_path / "a.yaml").write_text("base: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nname: b\n")
    with pytest.raises(ConfigError, match="inherits from itself"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: missing.yaml\nname: c\n")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "c.yaml")


def test_config_base_section_with_another_name_is_replaced_not_merged() -> None:
    causal = load_config(CONFIGS / "enhance_deftan2_small_causal_4ch.yaml")
    offline = load_config(CONFIGS / "enhance_deftan2_small_4ch.yaml")
    # the PCM objective's keywords must not leak into the combination (it would refuse n_fft)
    assert set(causal["objective"]) == {"name", "terms"}
    assert causal["objective"]["terms"][0] == offline["objective"]
    # same model name: the preset is merged into the base's model section
    assert causal["model"] == {**offline["model"], "preset": "small_causal"}
    assert update_nested({"o": {"name": "a", "k": 1}}, {"o": {"name": "a", "j": 2}}) == {"o": {"name": "a", "k": 1, "j": 2}}
    assert update_nested({"o": {"k": 1}}, {"o": {"name": "b"}}) == {"o": {"k": 1, "name": "b"}}


def test_init_checkpoint_starts_from_given_weights_and_stft_loss_trains(tmp_path: Path) -> None:
    first = tmp_path / "first"
    assert run_training(smoke_config(first, max_steps=2, valid_every=2)) == "done"
    second = tmp_path / "second"
    config = smoke_config(second, max_steps=1, valid_every=1, init={"checkpoint": str(first / "best.safetensors")})
    config["loss"] = {**config["loss"], "stft_weight": 1.0}
    trainer = Trainer(config)
    initial = load_checkpoint(first / "best.safetensors").state_dict()
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, initial[name]), name
    assert trainer.fit() == "done"
    assert read_metadata(second / "best.safetensors")["provenance"]["initial_weights"] == str(first / "best.safetensors")
    row = (second / "train_log.csv").read_text().splitlines()[-1].split(",")
    assert all(value != "nan" for value in row)


def test_init_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    first = tmp_path / "first"
    assert run_training(smoke_config(first, max_steps=1, valid_every=1)) == "done"
    config = smoke_config(tmp_path / "second", max_steps=1, init={"checkpoint": str(first / "best.safetensors")})
    config["model"] = {**config["model"], "overrides": {"n_src": 1, "sample_rate": 8000, "n_filters": 32}}
    with pytest.raises(CheckpointError, match="does not fit"):
        Trainer(config)
