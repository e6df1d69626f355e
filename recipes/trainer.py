"""The one shared training loop of every speechkit recipe.

A recipe is a config file (YAML or JSON) naming the model, the data factories, the optimiser and the
schedule (``base: other.yaml`` inherits another config and changes only what differs, merged at every
depth); :func:`run_training` does the rest, single-process or under ``torchrun`` with
DistributedDataParallel (gloo on CPU, NCCL on CUDA)::

    python -m recipes.train recipes/configs/enhance_causal_16k.yaml           # one process
    torchrun --nproc_per_node 2 -m recipes.train recipes/configs/...yaml      # DDP
    python -m recipes.train CONFIG --resume                                   # continue a run

Batches are ``{"mixture": [B, C, T], "targets": [B, S, C, T], ...}``. ``batch_size`` is the
GLOBAL batch: each of the ``world_size`` processes takes ``batch_size / world_size`` items of the
same deterministic shuffle, so a DDP run follows the same trajectory as one process with the same
global batch (up to floating-point summation order).

Run directory (``run_dir``, gitignored under ``runs/``)::

    config.json          resolved config
    last.pt              full training state (model, optimiser, LR controller, EMA, step, RNG, best)
    step_000100.pt ...   the last ``keep_checkpoints`` periodic states
    best_model.pt        weights (EMA if enabled) of the best validation SI-SDRi
    best.safetensors     the best model in speechkit's checkpoint format, with provenance
    train_log.csv        step, epoch, loss, grad norm, lr, seconds
    valid_log.csv        step, SI-SDR, SI-SDRi, mixture SI-SDR, loss, lr

All ``.pt`` files hold only tensors and plain Python values and are loaded with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import importlib
import json
import math
import os
import platform
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from speechkit._files import publish, temporary_sibling
from speechkit.errors import ConfigError
from speechkit.models import build_model
from speechkit.models.base import SpeechModel

#: every config key with its default; nested dicts are merged key by key
DEFAULT_CONFIG: Mapping[str, Any] = {
    "name": "run",
    "task": "enhancement",  # enhancement | dereverberation | multichannel_enhancement | separation | aec
    "run_dir": None,  # default runs/<name>
    "seed": 0,
    "num_threads": 2,  # torch.set_num_threads per process
    "device": "auto",  # auto | cpu | cuda
    "model": {"name": None, "preset": "tiny", "overrides": {}},
    "data": {
        "train": None,  # {"factory": "module:callable", "kwargs": {...}} -> map-style Dataset
        "valid": None,  # same; a fixed set (batch size 1, any length)
        "num_workers": 0,
        "description": "",  # free text stored in the exported provenance
    },
    # enhancement: -SI-SDR + snr_weight * -SNR; separation: PIT -SI-SDR; aec: see echo_aware_loss
    # enhancement-like tasks may add stft_weight * multi-resolution STFT loss
    "loss": {"snr_weight": 0.0, "echo_weight": 0.0, "aec_floor_db": 50.0, "stft_weight": 0.0},
    # start from the weights of a speechkit checkpoint (path or bundled name); --resume wins
    "init": {"checkpoint": None},
    "optim": {"lr": 1e-3, "betas": [0.9, 0.999], "weight_decay": 0.0, "clip_grad_norm": 5.0},
    "schedule": {
        "warmup_steps": 0,  # linear warm-up from 0
        "cosine": False,  # cosine decay from the end of warm-up to max_steps
        "min_lr_ratio": 0.0,  # cosine floor as a fraction of lr
        "plateau_factor": 0.5,  # multiply the lr by this when validation stalls (1.0 disables)
        "plateau_patience": 3,  # validations without improvement before reducing
        "min_lr": 1e-6,
    },
    "ema": {"decay": None},  # e.g. 0.999; validation and export then use the EMA weights
    "batch_size": 4,  # global batch over all processes
    "max_steps": 1000,
    "max_epochs": None,
    "valid_every": 200,  # steps between validations (also run at the end)
    "checkpoint_every": 100,  # steps between full-state checkpoints (also at the end and on signal)
    "keep_checkpoints": 2,
    "log_every": 10,
    "ddp_find_unused_parameters": True,  # e.g. Conv-TasNet's last residual head feeds no output
    "progress": True,  # tqdm bar on rank 0
    "tensorboard": False,  # also log to TensorBoard when the package is installed
    "export": {"path": "best.safetensors"},
}

STATE_FORMAT = "speechkit-train-state-1"


# --------------------------------------------------------------------------------------- config
def merge_config(defaults: Mapping[str, Any], values: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """``values`` on top of ``defaults``, recursively; unknown keys raise :class:`ConfigError`.

    Keys whose default is ``None`` or a dict named ``kwargs``/``overrides`` accept any content.
    """
    merged = copy.deepcopy(dict(defaults))
    for key, value in values.items():
        if key not in defaults:
            raise ConfigError(f"unknown config key {where + key!r} (known: {', '.join(sorted(defaults))})")
        default = defaults[key]
        if isinstance(default, Mapping) and default and isinstance(value, Mapping) and key not in (
            "overrides",
            "kwargs",
        ):
            merged[key] = merge_config(default, value, where=f"{where}{key}.")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=5e-4"`` -> ``(["optim", "lr"], 0.0005)``; the value is parsed as JSON, else YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)  # numbers like 5e-4 (a string in YAML 1.1), true, null, [1, 2]
    except json.JSONDecodeError:
        try:
            import yaml

            value = yaml.safe_load(raw)
        except ImportError:
            value = raw
    return key.strip().split("."), value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``key.sub=value`` of ``overrides`` in a copy of ``values``."""
    result = copy.deepcopy(values)
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r} goes through a non-mapping key {part!r}")
        node[path[-1]] = value
    return result


