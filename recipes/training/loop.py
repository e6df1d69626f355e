"""The :class:`Trainer` (one model, one config, one run directory) and :func:`run_training`."""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import platform
import random
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from recipes.training.config import DEFAULT_CONFIG, merge_config, resolve_factory, validate_config
from recipes.training.data import ResumableDistributedSampler, ignore_interrupts, loader_batches
from recipes.training.distributed import DistributedContext, setup_distributed
from recipes.training.lineage import training_lineage, with_lineage
from recipes.training.objectives import objective_from_config, objective_spec
from recipes.training.runlog import RunLog, set_aside_earlier_run
from recipes.training.schedule import (
    ExponentialMovingAverage,
    FlatValidationStop,
    LearningRateController,
    build_optimizer,
)
from recipes.training.state import STATE_FORMAT, atomic_torch_save, load_train_state, rng_state, set_rng_state
from recipes.training.step import (
    TrainingStep,
    autocast_context,
    batch_items,
    batch_to_device,
    enable_activation_checkpointing,
    make_grad_scaler,
    split_batch,
)
from recipes.training.validation import evaluate, validation_spec
from speechkit.errors import ConfigError
from speechkit.models import build_model
from speechkit.models.base import SpeechModel

#: display names of ``optim.name`` in the provenance
_OPTIMIZER_NAMES = {"adam": "Adam", "adamw": "AdamW"}


