"""Validation: which metrics, on which items, with which seed, and the model-selection score.

``validation: {metrics: [...], select: si_sdri, subset: N, seed: S}`` in a config; ``null`` values
take the model's ``validation_defaults`` (a dict a model class may define, e.g. a sampler's
``{"subset": 8}``) and then the task's defaults: SI-SDR, SI-SDRi and the mixture's SI-SDR for
enhancement-like tasks and separation (best permutation), and for ``aec`` SI-SDR(i) over the items
with near-end speech plus ERLE over far-end single talk. Every item runs under
``torch.manual_seed(seed + index)`` inside :func:`torch.random.fork_rng`, so a sampling model scores
repeatably and the training RNG stream is untouched. The logged ``loss`` is always included.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from recipes.training.distributed import DistributedContext
from recipes.training.objectives import Objective
from speechkit.errors import ConfigError
from speechkit.tasks import Task

#: per-item metrics of enhancement-like tasks and separation (``*i`` = improvement over the mixture)
SIGNAL_METRICS = ("si_sdr", "si_sdri", "mixture_si_sdr", "snr", "snri", "mixture_snr", "level_db", "pesq", "stoi")
#: metrics of the ``aec`` task
AEC_METRICS = (
    "si_sdr", "si_sdri", "mixture_si_sdr", "erle", "near_end_items", "far_end_items", "pesq_double_talk",
    "double_talk_items",
)
#: the default ``aec`` metrics (``pesq_double_talk`` costs about 0.2 s per double-talk item)
AEC_DEFAULT_METRICS = AEC_METRICS[:6]
#: metrics where lower is better (the selection score is negated)
LOWER_IS_BETTER = frozenset({"loss"})


@dataclasses.dataclass(frozen=True)
class ValidationSpec:
    """Resolved validation settings (see the module docstring)."""

    task: str
    metrics: tuple[str, ...]
    select: str = "si_sdri"
    subset: int | None = None
    seed: int = 0

    def indices(self, length: int) -> list[int]:
        """The validation items: all, or ``subset`` of them drawn with ``seed`` (in set order)."""
        if self.subset is None or self.subset >= length:
            return list(range(length))
        generator = torch.Generator().manual_seed(self.seed)
        return sorted(torch.randperm(length, generator=generator)[: self.subset].tolist())

    def score(self, scores: Mapping[str, float]) -> float:
        """The model-selection score of a validation (higher is better)."""
        value = float(scores[self.select])
        return -value if self.select in LOWER_IS_BETTER else value


def validation_spec(config: Mapping[str, Any], model: torch.nn.Module | None = None) -> ValidationSpec:
    """Resolve ``config["validation"]`` over the model's ``validation_defaults`` and the task's."""
    task = str(config["task"])
    values = dict(getattr(model, "validation_defaults", None) or {})
    values.update({key: value for key, value in dict(config.get("validation") or {}).items() if value is not None})
    known = AEC_METRICS if task == Task.AEC else SIGNAL_METRICS
    default = AEC_DEFAULT_METRICS if task == Task.AEC else ("si_sdr", "si_sdri", "mixture_si_sdr")
    metrics = tuple(values.get("metrics") or default)
    unknown = [name for name in metrics if name not in known]
    if unknown:
        raise ConfigError(f"unknown validation metrics {unknown} for task {task!r} (known: {', '.join(known)})")
    # echo cancellation selects on the loss: its mean near-end SI-SDR is dominated by noise-free
    # near-end single talk, where a pass-through scores ~64 dB and any inaudible change "loses"
    select = str(values.get("select") or ("loss" if task == Task.AEC else "si_sdri"))
    if select not in metrics and select != "loss":
        raise ConfigError(f"validation.select {select!r} must be one of the validation metrics or 'loss'")
    subset = values.get("subset")
    if subset is not None and int(subset) < 1:
        raise ConfigError("validation.subset must be positive (or null for the whole set)")
    return ValidationSpec(task, metrics, select, None if subset is None else int(subset), int(values.get("seed") or 0))


@torch.no_grad()
def validation_scores(estimate: torch.Tensor, targets: torch.Tensor, mixture: torch.Tensor, task: str) -> tuple[float, float]:
    """``(SI-SDR, SI-SDR of the unprocessed mixture)`` in dB, mean over sources and channels.

    ``estimate``/``targets`` ``[1, S, C, T]``; ``mixture [1, C_in, T]`` (its first ``C`` channels
    are the reference input). Separation picks the best permutation.
    """
    from speechkit import metrics

    channels = targets.shape[2]
    reference_input = mixture[:, :channels].unsqueeze(1).expand_as(targets)  # [1, C, T] -> [1, S, C, T]
    if task == Task.SEPARATION:
        estimate = metrics.best_permutation(estimate, targets)
    score = metrics.si_sdr(estimate, targets).mean().item()
    baseline = metrics.si_sdr(reference_input, targets).mean().item()
    return score, baseline


def _base_metrics(spec: ValidationSpec) -> list[str]:
    """The per-item quantities summed over the set (improvements are derived from the means)."""
    needed = []
    for name in spec.metrics:
        for base in {"si_sdri": ("si_sdr", "mixture_si_sdr"), "snri": ("snr", "mixture_snr")}.get(name, (name,)):
            if base not in needed:
                needed.append(base)
    return needed


def _item_metrics(
    names: Sequence[str], estimate: torch.Tensor, targets: torch.Tensor, mixture: torch.Tensor, task: str,
    sample_rate: int,
) -> list[float]:
    """The quantities ``names`` of one item (``[1, S, C, T]`` estimate/targets, ``[1, C_in, T]`` mixture)."""
    from speechkit import metrics

    if task == Task.SEPARATION:
        estimate = metrics.best_permutation(estimate, targets)
    reference_input = mixture[:, : targets.shape[2]].unsqueeze(1).expand_as(targets)  # [1, C, T] -> [1, S, C, T]
    pairs = list(zip(estimate.reshape(-1, estimate.shape[-1]).cpu(), targets.reshape(-1, targets.shape[-1]).cpu()))
    values = []
    for name in names:
        if name == "si_sdr":
            values.append(metrics.si_sdr(estimate, targets).mean().item())
        elif name == "mixture_si_sdr":
            values.append(metrics.si_sdr(reference_input, targets).mean().item())
        elif name == "snr":
            values.append(metrics.snr(estimate, targets).mean().item())
        elif name == "mixture_snr":
            values.append(metrics.snr(reference_input, targets).mean().item())
        elif name == "level_db":  # the estimate's level against the target's (SI-SDR leaves it free)
            values.append(metrics.relative_level_db(estimate, targets).mean().item())
        elif name == "pesq":
            values.append(sum(metrics.pesq(est, ref, sample_rate) for est, ref in pairs) / len(pairs))
        elif name == "stoi":
            values.append(sum(metrics.stoi(est, ref, sample_rate) for est, ref in pairs) / len(pairs))
    return values


def _item(dataset: Dataset, index: int, device: torch.device) -> dict[str, Any]:
    """Item ``index`` as a batch of one on ``device`` (mixture ``[1, C_in, T]``, targets ``[1, S, C, T]``)."""
    item = dataset[index]
    keys = [key for key in ("mixture", "targets", "echo") if key in item]
    return {key: torch.as_tensor(item[key]).unsqueeze(0).to(device) for key in keys}


@contextlib.contextmanager
def _seeded(spec: ValidationSpec, index: int, device: torch.device) -> Iterator[None]:
    """Run with the RNGs (CPU and the validation's CUDA device) seeded for item ``index``, then restored."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(spec.seed + index)
        yield


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, dataset: Dataset, objective: Objective, spec: ValidationSpec, context: DistributedContext,
) -> dict[str, float]:
    """Mean validation metrics and loss over the spec's items of ``dataset`` (sharded over ranks)."""
    if spec.task == Task.AEC:
        return _evaluate_aec(model, dataset, objective, spec, context)
    names = _base_metrics(spec)
    sample_rate = int(getattr(model, "sample_rate", 16000))
    totals = torch.zeros(len(names) + 2, dtype=torch.float64)  # base metrics, loss, items
    for index in spec.indices(len(dataset))[context.rank :: context.world_size]:
        batch = _item(dataset, index, context.device)
        with _seeded(spec, index, context.device):
            estimate = model(batch["mixture"])  # [1, C_in, T] -> [1, S, C, T]
            values = _item_metrics(names, estimate, batch["targets"], batch["mixture"], spec.task, sample_rate)
            loss = float(objective.validation_loss(model, estimate, batch))
        totals += torch.tensor([*values, loss, 1.0], dtype=torch.float64)
    if context.distributed:
        dist.all_reduce(totals)
    count = max(1.0, float(totals[-1]))
    means = {name: float(totals[position]) / count for position, name in enumerate(names)}
    means["si_sdri"] = means.get("si_sdr", math.nan) - means.get("mixture_si_sdr", math.nan)
    means["snri"] = means.get("snr", math.nan) - means.get("mixture_snr", math.nan)
    return {**{name: means[name] for name in spec.metrics}, "loss": float(totals[-2]) / count}


