"""The trainer's scaling features: accumulation, precision, activation checkpointing, optimisers and
schedules by name, a model's own training step, validation specs, the flat-validation stop, and resume with
all of them."""
from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import pytest
import torch

from conftest import smoke_config, trained_weights
from recipes.training.schedule import FlatValidationStop
from recipes.training.step import split_batch
from recipes.trainer import DEFAULT_CONFIG, LearningRateController, SyntheticMixtures, Trainer, run_training
from recipes.trainer import load_train_state
from speechkit.checkpoint import read_metadata
from speechkit.errors import ConfigError
from speechkit.models.conv_tasnet import ConvTasNet


def assert_same_weights(first: Path, second: Path, atol: float) -> None:
    expected, actual = trained_weights(first), trained_weights(second)
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=atol, msg=key)


def test_split_batch_keeps_every_item_once() -> None:
    batch = {"mixture": torch.arange(5)[:, None], "targets": torch.arange(5), "scenario": list("abcde"), "x": 1}
    parts = split_batch(batch, 2)
    assert [len(part["targets"]) for part in parts] == [2, 3]
    assert torch.equal(torch.cat([part["mixture"] for part in parts]), batch["mixture"])
    assert parts[1]["scenario"] == ["c", "d", "e"] and parts[0]["x"] == 1
    with pytest.raises(ConfigError, match="micro-batches"):
        split_batch(batch, 6)


def test_gradient_accumulation_equals_the_full_batch(tmp_path: Path) -> None:
    # two micro-batches of 2 per step against one batch of 4 (Conv-TasNet tiny: no batch statistics)
    common = ["max_steps=3", "valid_every=3", "ema.decay=null", "optim.clip_grad_norm=null"]
    assert run_training(smoke_config(tmp_path / "full", *common)) == "done"
    assert run_training(smoke_config(tmp_path / "accumulated", *common, "accumulate_steps=2")) == "done"
    assert_same_weights(tmp_path / "full", tmp_path / "accumulated", atol=2e-6)
    full_log = (tmp_path / "full" / "train_log.csv").read_text().splitlines()[1:]
    accumulated_log = (tmp_path / "accumulated" / "train_log.csv").read_text().splitlines()[1:]
    for full, accumulated in zip(full_log, accumulated_log):  # the logged loss is the whole batch's
        assert float(full.split(",")[2]) == pytest.approx(float(accumulated.split(",")[2]), abs=1e-4)
    initial = Trainer(smoke_config(tmp_path / "fresh", "max_steps=3")).model.state_dict()
    assert any(not torch.equal(initial[key], value) for key, value in trained_weights(tmp_path / "full").items())


def test_bf16_autocast_trains_a_step(tmp_path: Path) -> None:
    trainer = Trainer(smoke_config(tmp_path, "precision=bf16", "max_steps=1", "valid_every=1"))
    before = {key: value.clone() for key, value in trainer.model.state_dict().items()}
    assert trainer.fit() == "done"
    loss = float((tmp_path / "train_log.csv").read_text().splitlines()[1].split(",")[2])
    assert torch.isfinite(torch.tensor(loss))
    assert any(not torch.equal(before[key], value) for key, value in trainer.model.state_dict().items())
    assert all(value.dtype == before[key].dtype for key, value in trainer.model.state_dict().items())
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        Trainer(smoke_config(tmp_path / "fp16", "precision=fp16", "device=cpu"))
    with pytest.raises(ConfigError, match="precision must be one of"):
        smoke_config(tmp_path, "precision=fp8")


def test_activation_checkpointing_gives_the_same_step(tmp_path: Path) -> None:
    common = ["max_steps=2", "valid_every=2"]
    assert run_training(smoke_config(tmp_path / "plain", *common)) == "done"
    trainer = Trainer(smoke_config(tmp_path / "checkpointed", *common, "activation_checkpointing=true"))
    assert set(trainer.checkpointed_modules) == {name for name, _ in trainer.model.named_children()}
    assert trainer.fit() == "done"
    assert_same_weights(tmp_path / "plain", tmp_path / "checkpointed", atol=1e-6)


class ListsCheckpointModules(ConvTasNet):
    """Conv-TasNet naming only its masker for activation checkpointing."""

    def checkpoint_modules(self) -> list[torch.nn.Module]:
        return [module for name, module in self.named_children() if name == "masker"]