def update_nested(base: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` on top of ``base``, merging mappings at every depth (lists and scalars are replaced)."""
    merged = copy.deepcopy(dict(base))
    for key, value in values.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = update_nested(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_config_values(path: str | os.PathLike, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a YAML or JSON config; ``base: other.yaml`` (relative to the file) is read
    first and the file's own keys are merged on top of it, at every depth."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.resolve() in _chain:
        raise ConfigError(f"config {path} inherits from itself through 'base'")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        from speechkit._optional import require

        yaml = require("yaml", "train", "YAML recipe configs")
        values = yaml.safe_load(text) or {}
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    base = values.pop("base", None)
    if base is not None:
        base_values = read_config_values(path.parent / str(base), _chain + (path.resolve(),))
        values = update_nested(base_values, values)
    return values


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a YAML or JSON recipe config (with its ``base`` chain), apply ``key.sub=value`` overrides,
    fill the defaults."""
    values = apply_overrides(read_config_values(path), overrides or [])
    config = merge_config(DEFAULT_CONFIG, values)
    if config["run_dir"] is None:
        config["run_dir"] = str(Path("runs") / config["name"])
    validate_config(config)
    return config


def validate_config(config: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` for a config that cannot train."""
    if not config["model"]["name"]:
        raise ConfigError("the config must name a model (model.name)")
    for split in ("train", "valid"):
        spec = config["data"][split]
        if not isinstance(spec, Mapping) or "factory" not in spec:
            raise ConfigError(f"data.{split} must be a mapping with a 'factory' (module:callable)")
    if int(config["batch_size"]) < 1 or int(config["max_steps"]) < 1:
        raise ConfigError("batch_size and max_steps must be positive")
    if config["ema"]["decay"] is not None and not 0.0 < float(config["ema"]["decay"]) < 1.0:
        raise ConfigError("ema.decay must be between 0 and 1 (or null)")


def resolve_factory(spec: Mapping[str, Any]) -> Any:
    """Call ``spec["factory"]`` (``"package.module:callable"``) with ``spec["kwargs"]``."""
    target = str(spec["factory"])
    if ":" not in target:
        raise ConfigError(f"factory {target!r} must look like 'package.module:callable'")
    module_name, attribute = target.split(":", 1)
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"cannot import factory {target!r} ({error})") from error
    return factory(**dict(spec.get("kwargs") or {}))


# --------------------------------------------------------------------------------------- data
class SyntheticMixtures(Dataset):
    """Deterministic synthetic mixtures for smoke runs and tests (no audio files needed).

    Item ``i`` is generated from ``seed + i``: ``num_sources`` sums of random sinusoids with a
    syllable-like envelope, plus white noise at ``snr_db``. Returns
    ``{"mixture": [C, T], "targets": [S, C, T]}`` with ``C = num_channels``.
    """

    def __init__(
        self,
        num_items: int = 16,
        num_samples: int = 4000,
        num_sources: int = 1,
        num_channels: int = 1,
        sample_rate: int = 8000,
        snr_db: float = 5.0,
        seed: int = 0,
    ) -> None:
        self.num_items = num_items
        self.num_samples = num_samples
        self.num_sources = num_sources
        self.num_channels = num_channels
        self.sample_rate = sample_rate
        self.snr_db = snr_db
        self.seed = seed

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        time_axis = torch.arange(self.num_samples, dtype=torch.float64) / self.sample_rate
        sources = []
        for _ in range(self.num_sources):
            frequencies = 100.0 + 900.0 * torch.rand(3, 1, generator=generator, dtype=torch.float64)
            phases = 2 * math.pi * torch.rand(3, 1, generator=generator, dtype=torch.float64)
            tone = torch.sin(2 * math.pi * frequencies * time_axis + phases).sum(0)  # [3, T] -> [T]
            rate = 2.0 + 4.0 * float(torch.rand(1, generator=generator))
            envelope = 0.5 * (1 - torch.cos(2 * math.pi * rate * time_axis))
            sources.append(0.1 * tone * envelope)
        targets = torch.stack(sources).unsqueeze(1).repeat(1, self.num_channels, 1)  # -> [S, C, T]
        noise = torch.randn(self.num_channels, self.num_samples, generator=generator, dtype=torch.float64)
        speech = targets.sum(0)  # [S, C, T] -> [C, T]
        noise = noise * (speech.pow(2).mean() / noise.pow(2).mean() / 10 ** (self.snr_db / 10)).sqrt()
        return {"mixture": (speech + noise).float(), "targets": targets.float()}


class ResumableDistributedSampler(DistributedSampler):
    """A :class:`DistributedSampler` (deterministic per ``seed`` and epoch) that can skip a prefix.

    ``skip_batches(n, per_rank_batch)`` drops the first ``n`` batches of the current epoch, so a
    resumed run continues exactly where the interrupted one stopped without loading those items.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = 0

    def skip_batches(self, batches: int, per_rank_batch: int) -> None:
        """Skip the first ``batches`` batches (of ``per_rank_batch`` items) of the next iteration."""
        self.skip = batches * per_rank_batch

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())[self.skip :]
        self.skip = 0
        return iter(indices)