def _evaluate_aec(
    model: torch.nn.Module, dataset: Dataset, objective: Objective, spec: ValidationSpec, context: DistributedContext,
) -> dict[str, float]:
    """Echo-cancellation validation: SI-SDR(i) on items with near-end speech, ERLE on far-end single talk.

    ``si_sdri`` is 0 when the set holds no near-end item; ``erle`` is NaN when it holds no far-end
    single-talk item. ``pesq_double_talk`` (when asked for) is the mean PESQ-WB of the near-end
    estimate over the double-talk items (near-end speech and an ``"echo"`` entry with energy),
    leaving out the items where PESQ finds no utterance; NaN without such items.
    """
    from speechkit import metrics

    with_pesq = "pesq_double_talk" in spec.metrics
    sample_rate = int(getattr(model, "sample_rate", 16000))
    # near-end SI-SDR, mixture SI-SDR, near-end items, ERLE, far-end items, loss, items, DT PESQ, DT items
    totals = torch.zeros(9, dtype=torch.float64)
    for index in spec.indices(len(dataset))[context.rank :: context.world_size]:
        batch = _item(dataset, index, context.device)
        mixture, targets = batch["mixture"], batch["targets"]  # [1, 2, T], [1, 1, 1, T]
        with _seeded(spec, index, context.device):
            estimate = model(mixture)  # [1, 2, T] -> [1, 1, 1, T]
            loss = float(objective.validation_loss(model, estimate, batch))
        if float(targets.abs().max()) > 0.0:
            score, baseline = validation_scores(estimate, targets, mixture, "aec")
            totals += torch.tensor([score, baseline, 1.0, 0.0, 0.0, loss, 1.0, 0.0, 0.0], dtype=torch.float64)
            if with_pesq and "echo" in batch and float(batch["echo"].abs().max()) > 0.0:
                quality = metrics.pesq(estimate.reshape(-1).cpu(), targets.reshape(-1).cpu(), sample_rate)
                if not math.isnan(quality):
                    totals[7:] += torch.tensor([quality, 1.0], dtype=torch.float64)
        else:
            erle = metrics.erle(mixture[0, 0].cpu(), estimate.reshape(-1).cpu())
            totals += torch.tensor([0.0, 0.0, 0.0, erle, 1.0, loss, 1.0, 0.0, 0.0], dtype=torch.float64)
    if context.distributed:
        dist.all_reduce(totals)
    near_items, far_items, items, double_talk_items = (float(totals[index]) for index in (2, 4, 6, 8))
    si_sdr = float(totals[0]) / near_items if near_items else 0.0
    baseline = float(totals[1]) / near_items if near_items else 0.0
    scores = {
        "si_sdr": si_sdr,
        "si_sdri": si_sdr - baseline,
        "mixture_si_sdr": baseline,
        "erle": float(totals[3]) / far_items if far_items else math.nan,
        "near_end_items": near_items,
        "far_end_items": far_items,
        "pesq_double_talk": float(totals[7]) / double_talk_items if double_talk_items else math.nan,
        "double_talk_items": double_talk_items,
    }
    return {**{name: scores[name] for name in spec.metrics}, "loss": float(totals[5]) / max(1.0, items)}
