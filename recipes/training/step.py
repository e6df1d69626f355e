"""One training step's machinery: the loss module DDP wraps, mixed precision, micro-batches, and
activation checkpointing."""
from __future__ import annotations

import contextlib
import types
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from recipes.training.objectives import Objective
from speechkit.errors import ConfigError


class TrainingStep(torch.nn.Module):
    """``forward(batch) -> loss``: the model's own ``training_step(batch, objective)`` when it has
    one, else ``objective.training_loss(model, batch)``.

    DistributedDataParallel wraps this module (not the bare model), so whatever the objective or the
    model's step calls (``forward(..., return_echo=True)``, ``perturb``/``score``) happens inside
    DDP's forward and the gradients are all-reduced. Its state dict is the model's under ``model.``;
    the trainer saves ``model.state_dict()`` itself.
    """

    def __init__(self, model: torch.nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The scalar training loss of ``batch`` (tensors already on the model's device)."""
        step = getattr(self.model, "training_step", None)
        if callable(step):
            return step(batch, self.objective)
        return self.objective.training_loss(self.model, batch)


def autocast_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast for ``precision``: bf16 on CPU or CUDA, fp16 on CUDA; fp32 runs without autocast."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        if device.type != "cuda":
            raise ConfigError("precision fp16 needs CUDA; use bf16 on a CPU")
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    raise ConfigError(f"unknown precision {precision!r}")


def make_grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A :class:`torch.amp.GradScaler` for fp16 on CUDA (None otherwise: bf16 needs no loss scaling)."""
    if precision != "fp16":
        return None
    if device.type != "cuda":
        raise ConfigError("precision fp16 needs CUDA; use bf16 on a CPU")
    return torch.amp.GradScaler("cuda")


def split_batch(batch: Mapping[str, Any], parts: int) -> list[dict[str, Any]]:
    """Split a collated batch into ``parts`` micro-batches along the first axis (sizes differ by at
    most one). Tensors and lists are split; other values are shared."""
    size = next(len(value) for value in batch.values() if isinstance(value, (torch.Tensor, list)))
    if parts > size:
        raise ConfigError(f"cannot split a batch of {size} items into {parts} micro-batches (accumulate_steps)")
    bounds = [size * index // parts for index in range(parts + 1)]
    micro = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        micro.append(
            {key: value[start:stop] if isinstance(value, (torch.Tensor, list)) else value for key, value in batch.items()}
        )
    return micro


def batch_to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """The tensors of ``batch`` moved to ``device`` (other values unchanged)."""
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def batch_items(batch: Mapping[str, Any]) -> int:
    """Number of items in a collated batch (the first tensor's or list's length)."""
    return next(len(value) for value in batch.values() if isinstance(value, (torch.Tensor, list)))


def _checkpointed_forward(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
    """The class ``forward``, recomputed in backward (non-reentrant) while training with gradients."""
    forward = type(self).forward
    if self.training and torch.is_grad_enabled():
        return checkpoint(forward, self, *args, use_reentrant=False, **kwargs)
    return forward(self, *args, **kwargs)


def enable_activation_checkpointing(model: torch.nn.Module) -> list[str]:
    """Recompute the activations of ``model.checkpoint_modules()`` (default: its top-level children)
    in the backward pass instead of storing them; returns the wrapped modules' names.

    The wrap is an instance-level ``forward`` (state-dict keys are unchanged; a deep copy stays
    wrapped around itself); evaluation and ``torch.no_grad`` run the plain forward.
    """
    chooser = getattr(model, "checkpoint_modules", None)
    modules = list(chooser()) if callable(chooser) else [module for _, module in model.named_children()]
    names = {id(module): name for name, module in model.named_modules()}
    wrapped = []
    for module in modules:
        module.forward = types.MethodType(_checkpointed_forward, module)
        wrapped.append(names.get(id(module), type(module).__name__))
    return wrapped