def ignore_interrupts(worker_id: int) -> None:
    """DataLoader worker initialiser: leave SIGINT/SIGTERM to the main process, which saves and stops.

    (A signal sent to the whole process group, as Ctrl-C or ``timeout`` do, would otherwise kill
    the workers and make the loader raise before the state is saved.)
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# --------------------------------------------------------------------------------------- losses
def echo_aware_loss(
    estimate: torch.Tensor, reference: torch.Tensor, microphone: torch.Tensor, floor_db: float = 50.0
) -> torch.Tensor:
    """Negative SNR with an energy floor tied to the microphone, per item: ``[B, ...T] -> [B]``.

    ``10 log10(|ref - est|^2 + tau) - 10 log10(|ref|^2 + tau)`` with
    ``tau = 10^(-floor_db / 10) |mic|^2`` (the soft threshold of Wisdom et al., "Unsupervised sound
    separation using mixture invariant training", NeurIPS 2020). Scale-dependent, so a silent
    reference (far-end single talk) means "output silence": the loss is then
    ``10 log10(1 + |est|^2 / tau) >= 0``, i.e. it rewards echo suppression up to ``floor_db`` dB
    below the microphone; with speech in the reference it is the negative SNR, capped near
    ``floor_db`` dB above the microphone level. Energies are summed over every axis after the batch.

    Args:
        estimate: ``[B, ...]`` output (e.g. ``[B, 1, 1, T]``).
        reference: same shape; may be all zeros.
        microphone: ``[B, ...]`` the microphone signal of each item (any trailing shape).
        floor_db: how far below the microphone energy the floor sits.
    """
    dims = tuple(range(1, estimate.dim()))
    floor = 10.0 ** (-float(floor_db) / 10.0) * microphone.pow(2).flatten(1).sum(dim=1) + 1e-8  # [B]
    error_energy = (reference - estimate).pow(2).sum(dim=dims)  # [B]
    reference_energy = reference.pow(2).sum(dim=dims)  # [B]
    return 10.0 * torch.log10(error_energy + floor) - 10.0 * torch.log10(reference_energy + floor)


def training_loss(
    task: str, snr_weight: float = 0.0, echo_weight: float = 0.0, aec_floor_db: float = 50.0,
    stft_weight: float = 0.0,
) -> Callable[..., torch.Tensor]:
    """The loss of ``task``: ``loss(estimate[B, S, C, T], targets[B, S, C, T]) -> scalar``.

    Enhancement-like tasks: mean negative SI-SDR (+ ``snr_weight`` times mean negative SNR, +
    ``stft_weight`` times the mean multi-resolution STFT loss).
    Separation: permutation-invariant negative SI-SDR.
    Echo cancellation (``"aec"``): ``loss(estimate, targets, mixture, echo_estimate=None, echo=None)``
    with ``mixture [B, 2, T]`` (microphone first): mean :func:`echo_aware_loss` of the near-end
    estimate, plus ``echo_weight`` times the same loss of the echo estimate against the true echo
    in the microphone when both are given (SI-SDR would be undefined on far-end single talk, whose
    near-end target is exactly zero).
    """
    from speechkit import losses

    if task == "aec":

        def aec_loss(
            estimate: torch.Tensor,
            targets: torch.Tensor,
            mixture: torch.Tensor,
            echo_estimate: torch.Tensor | None = None,
            echo: torch.Tensor | None = None,
        ) -> torch.Tensor:
            microphone = mixture[:, 0]  # [B, 2, T] -> [B, T]
            loss = echo_aware_loss(estimate, targets, microphone, aec_floor_db).mean()
            if echo_weight and echo_estimate is not None and echo is not None:
                echo = echo.reshape(echo_estimate.shape)  # [B, 1, T] -> [B, 1, 1, T]
                loss = loss + echo_weight * echo_aware_loss(echo_estimate, echo, microphone, aec_floor_db).mean()
            return loss

        return aec_loss

    if task == "separation":

        def separation_loss(estimate: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            loss, _ = losses.pit_loss(estimate, targets, losses.neg_si_sdr)
            return loss

        return separation_loss

    def enhancement_loss(estimate: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = -losses.si_sdr(estimate, targets).mean()
        if snr_weight:
            loss = loss - snr_weight * losses.snr(estimate, targets).mean()
        if stft_weight:
            loss = loss + stft_weight * losses.multi_resolution_stft_loss(estimate, targets).mean()
        return loss

    return enhancement_loss


# --------------------------------------------------------------------------------------- LR and EMA
class LearningRateController:
    """Warm-up, optional cosine decay, and halving on validation plateaus, in one resumable object.

    ``lr(step) = base_lr * warmup(step) * cosine(step) * plateau_scale``, floored at ``min_lr``
    once a plateau reduction happened.
    """

    def __init__(self, base_lr: float, max_steps: int, schedule: Mapping[str, Any]) -> None:
        self.base_lr = float(base_lr)
        self.max_steps = int(max_steps)
        self.warmup_steps = int(schedule["warmup_steps"])
        self.cosine = bool(schedule["cosine"])
        self.min_lr_ratio = float(schedule["min_lr_ratio"])
        self.plateau_factor = float(schedule["plateau_factor"])
        self.plateau_patience = int(schedule["plateau_patience"])
        self.min_lr = float(schedule["min_lr"])
        self.plateau_scale = 1.0
        self.best = -math.inf
        self.bad_validations = 0

    def lr(self, step: int) -> float:
        """Learning rate for optimiser step number ``step`` (0-based)."""
        factor = 1.0
        if self.warmup_steps > 0 and step < self.warmup_steps:
            factor = (step + 1) / self.warmup_steps
        elif self.cosine:
            span = max(1, self.max_steps - self.warmup_steps)
            progress = min(1.0, (step - self.warmup_steps) / span)
            factor = self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        lr = self.base_lr * factor * self.plateau_scale
        return max(lr, self.min_lr) if self.plateau_scale < 1.0 else lr

    def report_validation(self, score: float) -> bool:
        """Record a validation score (higher is better); returns True when the lr was reduced."""
        if score > self.best:
            self.best = score
            self.bad_validations = 0
            return False
        self.bad_validations += 1
        if self.plateau_factor < 1.0 and self.bad_validations >= self.plateau_patience:
            self.plateau_scale *= self.plateau_factor
            self.bad_validations = 0
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        """Plain-value state for checkpoints."""
        return {"plateau_scale": self.plateau_scale, "best": self.best, "bad_validations": self.bad_validations}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.plateau_scale = float(state["plateau_scale"])
        self.best = float(state["best"])
        self.bad_validations = int(state["bad_validations"])


class ExponentialMovingAverage:
    """EMA of a model's floating-point parameters and buffers: ``ema = decay * ema + (1 - decay) * w``."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.shadow = {key: value.detach().clone() for key, value in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average towards the current weights of ``model``."""
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                self.shadow[key].lerp_(value.detach(), 1.0 - self.decay)
            else:
                self.shadow[key].copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged tensors (a state dict of the model)."""
        return self.shadow

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore averaged tensors."""
        for key, value in state.items():
            self.shadow[key].copy_(value)


# --------------------------------------------------------------------------------------- state I/O
def atomic_torch_save(state: Mapping[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = temporary_sibling(path)
    try:
        torch.save(dict(state), tmp_name)
        publish(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def load_train_state(path: Path) -> dict[str, Any]:
    """Load a training state saved by the trainer (``weights_only=True``)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != STATE_FORMAT:
        raise ConfigError(f"{path} is not a speechkit training state")
    return state


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors and plain values."""
    _, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": list(random.getstate()[1]) + [random.getstate()[0]],
        "python_gauss": random.getstate()[2],
        "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
        "numpy_rest": [int(position), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    python = list(state["python"])
    random.setstate((python[-1], tuple(python[:-1]), state["python_gauss"]))
    position, has_gauss, cached = state["numpy_rest"]
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------- metrics
@torch.no_grad()
def validation_scores(estimate: torch.Tensor, targets: torch.Tensor, mixture: torch.Tensor, task: str) -> tuple[float, float]:
    """``(SI-SDR, SI-SDR of the unprocessed mixture)`` in dB, mean over sources and channels.

    ``estimate``/``targets`` ``[1, S, C, T]``; ``mixture [1, C_in, T]`` (its first ``C`` channels
    are the reference input). Separation picks the best permutation.
    """
    from speechkit import metrics

    channels = targets.shape[2]
    reference_input = mixture[:, :channels].unsqueeze(1).expand_as(targets)  # [1, C, T] -> [1, S, C, T]
    if task == "separation":
        estimate = metrics.best_permutation(estimate, targets)
    score = metrics.si_sdr(estimate, targets).mean().item()
    baseline = metrics.si_sdr(reference_input, targets).mean().item()
    return score, baseline


# --------------------------------------------------------------------------------------- trainer
@dataclasses.dataclass
class DistributedContext:
    """Where this process runs: rank, world size and device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that logs and writes files)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group with more than one process is active."""
        return self.world_size > 1


def setup_distributed(device: str = "auto") -> DistributedContext:
    """Join the ``torchrun`` process group when launched by it (gloo on CPU, NCCL on CUDA)."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if dist.is_initialized():
        world_size, rank = dist.get_world_size(), dist.get_rank()
    if use_cuda:
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=target)


class Trainer:
    """Trains one model from a resolved config; see the module docstring for the run directory.

    Args:
        config: a config from :func:`load_config` (or a dict merged over :data:`DEFAULT_CONFIG`).
        context: the distributed context (default: single process on CPU/auto device).
        train_dataset, valid_dataset: datasets to use instead of the config's factories.
        command: the command line recorded in the provenance.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        context: DistributedContext | None = None,
        train_dataset: Dataset | None = None,
        valid_dataset: Dataset | None = None,
        command: str | None = None,
    ) -> None:
        self.config = merge_config(DEFAULT_CONFIG, config)
        if self.config["run_dir"] is None:
            self.config["run_dir"] = str(Path("runs") / self.config["name"])
        self.context = context or setup_distributed(self.config["device"])
        self.run_dir = Path(self.config["run_dir"])
        self.command = command if command is not None else " ".join(sys.argv)
        torch.set_num_threads(int(self.config["num_threads"]))
        seed = int(self.config["seed"])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

        model_spec = self.config["model"]
        self.model: SpeechModel = build_model(
            model_spec["name"], model_spec["preset"], **dict(model_spec.get("overrides") or {})
        ).to(self.context.device)
        if self.config["init"]["checkpoint"]:
            self._load_initial_weights(str(self.config["init"]["checkpoint"]))
        self.train_dataset = train_dataset if train_dataset is not None else resolve_factory(self.config["data"]["train"])
        self.valid_dataset = valid_dataset if valid_dataset is not None else resolve_factory(self.config["data"]["valid"])
        for dataset in (self.train_dataset, self.valid_dataset):
            rate = getattr(dataset, "sample_rate", None)
            if rate is not None and int(rate) != self.model.sample_rate:
                raise ConfigError(
                    f"the data is at {rate} Hz but the model works at {self.model.sample_rate} Hz"
                )
        if self.context.distributed:
            self.network: torch.nn.Module = torch.nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.context.local_rank] if self.context.device.type == "cuda" else None,
                find_unused_parameters=bool(self.config["ddp_find_unused_parameters"]),
            )
        else:
            self.network = self.model

        optim = self.config["optim"]
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=float(optim["lr"]),
            betas=tuple(float(beta) for beta in optim["betas"]),
            weight_decay=float(optim["weight_decay"]),
        )
        self.lr_controller = LearningRateController(optim["lr"], self.config["max_steps"], self.config["schedule"])
        decay = self.config["ema"]["decay"]
        self.ema = ExponentialMovingAverage(self.model, decay) if decay is not None else None
        loss_config = self.config["loss"]
        self.loss_fn = training_loss(
            self.config["task"], float(loss_config["snr_weight"]), float(loss_config["echo_weight"]),
            float(loss_config["aec_floor_db"]), float(loss_config["stft_weight"]),
        )

        batch_size = int(self.config["batch_size"])
        if batch_size % self.context.world_size:
            raise ConfigError(
                f"batch_size {batch_size} must be divisible by the number of processes ({self.context.world_size})"
            )
        self.per_rank_batch = batch_size // self.context.world_size
        self.sampler = ResumableDistributedSampler(
            self.train_dataset, self.context.world_size, self.context.rank, seed=seed
        )
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
        self._tensorboard: Any = None

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
        return {
            "format": STATE_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_controller": self.lr_controller.state_dict(),
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

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (the model config must match)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_controller.load_state_dict(state["lr_controller"])
        if self.ema is not None and state["ema"]:
            self.ema.load_state_dict(state["ema"])
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
        self._truncate_logs()
        return True

    # ------------------------------------------------------------------ logging
    def _log_row(self, name: str, row: Mapping[str, Any]) -> None:
        if not self.context.is_main:
            return
        path = self.run_dir / name
        new = not path.exists()
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self._tensorboard is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(f"{name.split('_')[0]}/{key}", value, row["step"])

    def _truncate_logs(self) -> None:
        """Drop log rows written after the resumed step (they will be produced again)."""
        if not self.context.is_main:
            return
        for name in ("train_log.csv", "valid_log.csv"):
            path = self.run_dir / name
            if not path.exists():
                continue
            with path.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
            if not rows:
                continue
            kept = [row for row in rows if int(row["step"]) <= self.step]
            with path.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(kept)

    def _open_tensorboard(self) -> None:
        if not (self.config["tensorboard"] and self.context.is_main):
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self._tensorboard = SummaryWriter(str(self.run_dir / "tensorboard"))

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
        """One optimiser step on ``batch``; returns ``(loss, gradient norm before clipping)``."""
        self.network.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_controller.lr(self.step)
        mixture = batch["mixture"].to(self.context.device)  # [B, C_in, T]
        targets = batch["targets"].to(self.context.device)  # [B, S, C, T]
        if self.config["task"] == "aec":
            loss = self._aec_loss(batch, mixture, targets)
        else:
            estimate = self.network(mixture)  # [B, C_in, T] -> [B, S, C, T]
            loss = self.loss_fn(estimate, targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.config["optim"]["clip_grad_norm"]
        max_norm = float(clip) if clip else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        if math.isfinite(grad_norm):  # identical on every rank (gradients are all-reduced)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
        loss_value = loss.detach()
        if self.context.distributed:
            dist.all_reduce(loss_value)
            loss_value /= self.context.world_size
        return float(loss_value), grad_norm

    def _aec_loss(self, batch: Mapping[str, Any], mixture: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The echo-aware loss of one batch; with ``loss.echo_weight`` also the echo-estimate term."""
        if float(self.config["loss"]["echo_weight"]) and "echo" in batch:
            estimate, echo_estimate = self.network(mixture, return_echo=True)  # [B, 1, 1, T] each
            echo = batch["echo"].to(self.context.device)  # [B, 1, T]
            return self.loss_fn(estimate, targets, mixture, echo_estimate, echo)
        return self.loss_fn(self.network(mixture), targets, mixture)  # [B, 2, T] -> [B, 1, 1, T]

    @torch.no_grad()
    def _validate_aec(self, model: SpeechModel) -> dict[str, float]:
        """Echo-cancellation validation: SI-SDR(i) on items with near-end speech, ERLE on far-end single talk.

        ``si_sdri`` (the model-selection score) is 0 when the set holds no near-end item; ``erle`` is
        NaN when it holds no far-end single-talk item.
        """
        from speechkit import metrics

        # near-end SI-SDR, mixture SI-SDR, near-end items, ERLE, far-end items, loss, items
        totals = torch.zeros(7, dtype=torch.float64)
        for index in range(self.context.rank, len(self.valid_dataset), self.context.world_size):
            item = self.valid_dataset[index]
            mixture = torch.as_tensor(item["mixture"]).unsqueeze(0).to(self.context.device)  # -> [1, 2, T]
            targets = torch.as_tensor(item["targets"]).unsqueeze(0).to(self.context.device)  # -> [1, 1, 1, T]
            estimate = model(mixture)  # [1, 2, T] -> [1, 1, 1, T]
            loss = float(self.loss_fn(estimate, targets, mixture))
            if float(targets.abs().max()) > 0.0:
                score, baseline = validation_scores(estimate, targets, mixture, "aec")
                totals += torch.tensor([score, baseline, 1.0, 0.0, 0.0, loss, 1.0], dtype=torch.float64)
            else:
                erle = metrics.erle(mixture[0, 0].cpu(), estimate.reshape(-1).cpu())
                totals += torch.tensor([0.0, 0.0, 0.0, erle, 1.0, loss, 1.0], dtype=torch.float64)
        if self.context.distributed:
            dist.all_reduce(totals)
        near_items, far_items, items = (float(totals[index]) for index in (2, 4, 6))
        si_sdr = float(totals[0]) / near_items if near_items else 0.0
        baseline = float(totals[1]) / near_items if near_items else 0.0
        return {
            "si_sdr": si_sdr,
            "si_sdri": si_sdr - baseline,
            "mixture_si_sdr": baseline,
            "erle": float(totals[3]) / far_items if far_items else math.nan,
            "near_end_items": near_items,
            "far_end_items": far_items,
            "loss": float(totals[5]) / max(1.0, items),
        }

    def evaluation_model(self) -> SpeechModel:
        """The model validation and export use: a copy holding the EMA weights, or the model itself."""
        if self.ema is None:
            return self.model
        averaged = copy.deepcopy(self.model)
        averaged.load_state_dict(self.ema.state_dict())
        return averaged

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean SI-SDR, SI-SDRi and loss over the fixed validation set (sharded over ranks).

        Task ``"aec"`` reports SI-SDR(i) over the items with near-end speech and ERLE over far-end
        single talk instead (see :meth:`_validate_aec`).
        """
        model = self.evaluation_model()
        model.eval()
        if self.config["task"] == "aec":
            return self._validate_aec(model)
        totals = torch.zeros(4, dtype=torch.float64)
        for index in range(self.context.rank, len(self.valid_dataset), self.context.world_size):
            item = self.valid_dataset[index]
            mixture = torch.as_tensor(item["mixture"]).unsqueeze(0).to(self.context.device)  # -> [1, C_in, T]
            targets = torch.as_tensor(item["targets"]).unsqueeze(0).to(self.context.device)  # -> [1, S, C, T]
            estimate = model(mixture)  # [1, C_in, T] -> [1, S, C, T]
            score, baseline = validation_scores(estimate, targets, mixture, self.config["task"])
            loss = float(self.loss_fn(estimate, targets))
            totals += torch.tensor([score, baseline, loss, 1.0], dtype=torch.float64)
        if self.context.distributed:
            dist.all_reduce(totals)
        count = max(1.0, float(totals[3]))
        si_sdr, baseline, loss = (float(value) / count for value in totals[:3])
        return {"si_sdr": si_sdr, "si_sdri": si_sdr - baseline, "mixture_si_sdr": baseline, "loss": loss}

    def _after_validation(self, scores: Mapping[str, float]) -> None:
        reduced = self.lr_controller.report_validation(scores["si_sdri"])
        self._log_row(
            "valid_log.csv",
            {"step": self.step, "epoch": self.epoch, **{k: round(v, 4) for k, v in scores.items()},
             "lr": self.lr_controller.lr(self.step), "lr_reduced": int(reduced)},
        )
        if scores["si_sdri"] > self.best_score:
            self.best_score = scores["si_sdri"]
            self.best_step = self.step
            self.best_metrics = {f"valid_{key}": value for key, value in scores.items()}
            if self.context.is_main:
                weights = self.ema.state_dict() if self.ema is not None else self.model.state_dict()
                atomic_torch_save({key: value.detach().cpu() for key, value in weights.items()}, self.run_dir / "best_model.pt")
                self.export()

    def provenance(self) -> dict[str, Any]:
        """Training facts stored in the exported checkpoint."""
        data = self.config["data"]
        return {
            "recipe": self.config["name"],
            "task": self.config["task"],
            "data": {
                "description": data["description"],
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
            "train_hours": round(self.train_seconds / 3600.0, 4),
            "ema_decay": self.config["ema"]["decay"],
            "optimizer": {"name": "Adam", **self.config["optim"]},
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
            "command": self.command,
        }

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
        """Train until ``max_steps``/``max_epochs`` or a stop signal; returns ``"done"`` or ``"interrupted"``.

        State is saved every ``checkpoint_every`` steps, at the end, and when SIGTERM/SIGINT arrives
        (at the end of the current step).
        """
        if self.context.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(self.config, indent=2, sort_keys=True))
        self._open_tensorboard()
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
        last_validated = -1
        try:
            while self.step < max_steps and (max_epochs is None or self.epoch < int(max_epochs)):
                last_tick = time.perf_counter()
                for batch in self._make_loader():
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
                        self._log_row(
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
                    if self.step >= max_steps:
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
            if self._tensorboard is not None:
                self._tensorboard.close()
        return status


def run_training(
    config: Mapping[str, Any],
    resume: bool = False,
    command: str | None = None,
    train_dataset: Dataset | None = None,
    valid_dataset: Dataset | None = None,
) -> str:
    """Build a :class:`Trainer` (joining ``torchrun``'s process group if launched by it) and fit.

    Returns ``"done"`` or ``"interrupted"``.
    """
    context = setup_distributed(config.get("device", "auto"))
    try:
        trainer = Trainer(config, context, train_dataset=train_dataset, valid_dataset=valid_dataset, command=command)
        if resume:
            trainer.resume()
        status = trainer.fit()
        if context.distributed and dist.is_initialized():
            dist.barrier()  # rank 0's checkpoint and export are done before any rank tears the group down
        return status
    finally:
        if context.distributed and dist.is_initialized():
            dist.destroy_process_group()