class Trainer:
    """Trains one model from a resolved config; see :mod:`recipes.trainer` for the run directory.

    Args:
        config: a config from :func:`~recipes.training.config.load_config` (or a dict merged over
            :data:`~recipes.training.config.DEFAULT_CONFIG`).
        context: the distributed context (default: single process on CPU/auto device).
        train_dataset, valid_dataset: datasets to use instead of the config's factories.
        command: the command line recorded in the provenance.
        model: a model to train instead of building ``config["model"]`` from the registry.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        context: DistributedContext | None = None,
        train_dataset: Dataset | None = None,
        valid_dataset: Dataset | None = None,
        command: str | None = None,
        model: SpeechModel | None = None,
    ) -> None:
        self.config = merge_config(DEFAULT_CONFIG, config)
        if self.config["run_dir"] is None:
            self.config["run_dir"] = str(Path("runs") / self.config["name"])
        if model is None:
            validate_config(self.config)
        self.context = context or setup_distributed(self.config["device"])
        self.run_dir = Path(self.config["run_dir"])
        self.command = command if command is not None else " ".join(sys.argv)
        self.log = RunLog(self.run_dir, self.context.is_main)
        torch.set_num_threads(int(self.config["num_threads"]))
        seed = int(self.config["seed"])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

        model_spec = self.config["model"]
        if model is None:
            model = build_model(model_spec["name"], model_spec["preset"], **dict(model_spec.get("overrides") or {}))
        self.model: SpeechModel = model.to(self.context.device)
        if self.config["init"]["checkpoint"]:
            self._load_initial_weights(str(self.config["init"]["checkpoint"]))
        self.lineage = training_lineage(self.config["init"]["checkpoint"])  # read once, recorded by every export
        self.train_dataset = train_dataset if train_dataset is not None else resolve_factory(self.config["data"]["train"])
        self.valid_dataset = valid_dataset if valid_dataset is not None else resolve_factory(self.config["data"]["valid"])
        for dataset in (self.train_dataset, self.valid_dataset):
            rate = getattr(dataset, "sample_rate", None)
            if rate is not None and int(rate) != self.model.sample_rate:
                raise ConfigError(f"the data is at {rate} Hz but the model works at {self.model.sample_rate} Hz")

        self.objective = objective_from_config(self.config)
        self.validation = validation_spec(self.config, self.model)
        self.precision = str(self.config["precision"])
        self.scaler = make_grad_scaler(self.precision, self.context.device)
        autocast_context(self.precision, self.context.device)  # fails early for fp16 on a CPU
        self.checkpointed_modules = (
            enable_activation_checkpointing(self.model) if self.config["activation_checkpointing"] else []
        )
        self.step_module = TrainingStep(self.model, self.objective)
        if self.context.distributed:
            self.network: torch.nn.Module = torch.nn.parallel.DistributedDataParallel(
                self.step_module,
                device_ids=[self.context.local_rank] if self.context.device.type == "cuda" else None,
                find_unused_parameters=bool(self.config["ddp_find_unused_parameters"]),
            )
        else:
            self.network = self.step_module

        self.optimizer = build_optimizer(self.model.parameters(), self.config["optim"])
        self.lr_controller = LearningRateController(
            self.config["optim"]["lr"], self.config["max_steps"], self.config["schedule"]
        )
        self.flat_stop = FlatValidationStop(
            self.config["early_stop"]["patience"], self.config["early_stop"]["min_delta"]
        )
        decay = self.config["ema"]["decay"]
        warmup = bool(self.config["ema"]["warmup"])
        self.ema = ExponentialMovingAverage(self.model, decay, warmup) if decay is not None else None

        batch_size = int(self.config["batch_size"])
        if batch_size % self.context.world_size:
            raise ConfigError(
                f"batch_size {batch_size} must be divisible by the number of processes ({self.context.world_size})"
            )
        self.per_rank_batch = batch_size // self.context.world_size
        self.accumulate_steps = int(self.config["accumulate_steps"])
        if self.accumulate_steps > self.per_rank_batch:
            raise ConfigError(
                f"accumulate_steps {self.accumulate_steps} exceeds the per-process batch ({self.per_rank_batch})"
            )
        self.sampler = ResumableDistributedSampler(self.train_dataset, self.context.world_size, self.context.rank, seed=seed)
        self.batches_per_epoch = len(self.sampler) // self.per_rank_batch
        if self.batches_per_epoch < 1:
            raise ConfigError(
                f"the training set ({len(self.train_dataset)} items) is smaller than one global batch ({batch_size})"
            )

        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_score = -math.inf
        self.best_step = -1
        self.best_metrics: dict[str, float] = {}
        self.train_seconds = 0.0
        self.stop_signal: int | None = None

    # ------------------------------------------------------------------ state
    def _load_initial_weights(self, name_or_path: str) -> None:
        """Load a speechkit checkpoint's weights into the freshly built model (``init.checkpoint``).

        The checkpoint must describe the same architecture: every tensor must match by name and shape.
        """
        from safetensors.torch import load_file

        from speechkit.checkpoint import load_state_dict_strict
        from speechkit.pretrained import resolve_model

        path = resolve_model(name_or_path)
        load_state_dict_strict(self.model, load_file(str(path), device="cpu"), str(path))

    def state_dict(self) -> dict[str, Any]:
        """The full training state (everything needed to resume bit-for-bit on one process)."""
        state = {
            "format": STATE_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_controller": self.lr_controller.state_dict(),
            "flat_stop": self.flat_stop.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_score": self.best_score,
            "best_step": self.best_step,
            "best_metrics": dict(self.best_metrics),
            "train_seconds": self.train_seconds,
            "rng": rng_state(),
            "config": json.dumps(self.config, sort_keys=True),
        }
        if self.scaler is not None:
            state["grad_scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (the model config must match)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_controller.load_state_dict(state["lr_controller"])
        if "flat_stop" in state:
            self.flat_stop.load_state_dict(state["flat_stop"])
        else:  # a state written before the flat-validation stop existed: count from its best score
            self.flat_stop.reference = float(state["best_score"])
        if self.ema is not None and state["ema"]:
            self.ema.load_state_dict(state["ema"])
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.best_score = float(state["best_score"])
        self.best_step = int(state["best_step"])
        self.best_metrics = {key: float(value) for key, value in state["best_metrics"].items()}
        self.train_seconds = float(state["train_seconds"])
        set_rng_state(state["rng"])

    def save_state(self) -> None:
        """Write ``last.pt`` (and a numbered copy, pruning old ones) on rank 0."""
        if not self.context.is_main:
            return
        state = self.state_dict()
        atomic_torch_save(state, self.run_dir / "last.pt")
        keep = int(self.config["keep_checkpoints"])
        if keep > 0:
            atomic_torch_save(state, self.run_dir / f"step_{self.step:07d}.pt")
            numbered = sorted(self.run_dir.glob("step_*.pt"))
            for old in numbered[:-keep]:
                old.unlink()

    def resume(self) -> bool:
        """Load ``run_dir/last.pt`` if it exists; returns True when a state was loaded."""
        path = self.run_dir / "last.pt"
        if not path.is_file():
            return False
        state = load_train_state(path)
        saved_model = json.loads(state["config"])["model"]
        if saved_model != self.config["model"]:
            raise ConfigError(f"{path} was trained with model {saved_model}, not {self.config['model']}")
        self.load_state_dict(state)
        self.log.truncate(self.step)
        return True

    # ------------------------------------------------------------------ signals
    def _install_signal_handlers(self) -> dict[int, Any]:
        previous = {}

        def request_stop(signum: int, frame: Any) -> None:
            self.stop_signal = signum

        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[signum] = signal.signal(signum, request_stop)
            except ValueError:  # not the main thread
                pass
        return previous

    def _should_stop(self) -> bool:
        flag = torch.tensor([1.0 if self.stop_signal is not None else 0.0], device=self.context.device)
        if self.context.distributed:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    # ------------------------------------------------------------------ loop
    def _make_loader(self) -> DataLoader:
        self.sampler.set_epoch(self.epoch)
        if hasattr(self.train_dataset, "set_epoch"):  # dynamic mixing: fresh, deterministic mixtures
            self.train_dataset.set_epoch(self.epoch)
        self.sampler.skip_batches(self.batch_in_epoch, self.per_rank_batch)
        workers = int(self.config["data"]["num_workers"])
        return DataLoader(
            self.train_dataset,
            batch_size=self.per_rank_batch,
            sampler=self.sampler,
            num_workers=workers,
            drop_last=True,
            generator=torch.Generator().manual_seed(int(self.config["seed"]) * 10_007 + self.epoch),
            persistent_workers=False,
            worker_init_fn=ignore_interrupts if workers > 0 else None,
        )

    def train_step(self, batch: Mapping[str, Any]) -> tuple[float, float]:
        """One optimiser step on ``batch`` (in ``accumulate_steps`` micro-batches); returns
        ``(loss, gradient norm before clipping)``."""
        self.network.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_controller.lr(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        micro_batches = split_batch(batch, self.accumulate_steps) if self.accumulate_steps > 1 else [batch]
        total_items = batch_items(batch)
        loss_value = torch.zeros((), device=self.context.device)
        for index, micro in enumerate(micro_batches):
            last = index == len(micro_batches) - 1
            no_sync = self.context.distributed and not last
            with self.network.no_sync() if no_sync else contextlib.nullcontext():
                with autocast_context(self.precision, self.context.device):
                    loss = self.network(batch_to_device(micro, self.context.device))
                if len(micro_batches) > 1:  # each micro-batch's mean, weighted by its share of the batch
                    loss = loss * (batch_items(micro) / total_items)
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            loss_value = loss_value + loss.detach()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        clip = self.config["optim"]["clip_grad_norm"]
        max_norm = float(clip) if clip else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skips the update itself when the gradients overflowed
            self.scaler.update()
            if math.isfinite(grad_norm) and self.ema is not None:
                self.ema.update(self.model, self.step + 1)
        elif math.isfinite(grad_norm):  # identical on every rank (gradients are all-reduced)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model, self.step + 1)
        if self.context.distributed:
            dist.all_reduce(loss_value)
            loss_value /= self.context.world_size
        return float(loss_value), grad_norm

    def evaluation_model(self) -> SpeechModel:
        """The model validation and export use: a copy holding the EMA weights, or the model itself."""
        if self.ema is None:
            return self.model
        averaged = copy.deepcopy(self.model)
        averaged.load_state_dict(self.ema.state_dict())
        return averaged

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean validation metrics and loss over the validation items (sharded over ranks); see
        :mod:`recipes.training.validation` for the metrics, subset and seed."""
        model = self.evaluation_model()
        model.eval()
        return evaluate(model, self.valid_dataset, self.objective, self.validation, self.context)

    def _after_validation(self, scores: Mapping[str, float]) -> None:
        score = self.validation.score(scores)
        reduced = self.lr_controller.report_validation(score)
        self.flat_stop.report_validation(score)
        self.log.row(
            "valid_log.csv",
            {"step": self.step, "epoch": self.epoch, **{k: round(v, 4) for k, v in scores.items()},
             "lr": self.lr_controller.lr(self.step), "lr_reduced": int(reduced)},
        )
        if score > self.best_score:
            self.best_score = score
            self.best_step = self.step
            self.best_metrics = {f"valid_{key}": value for key, value in scores.items()}
            if self.context.is_main:
                weights = self.ema.state_dict() if self.ema is not None else self.model.state_dict()
                atomic_torch_save({key: value.detach().cpu() for key, value in weights.items()}, self.run_dir / "best_model.pt")
                self.export()

    def provenance(self) -> dict[str, Any]:
        """Training facts stored in the exported checkpoint."""
        data = self.config["data"]
        optim = self.config["optim"]
        return with_lineage({
            "recipe": self.config["name"],
            "task": self.config["task"],
            "data": {
                "description": data["description"],
                "licenses": dict(data.get("licenses") or {}),
                "train": data["train"],
                "valid": data["valid"],
                "train_items": len(self.train_dataset),
                "valid_items": len(self.valid_dataset),
            },
            "model_preset": self.config["model"]["preset"],
            "initial_weights": self.config["init"]["checkpoint"],
            "best_step": self.best_step,
            "steps_trained": self.step,
            "batch_size": int(self.config["batch_size"]),
            "accumulate_steps": self.accumulate_steps,
            "precision": self.precision,
            "train_hours": round(self.train_seconds / 3600.0, 4),
            "ema_decay": self.config["ema"]["decay"],
            "ema_warmup": bool(self.config["ema"]["warmup"]),
            "early_stop": dict(self.config["early_stop"]),
            "validation_flat": self.flat_stop.flat,
            "objective": objective_spec(self.config),
            "optimizer": {**optim, "name": _OPTIMIZER_NAMES.get(str(optim["name"]).lower(), optim["name"])},
            "schedule": self.config["schedule"],
            "hardware": {
                "device": str(self.context.device),
                "processes": self.context.world_size,
                "torch_threads": torch.get_num_threads(),
                "cpu": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
                "gpu": torch.cuda.get_device_name(self.context.device) if self.context.device.type == "cuda" else None,
                "torch": torch.__version__,
            },
            "validation": self.best_metrics,
            "learning_rate": self.optimizer.param_groups[0]["lr"],
            "command": self.command,
        }, self.lineage)

    def export(self, path: str | os.PathLike | None = None) -> Path:
        """Save the best weights (EMA if enabled) with provenance as a speechkit checkpoint."""
        from speechkit.checkpoint import save_checkpoint

        target = Path(path) if path is not None else self.run_dir / self.config["export"]["path"]
        best_path = self.run_dir / "best_model.pt"
        model = copy.deepcopy(self.model).cpu()
        if best_path.is_file():
            model.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=True))
        elif self.ema is not None:
            model.load_state_dict(self.ema.state_dict())
        return save_checkpoint(model, target, provenance=self.provenance(), overwrite=True)

    def fit(self) -> str:
        """Train until ``max_steps``/``max_epochs``, flat validation (``early_stop``) or a stop signal;
        returns ``"done"``, ``"flat"`` (stopped by ``early_stop``; exported like ``"done"``) or ``"interrupted"``.

        State is saved every ``checkpoint_every`` steps, at the end, and when SIGTERM/SIGINT arrives
        (at the end of the current step).
        """
        if self.context.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.step == 0:  # a fresh start: another run's logs and weights here are kept apart, not mixed in
                export = Path(str(self.config["export"]["path"]))
                set_aside_earlier_run(self.run_dir, export.name if len(export.parts) == 1 else "")
            (self.run_dir / "config.json").write_text(json.dumps(self.config, indent=2, sort_keys=True))
        if self.config["tensorboard"]:
            self.log.open_tensorboard()
        previous_handlers = self._install_signal_handlers()
        max_steps = int(self.config["max_steps"])
        max_epochs = self.config["max_epochs"]
        valid_every = int(self.config["valid_every"])
        checkpoint_every = int(self.config["checkpoint_every"])
        log_every = int(self.config["log_every"])
        progress = None
        if self.context.is_main and self.config["progress"]:
            from tqdm import tqdm

            progress = tqdm(total=max_steps, initial=self.step, desc=self.config["name"], dynamic_ncols=True)
        status = "done"
        last_validated = self.step if self.flat_stop.flat else -1  # a flat run resumed: nothing left to do
        try:
            while (self.step < max_steps and (max_epochs is None or self.epoch < int(max_epochs))
                   and not self.flat_stop.flat):
                last_tick = time.perf_counter()
                with loader_batches(self._make_loader()) as batches:  # workers stop on any exit
                    for batch in batches:
                        loss, grad_norm = self.train_step(batch)
                        self.step += 1
                        self.batch_in_epoch += 1
                        now = time.perf_counter()  # wall clock, including data loading and validation
                        self.train_seconds += now - last_tick
                        last_tick = now
                        if progress is not None:
                            progress.update(1)
                            progress.set_postfix(loss=f"{loss:.3f}", best=f"{self.best_score:.2f}")
                        if self.step % log_every == 0 or self.step == 1:
                            self.log.row(
                                "train_log.csv",
                                {"step": self.step, "epoch": self.epoch, "loss": round(loss, 5),
                                 "grad_norm": round(grad_norm, 5), "lr": self.lr_controller.lr(self.step - 1),
                                 "train_seconds": round(self.train_seconds, 2)},
                            )
                        if self.step % valid_every == 0:
                            self._after_validation(self.validate())
                            last_validated = self.step
                        if self.step % checkpoint_every == 0:
                            self.save_state()
                        if self._should_stop():
                            status = "interrupted"
                            break
                        if self.step >= max_steps or self.flat_stop.flat:
                            break
                    else:
                        self.epoch += 1
                        self.batch_in_epoch = 0
                if status == "interrupted":
                    break
            if status == "done" and last_validated != self.step:
                self._after_validation(self.validate())
            self.save_state()
            if status == "done" and self.context.is_main:
                self.export()
        finally:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            if progress is not None:
                progress.close()
            self.log.close()
        return "flat" if status == "done" and self.flat_stop.flat else status


def run_training(
    config: Mapping[str, Any],
    resume: bool = False,
    command: str | None = None,
    train_dataset: Dataset | None = None,
    valid_dataset: Dataset | None = None,
    model: SpeechModel | None = None,
) -> str:
    """Build a :class:`Trainer` (joining ``torchrun``'s process group if launched by it) and fit.

    Returns ``"done"``, ``"flat"`` (validation flattened, see ``early_stop``) or ``"interrupted"``.
    """
    context = setup_distributed(config.get("device", "auto"))
    try:
        trainer = Trainer(
            config, context, train_dataset=train_dataset, valid_dataset=valid_dataset, command=command, model=model
        )
        if resume:
            trainer.resume()
        status = trainer.fit()
        if context.distributed and dist.is_initialized():
            dist.barrier()  # rank 0's checkpoint and export are done before any rank tears the group down
        return status
    finally:
        if context.distributed and dist.is_initialized():
            dist.destroy_process_group()
