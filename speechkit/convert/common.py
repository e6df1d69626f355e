"""What the checkpoint converters share: reading a foreign file with ``torch.load(weights_only=True)``.

The key checks (missing, unexpected, mis-shaped tensors) are
:func:`speechkit.checkpoint.key_mismatches` and :func:`speechkit.checkpoint.mismatch_problems`.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError


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


__all__ = ["load_error_cause", "load_weights_only"]