def test_model_chooses_its_checkpointed_modules(tmp_path: Path) -> None:
    model = ListsCheckpointModules.from_preset("tiny", n_src=1, sample_rate=8000)
    trainer = Trainer(smoke_config(tmp_path, "activation_checkpointing=true", "max_steps=1"), model=model)
    assert trainer.checkpointed_modules == ["masker"]


def test_optimizer_and_schedule_by_name(tmp_path: Path) -> None:
    trainer = Trainer(smoke_config(tmp_path, "optim.name=adamw", "optim.weight_decay=0.01"))
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    assert trainer.optimizer.param_groups[0]["weight_decay"] == pytest.approx(0.01)
    assert isinstance(Trainer(smoke_config(tmp_path)).optimizer, torch.optim.Adam)
    with pytest.raises(ConfigError, match="optim.name"):
        smoke_config(tmp_path, "optim.name=sgd")
    cosine = LearningRateController(1.0, 104, {**DEFAULT_CONFIG["schedule"], "name": "cosine", "warmup_steps": 4})
    assert cosine.lr(54) == pytest.approx(0.5)
    assert not any(cosine.report_validation(-float(step)) for step in range(10))  # no plateau reduction
    constant = LearningRateController(1.0, 100, {**DEFAULT_CONFIG["schedule"], "name": "constant"})
    assert constant.lr(0) == constant.lr(99) == 1.0
    with pytest.raises(ConfigError, match="schedule.name"):
        smoke_config(tmp_path, "schedule.name=step")


class CountingTasNet(ConvTasNet):
    """Conv-TasNet with its own training step (the objective's, counted)."""

    calls = 0

    def training_step(self, batch: dict, objective) -> torch.Tensor:
        CountingTasNet.calls += 1
        return objective.training_loss(self, batch)


def test_model_training_step_is_used(tmp_path: Path) -> None:
    common = ["max_steps=2", "valid_every=2"]
    own = CountingTasNet.from_preset("tiny", n_src=1, sample_rate=8000)
    plain = ConvTasNet.from_preset("tiny", n_src=1, sample_rate=8000)
    plain.load_state_dict(own.state_dict())
    CountingTasNet.calls = 0
    assert run_training(smoke_config(tmp_path / "own", *common), model=own) == "done"
    assert CountingTasNet.calls == 2
    assert run_training(smoke_config(tmp_path / "plain", *common), model=plain) == "done"
    assert_same_weights(tmp_path / "plain", tmp_path / "own", atol=0.0)


class SamplingTasNet(ConvTasNet):
    """A stochastic "sampler" (noise added to its input) that asks for a small seeded validation."""

    validation_defaults = {"subset": 2, "seed": 5}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x + 0.05 * torch.randn_like(x))


