"""ONNX Runtime verification and atomic publication of the graphs :mod:`speechkit.export` writes.

An export is written into a temporary sibling of its destination (:func:`staged`) under
:func:`tracing` (tracing warnings silenced, exporter errors turned into one-line
:class:`~speechkit.export.ExportError`), run with ONNX Runtime (:func:`ort_session`) against
PyTorch on random input (:func:`verify_streaming`, :func:`verify_chunk`; the error measure is
:func:`relative_error`), and only moved to its destination by :func:`publish_verified` when the
error is within the tolerance, with the verification recorded in its metadata. Golden data goes to
:func:`golden_path`. Used by :func:`speechkit.export.export_onnx` and
:func:`speechkit.export_sampler.export_score_network`.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._files import publish, temporary_sibling
from ._optional import require
from .errors import OutputExistsError
from .export import ExportError, ExportVerificationError, write_onnx_metadata
from .models.base import SpeechModel


def golden_path(path: Path, overwrite: bool) -> Path:
    """``<stem>.golden.npz`` beside ``path``; refuses when either file exists and not ``overwrite``."""
    golden = path.with_name(path.stem + ".golden.npz")
    for target in (path, golden):
        if target.exists() and not overwrite:
            raise OutputExistsError(f"{target} exists; pass overwrite=True (--force) to replace it")
    return golden


@contextlib.contextmanager
def staged(path: Path) -> Iterator[str]:
    """A temporary sibling of ``path`` (its folder created) to export into; removed unless published."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = temporary_sibling(path)
    try:
        yield tmp_name
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


@contextlib.contextmanager
def tracing(what: str) -> Iterator[None]:
    """A ``torch.onnx.export`` of ``what`` without tracing warnings; its errors become one-line :class:`ExportError`."""
    try:
        with warnings.catch_warnings():
            # tracing warnings about Python control flow on shapes: the numerical check afterwards decides
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Constant folding")
            warnings.filterwarnings("ignore", category=DeprecationWarning)  # the legacy exporter, on purpose
            yield
    except (RuntimeError, TypeError, ValueError) as error:  # torch.onnx errors are RuntimeErrors
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"torch.onnx cannot export {what}: {first_line}") from error


def publish_verified(
    tmp_name: str, path: Path, metadata: dict[str, Any], what: str, error: float, tolerance: float, **facts: Any
) -> None:
    """Refuse the ``what`` export if ``error > tolerance``, else record the verification and move it to ``path``.

    ``metadata["verification"]`` holds ``max_abs_error``, ``tolerance`` and ``facts`` (e.g. the seed).
    Raises :class:`ExportVerificationError` when the error is above the tolerance.
    """
    if error > tolerance:
        raise ExportVerificationError(
            f"ONNX Runtime differs from PyTorch by {error:.3g} (relative max), above the tolerance "
            f"{tolerance:.3g}; the {what} is not faithful"
        )
    metadata["verification"] = {"max_abs_error": error, "tolerance": tolerance, **facts}
    write_onnx_metadata(tmp_name, metadata)
    publish(tmp_name, path)


def ort_session(target: str) -> Any:
    """A single-threaded CPU ONNX Runtime session of the graph file ``target``."""
    ort = require("onnxruntime", "onnx", "verifying the ONNX export")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(target, options, providers=["CPUExecutionProvider"])


def relative_error(ort_value: np.ndarray, reference: np.ndarray) -> float:
    """``max|ort_value - reference| / max(1, max|reference|)`` (0 for empty arrays)."""
    if reference.size == 0:
        return 0.0
    scale = max(1.0, float(np.max(np.abs(reference))))
    return float(np.max(np.abs(ort_value - reference))) / scale


def verify_streaming(
    model: SpeechModel,
    target: str,
    metadata: dict[str, Any],
    steps: int,
    generator: torch.Generator,
) -> tuple[dict[str, np.ndarray], float]:
    """Run the step graph ``target`` and ``model.forward_step`` for ``steps`` consecutive random blocks.

    States are carried between steps on both sides; returns the golden arrays (``x`` [steps, 1,
    C_in, hop], ``y`` [steps, 1, S, C_out, hop]) and the worst :func:`relative_error` over outputs
    and states.
    """
    session = ort_session(target)
    input_names = metadata["input_names"]
    x_steps = 0.5 * torch.randn(steps, *metadata["input_shape"], generator=generator)  # [steps, 1, C_in, hop]
    torch_state = model.initial_state(1)
    ort_state = [tensor.numpy().copy() for tensor in torch_state]
    worst = 0.0
    outputs = []
    for step in range(steps):
        y_torch, torch_state = model.forward_step(x_steps[step], torch_state)
        feeds = {name: value for name, value in zip(input_names, [x_steps[step].numpy(), *ort_state])}
        y_ort, *ort_state = session.run(None, feeds)
        worst = max(worst, relative_error(y_ort, y_torch.numpy()))
        for ort_value, torch_value in zip(ort_state, torch_state):
            worst = max(worst, relative_error(ort_value, torch_value.numpy()))
        outputs.append(y_torch.numpy())
    golden = {"x": x_steps.numpy(), "y": np.stack(outputs)}  # x [steps, 1, C_in, hop], y [steps, 1, S, C_out, hop]
    return golden, worst


def verify_chunk(
    model: SpeechModel, target: str, lengths: Sequence[int], generator: torch.Generator
) -> tuple[dict[str, np.ndarray], float]:
    """Run the chunk graph ``target`` and ``model`` on random input of each of ``lengths``.

    Returns the golden arrays (``x_i``, ``y_i``) and the worst :func:`relative_error`; raises
    :class:`ExportVerificationError` when the output shapes differ.
    """
    session = ort_session(target)
    worst = 0.0
    golden: dict[str, np.ndarray] = {}
    for index, length in enumerate(lengths):
        x = 0.5 * torch.randn(1, model.num_input_channels, int(length), generator=generator)
        y_torch = model(x).numpy()
        (y_ort,) = session.run(None, {"x": x.numpy()})
        if y_ort.shape != y_torch.shape:
            raise ExportVerificationError(
                f"ONNX output shape {y_ort.shape} differs from PyTorch {y_torch.shape} at length {length}"
            )
        worst = max(worst, relative_error(y_ort, y_torch))
        golden[f"x_{index}"] = x.numpy()
        golden[f"y_{index}"] = y_torch
    return golden, worst
