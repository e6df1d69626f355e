"""Optimiser by name, learning-rate schedule (warm-up, cosine, plateau), the flat-validation stop and the
weight EMA."""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from speechkit.errors import ConfigError

#: ``optim.name`` values and their classes
OPTIMIZERS: Mapping[str, type[torch.optim.Optimizer]] = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}

#: ``schedule.name`` values
SCHEDULES = ("plateau", "cosine", "constant")


def build_optimizer(parameters: Iterable[torch.nn.Parameter], optim: Mapping[str, Any]) -> torch.optim.Optimizer:
    """The optimiser ``optim["name"]`` (``adam``/``adamw``) with ``lr``, ``betas`` and ``weight_decay``."""
    name = str(optim.get("name", "adam")).lower()
    if name not in OPTIMIZERS:
        raise ConfigError(f"optim.name must be one of {', '.join(OPTIMIZERS)}, not {name!r}")
    return OPTIMIZERS[name](
        parameters,
        lr=float(optim["lr"]),
        betas=tuple(float(beta) for beta in optim["betas"]),
        weight_decay=float(optim["weight_decay"]),
    )


class FlatValidationStop:
    """Decides when validation has flattened: ``patience`` validations in a row without a gain of more
    than ``min_delta`` over the best score (higher is better) so far.

    Only a gain above ``min_delta`` resets the count and moves the reference, so a slow creep of
    0.01 dB per validation still counts as flat with ``min_delta = 0.05``. ``patience=None`` never stops.
    The trainer's ``early_stop`` is one; :class:`LearningRateController` keeps another for its plateaus.
    """

    def __init__(self, patience: int | None = None, min_delta: float = 0.0) -> None:
        self.patience = None if patience is None else int(patience)
        self.min_delta = float(min_delta)
        self.reference = -math.inf
        self.flat_validations = 0

    @property
    def flat(self) -> bool:
        """True once ``patience`` validations in a row gained at most ``min_delta``."""
        return self.patience is not None and self.flat_validations >= self.patience

    def report_validation(self, score: float) -> bool:
        """Record a validation score; returns :attr:`flat`."""
        if score > self.reference + self.min_delta:
            self.reference = score
            self.flat_validations = 0
        else:
            self.flat_validations += 1
        return self.flat

    def restart_count(self) -> None:
        """Count flat validations from zero again, keeping the reference (after acting on a plateau)."""
        self.flat_validations = 0

    def state_dict(self) -> dict[str, Any]:
        """Plain-value state for checkpoints."""
        return {"reference": self.reference, "flat_validations": self.flat_validations}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.reference = float(state["reference"])
        self.flat_validations = int(state["flat_validations"])


class LearningRateController:
    """Warm-up, optional cosine decay, and halving on validation plateaus, in one resumable object.

    ``lr(step) = base_lr * warmup(step) * cosine(step) * plateau_scale``, floored at ``min_lr``
    once a plateau reduction happened. ``schedule["name"]``: ``"plateau"`` (the default: cosine
    only with ``cosine: true``), ``"cosine"`` (warm-up then cosine decay, no plateau reduction) or
    ``"constant"`` (warm-up then constant, no plateau reduction).
    """

    def __init__(self, base_lr: float, max_steps: int, schedule: Mapping[str, Any]) -> None:
        name = schedule.get("name", "plateau")
        if name not in SCHEDULES:
            raise ConfigError(f"schedule.name must be one of {', '.join(SCHEDULES)}, not {name!r}")
        self.base_lr = float(base_lr)
        self.max_steps = int(max_steps)
        self.warmup_steps = int(schedule["warmup_steps"])
        self.cosine = bool(schedule["cosine"]) or name == "cosine"
        self.min_lr_ratio = float(schedule["min_lr_ratio"])
        self.plateau_factor = float(schedule["plateau_factor"]) if name == "plateau" else 1.0
        self.min_lr = float(schedule["min_lr"])
        self.plateau_scale = 1.0
        # a plateau: plateau_patience validations without a gain above plateau_threshold
        self.plateau = FlatValidationStop(int(schedule["plateau_patience"]), float(schedule["plateau_threshold"]))

    @property
    def best(self) -> float:
        """The best score so far that counted as an improvement."""
        return self.plateau.reference

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
        """Record a validation score (higher is better); returns True when the lr was reduced.

        Only a score above ``best + plateau_threshold`` counts as an improvement (and becomes the new
        best), so a slow creep below the threshold ends in a reduction as a stall does.
        """
        if self.plateau.report_validation(score) and self.plateau_factor < 1.0:
            self.plateau_scale *= self.plateau_factor
            self.plateau.restart_count()
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        """Plain-value state for checkpoints."""
        return {"plateau_scale": self.plateau_scale, "best": self.plateau.reference,
                "bad_validations": self.plateau.flat_validations}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.plateau_scale = float(state["plateau_scale"])
        self.plateau.load_state_dict({"reference": state["best"], "flat_validations": state["bad_validations"]})


class ExponentialMovingAverage:
    """EMA of a model's floating-point parameters and buffers: ``ema = decay * ema + (1 - decay) * w``.

    With ``warmup`` the decay of the ``n``-th update is ``min(decay, (1 + n) / (10 + n))`` (the
    ``num_updates`` ramp of TensorFlow's ``ExponentialMovingAverage``): 0.92 after 100 updates, 0.991
    after 1,000, the full 0.999 from about 9,000 on. Without it, a 0.999 average still holds
    ``0.999 ** n`` of the initial weights (61 % after 500 updates, 22 % after 1,500), so the early
    validations of a short CPU run score mostly the initialisation.
    """

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = False) -> None:
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.shadow = {key: value.detach().clone() for key, value in model.state_dict().items()}

    def decay_at(self, updates: int) -> float:
        """The decay applied by the ``updates``-th update (counted from 1)."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + updates) / (10.0 + updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, updates: int | None = None) -> None:
        """Move the average towards the current weights of ``model``.

        ``updates`` is the number of optimiser updates so far, this one included (the training step);
        it sets the decay when ``warmup`` is on and is required then.
        """
        if self.warmup and updates is None:
            raise ValueError("an EMA with warm-up needs the update count")
        weight = 1.0 - self.decay_at(int(updates or 0))
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                self.shadow[key].lerp_(value.detach(), weight)
            else:
                self.shadow[key].copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged tensors (a state dict of the model)."""
        return self.shadow

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore averaged tensors."""
        for key, value in state.items():
            self.shadow[key].copy_(value)