class CountingItems(SyntheticMixtures):
    """Synthetic mixtures that record which items were read."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.read: list[int] = []

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        self.read.append(index)
        return super().__getitem__(index)


def test_sampler_validates_on_a_fixed_seeded_subset(tmp_path: Path) -> None:
    config = smoke_config(tmp_path, "max_steps=1")
    valid = CountingItems(num_items=6, num_samples=2000, sample_rate=8000, seed=99)
    model = SamplingTasNet.from_preset("tiny", n_src=1, sample_rate=8000)
    trainer = Trainer(config, valid_dataset=valid, model=model)
    assert trainer.validation.subset == 2 and trainer.validation.seed == 5
    rng = torch.get_rng_state()
    first = trainer.validate()
    assert torch.equal(torch.get_rng_state(), rng)  # the training RNG stream is untouched
    assert len(valid.read) == 2 and set(valid.read) <= set(range(6))
    torch.rand(100)  # wherever the training RNG stands,
    second = trainer.validate()
    assert first == second  # the same items under the same seeds: the sampler scores repeatably
    assert valid.read[:2] == valid.read[2:]
    config["validation"] = {**config["validation"], "subset": 3, "seed": 6}  # the config wins
    other = Trainer(config, valid_dataset=valid, model=model).validation
    assert (other.subset, other.seed) == (3, 6)


def test_validation_metrics_and_selection_from_config(tmp_path: Path) -> None:
    config = smoke_config(tmp_path, "max_steps=2", "valid_every=2",
                          "validation.metrics=[si_sdr, snr, snri, level_db]", "validation.select=snri")
    assert run_training(config) == "done"
    header, row = (tmp_path / "valid_log.csv").read_text().splitlines()[:2]
    assert header == "step,epoch,si_sdr,snr,snri,level_db,loss,lr,lr_reduced"
    values = dict(zip(header.split(","), row.split(",")))
    state = load_train_state(tmp_path / "last.pt")
    assert state["best_score"] == pytest.approx(float(values["snri"]), abs=1e-3)
    assert math.isfinite(float(values["level_db"]))
    by_loss = Trainer(smoke_config(tmp_path / "loss", "validation.select=loss"))
    assert by_loss.validation.score({"loss": 2.0}) == -2.0  # lower loss is better
    from recipes.training.validation import validation_spec

    assert validation_spec({"task": "aec"}).select == "loss"  # echo cancellation defaults to the loss
    assert validation_spec({"task": "enhancement"}).select == "si_sdri"
    assert validation_spec({"task": "aec", "validation": {"select": "erle"}}).select == "erle"
    with pytest.raises(ConfigError, match="unknown validation metrics"):
        Trainer(smoke_config(tmp_path / "bad", "validation.metrics=[erle]"))
    with pytest.raises(ConfigError, match="validation.select"):
        Trainer(smoke_config(tmp_path / "bad", "validation.metrics=[snr]"))


def test_flat_validation_stop_counts_gains_above_min_delta() -> None:
    stop = FlatValidationStop(patience=3, min_delta=0.05)
    assert [stop.report_validation(score) for score in (1.0, 1.5, 1.52, 1.54, 1.6)] == [False] * 5
    assert stop.reference == 1.6  # 1.6 beats 1.5 by more than 0.05: the count restarted
    assert [stop.report_validation(score) for score in (1.63, 1.58, 1.65)] == [False, False, True]
    restored = FlatValidationStop(3, 0.05)
    restored.load_state_dict(stop.state_dict())
    assert restored.flat and restored.reference == 1.6
    never = FlatValidationStop(None, 0.05)
    assert not any(never.report_validation(0.0) for _ in range(20))


def test_plateau_threshold_turns_a_slow_creep_into_a_reduction(tmp_path: Path) -> None:
    schedule = {**DEFAULT_CONFIG["schedule"], "plateau_patience": 3}
    strict = LearningRateController(1.0, 100, schedule)
    creeping = (1.0, 1.05, 1.08, 1.09, 1.1)
    assert not any(strict.report_validation(score) for score in creeping)  # every creep step is a new best
    thresholded = LearningRateController(1.0, 100, {**schedule, "plateau_threshold": 0.1})
    assert [thresholded.report_validation(score) for score in creeping] == [False, False, False, True, False]
    assert thresholded.lr(50) == 0.5 and thresholded.best == 1.0
    with pytest.raises(ConfigError, match="plateau_threshold"):
        smoke_config(tmp_path, "schedule.plateau_threshold=-0.1")


def test_training_ends_when_validation_is_flat(tmp_path: Path) -> None:
    # no gain can exceed min_delta = 1000 dB: the run is flat after the first validation plus `patience`
    config = smoke_config(tmp_path, "max_steps=40", "valid_every=1", "early_stop.patience=2",
                          "early_stop.min_delta=1000.0")
    assert run_training(config) == "flat"
    assert load_train_state(tmp_path / "last.pt")["step"] == 3
    assert len((tmp_path / "valid_log.csv").read_text().splitlines()) == 1 + 3
    provenance = read_metadata(tmp_path / "best.safetensors")["provenance"]
    assert provenance["validation_flat"] and provenance["early_stop"] == {"patience": 2, "min_delta": 1000.0}
    assert run_training(config, resume=True) == "flat"  # a flat run resumed trains and validates no more
    assert load_train_state(tmp_path / "last.pt")["step"] == 3
    assert len((tmp_path / "valid_log.csv").read_text().splitlines()) == 1 + 3
    assert run_training(smoke_config(tmp_path / "default", "max_steps=3", "valid_every=1")) == "done"
    with pytest.raises(ConfigError, match="early_stop.patience"):
        smoke_config(tmp_path, "early_stop.patience=0")
    with pytest.raises(ConfigError, match="early_stop.min_delta"):
        smoke_config(tmp_path, "early_stop.min_delta=-1")


def test_resume_with_new_keys_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    keys = ["accumulate_steps=2", "optim.name=adamw", "schedule.name=cosine", "schedule.warmup_steps=2",
            "objective={name: combination, terms: [{name: snr}, {name: complex_spectral_mapping, weight: 0.5}]}"]
    assert run_training(smoke_config(tmp_path / "straight", "max_steps=6", *keys)) == "done"
    assert run_training(smoke_config(tmp_path / "split", "max_steps=3", *keys)) == "done"
    assert run_training(smoke_config(tmp_path / "split", "max_steps=6", *keys), resume=True) == "done"
    assert_same_weights(tmp_path / "straight", tmp_path / "split", atol=1e-7)


def test_denoising_score_matching_trains_a_score_model(tmp_path: Path) -> None:
    class ScoreTasNet(SamplingTasNet):
        """A toy score model: x_t = x0 + (0.1 + t) z; score = (net(y) - x_t) / std^2."""

        def perturb(self, x0, y, t):
            std = 0.1 + t  # [B]
            noise = torch.randn_like(x0)
            return x0 + std[:, None, None, None] * noise, std, noise

        def score(self, x_t, y, t):
            std = (0.1 + t)[:, None, None, None]
            return (ConvTasNet.forward(self, y) - x_t) / std**2

    config = smoke_config(tmp_path, "max_steps=2", "valid_every=2", "objective={name: denoising_score_matching}")
    model = ScoreTasNet.from_preset("tiny", n_src=1, sample_rate=8000)
    assert run_training(config, model=model) == "done"
    rows = (tmp_path / "train_log.csv").read_text().splitlines()[1:]
    assert len(rows) == 2 and all(float(row.split(",")[2]) > 0 for row in rows)
    valid = (tmp_path / "valid_log.csv").read_text().splitlines()
    assert float(dict(zip(valid[0].split(","), valid[1].split(",")))["loss"]) > 0


def test_loader_workers_stop_when_the_training_loop_raises() -> None:
    """Workers ignore SIGTERM, so the exit-time terminate-and-join of multiprocessing cannot end them:
    an error raised in the loop (e.g. a data error re-raised from a worker) must stop them itself, or
    the process never exits."""
    from torch.utils.data import DataLoader

    from recipes.training.data import ignore_interrupts, loader_batches

    loader = DataLoader(list(range(8)), batch_size=2, num_workers=1, worker_init_fn=ignore_interrupts)
    with pytest.raises(RuntimeError, match="data error"):
        with loader_batches(loader) as batches:
            next(batches)
            workers = list(batches._workers)
            raise RuntimeError("data error")
    assert workers and not any(worker.is_alive() for worker in workers)


def test_loader_workers_survive_a_sigterm_sent_to_every_process_of_the_run() -> None:
    """``pkill -f`` or a batch scheduler signals every process of the job, workers included: a worker
    must leave the stop to the main process (which saves), not die and make the loader raise."""
    from torch.utils.data import DataLoader

    from recipes.training.data import ignore_interrupts, loader_batches

    # 32 batches: far more than the loader prefetches, so the worker must still serve after the signal
    loader = DataLoader(list(range(64)), batch_size=2, num_workers=1, worker_init_fn=ignore_interrupts)
    with loader_batches(loader) as batches:
        first = next(batches)
        for worker in batches._workers:
            os.kill(worker.pid, signal.SIGTERM)
        items = [*first.tolist(), *[item for batch in batches for item in batch.tolist()]]
    assert items == list(range(64))


def test_run_log_keeps_columns_aligned_when_a_resume_logs_other_metrics(tmp_path: Path) -> None:
    import csv

    from recipes.training.runlog import RunLog

    log = RunLog(tmp_path, is_main=True)
    log.row("valid_log.csv", {"step": 250, "si_sdr": -6.8, "loss": 0.108})
    log.row("valid_log.csv", {"step": 500, "si_sdr": -4.9, "level_db": -2.9, "loss": 0.106})  # a metric added
    log.row("valid_log.csv", {"step": 750, "loss": 0.103, "level_db": -2.5})  # one dropped, another order
    with (tmp_path / "valid_log.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["step", "si_sdr", "loss", "level_db"]
    assert [(row["step"], row["si_sdr"], row["loss"], row["level_db"]) for row in rows] == [
        ("250", "-6.8", "0.108", ""), ("500", "-4.9", "0.106", "-2.9"), ("750", "", "0.103", "-2.5")]
    assert not list(tmp_path.glob("*.partial"))
