"""What the checkpoint converters share: reading a foreign file with ``torch.load(weights_only=True)``
and finishing a converted model (load, eval mode, optional save with provenance).

The key checks (missing, unexpected, mis-shaped tensors) are
:func:`speechkit.checkpoint.key_mismatches` and :func:`speechkit.checkpoint.mismatch_problems`.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..checkpoint import save_checkpoint
from ..errors import CheckpointError
from ..models.base import SpeechModel

ModelT = TypeVar("ModelT", bound=SpeechModel)


def load_error_cause(error: Exception) -> str:
    """The line of a ``torch.load`` error that names the problem (e.g. the refused class)."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        cause = " ".join(text.split(marker, 1)[1].split())  # the cause may start on the next line
        return cause.split(" Please use ", 1)[0].split(" Check the documentation", 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _torch_load(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


def load_weights_only(path: Path, load: Callable[[Path], Any] | None = None, hint: str = "") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU (or ``load(path)``), else a one-line error.

    Args:
        path: the file to read.
        load: a loader to use instead (e.g. one that allow-lists a class or memory-maps the file).
        hint: text appended to the error message (e.g. ``"; speechkit allows no extra classes"``).

    Raises:
        CheckpointError: the file does not load; the message names the cause (:func:`load_error_cause`).
    """
    try:
        return (load or _torch_load)(path)
    except Exception as error:  # torch raises many types (UnpicklingError, RuntimeError, ...)
        raise CheckpointError(
            f"{path} is not a torch checkpoint loadable with weights_only=True ({load_error_cause(error)}){hint}"
        ) from error


def finish_conversion(
    model: ModelT,
    state: Mapping[str, torch.Tensor],
    out_path: str | os.PathLike | None,
    overwrite: bool,
    provenance: Mapping[str, Any],
) -> ModelT:
    """Load the converted ``state`` into ``model`` (strictly), put it in eval mode and return it.

    With ``out_path``, also save it there as a speechkit checkpoint with ``provenance`` (JSON-ready
    facts about the source file; ``overwrite`` replaces an existing file).
    """
    model.load_state_dict(state, strict=True)
    model.eval()
    if out_path is not None:
        save_checkpoint(model, out_path, provenance=dict(provenance), overwrite=overwrite)
    return model


__all__ = ["finish_conversion", "load_error_cause", "load_weights_only"]
