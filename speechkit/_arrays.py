"""Checks and conversions of in-memory audio (numpy arrays or torch tensors) for the Python API."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from .audio import SampleChecker
from .errors import AudioError
from .files import AudioWarning


def check_rate(sample_rate: Any, name: str) -> int:
    """``sample_rate`` as an int, or an :class:`AudioError` naming ``name`` unless it is a positive integer."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioError(f"{name} must be a positive integer, got {sample_rate!r}")
    return int(sample_rate)


def float_array(audio: np.ndarray | torch.Tensor) -> np.ndarray:
    """An array or tensor (any device) as a float32 numpy array of the same shape."""
    if isinstance(audio, torch.Tensor):
        return audio.detach().cpu().float().numpy()
    return np.asarray(audio, dtype=np.float32)


def like_input(output: np.ndarray, audio: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """``output`` as the same kind of array as the input ``audio`` (a tensor on its device, or numpy)."""
    if isinstance(audio, torch.Tensor):
        return torch.from_numpy(output).to(audio.device)
    return output


def check_samples(
    array: np.ndarray, sample_rate: int, name: str, repair_nonfinite: bool, stacklevel: int
) -> np.ndarray:
    """``array [C, T]`` through a :class:`SampleChecker`; its warnings are issued at ``stacklevel`` (from here)."""
    checker = SampleChecker(sample_rate, name, repair_nonfinite)
    array = checker.check(np.ascontiguousarray(array))
    for message in checker.warnings():
        warnings.warn(message, AudioWarning, stacklevel=stacklevel)
    return array


def mono_array(
    audio: np.ndarray | torch.Tensor, name: str, sample_rate: int, repair_nonfinite: bool, stacklevel: int = 5
) -> np.ndarray:
    """A ``[T]`` or ``[1, T]`` array or tensor as a checked float32 ``[T]`` numpy array (warnings at ``stacklevel``)."""
    array = float_array(audio)
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]  # [1, T] -> [T]
    if array.ndim != 1:
        raise AudioError(f"{name} must be mono audio of shape [T], got {tuple(array.shape)}")
    if array.shape[-1] == 0:
        raise AudioError(f"{name} contains no samples (zero length)")
    return check_samples(array[None], sample_rate, name, repair_nonfinite, stacklevel)[0]  # [1, T] -> [T]
