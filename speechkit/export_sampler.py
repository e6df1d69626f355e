"""ONNX export of the score network of an iterative sampler model (``mode = "sampler"``), verified.

The graph is ``(x[1, C, T], condition[1, C, T], t[1]) -> score[1, C, T]`` with the diffusion time
``t`` an explicit input and no random operation inside; the sampler loop (``realtime.sampler``)
draws the noise outside the graph and reads its schedule from the ``schedule`` metadata entry
(:data:`speechkit.export.SAMPLER_SCHEDULE_KEYS`). :func:`speechkit.export.export_onnx` calls
:func:`export_score_network` for sampler models that provide a score network; it is also
importable from :mod:`speechkit.export`.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from . import onnx_verify
from ._optional import require
from ._version import __version__
from .export import OPSET, ExportError, ExportResult, chunk_window, inference_mode
from .models.base import SpeechModel, config_to_dict


def export_score_network(
    model: SpeechModel,
    path: str | os.PathLike,
    *,
    frames: Sequence[int] | None = None,
    tolerance: float = 1e-4,
    seed: int = 0,
    overwrite: bool = False,
    chunk_seconds: float | None = None,
    overlap_seconds: float | None = None,
) -> ExportResult:
    """Export the score network of a ``mode = "sampler"`` model, verified with ONNX Runtime.

    The model provides ``score_network()`` (a module ``(x, condition, t) -> score`` with real
    inputs, ``t [1]`` explicit and no random op), ``score_network_inputs(frames, generator)``
    (example inputs with ``frames`` on the last, dynamic axis) and ``sampler_schedule()`` (the
    :mod:`realtime.sampler` schedule of its current options). The graph is compared with PyTorch at
    each length of ``frames`` (default: the model's ``score_network_frames``); metadata:
    ``mode = "sampler"``, ``graph_kind = "score"``, the ``schedule`` and ``score_domain`` (what
    ``x`` is, e.g. a compressed spectrum, so that a runtime applies the right transform), and the
    realtime window (``chunk_seconds`` / ``overlap_seconds``, default the model's declared chunks)
    on which ``realtime.chunk`` runs the sampler live.
    """
    require("onnx", "onnx", "ONNX export")
    path = Path(path)
    golden_path = onnx_verify.golden_path(path, overwrite)
    if inference_mode(model) != "sampler" or not callable(getattr(model, "score_network", None)):
        raise ExportError(f"{model.name} is not a sampler model with a score network")
    model.eval()
    network = model.score_network().eval()
    lengths = list(frames or model.score_network_frames)
    generator = torch.Generator().manual_seed(seed)
    names, output_names = ["x", "condition", "t"], ["score"]
    example = model.score_network_inputs(lengths[0], generator)
    last = example[0].dim() - 1
    dynamic = {name: {last: "frames"} for name in ("x", "condition", "score")}
    metadata = {
        "speechkit_format": "speechkit-onnx/1", "speechkit_version": __version__, "model_name": model.name,
        "task": model.task, "graph_kind": "score", "mode": "sampler",
        "schedule": model.sampler_schedule(), "sample_rate": model.sample_rate,
        "frontend": model.frontend_spec.to_dict(), "input_layout": model.input_layout.to_dict(),
        "inference": model.inference_spec.to_dict(), "input_names": names, "output_names": output_names,
        "input_shape": [*example[0].shape[:-1], "frames"], "output_shape": [*example[0].shape[:-1], "frames"],
        "num_input_channels": model.num_input_channels, "num_sources": model.num_sources,
        "num_output_channels": model.num_output_channels, "config": config_to_dict(model.config),
        "ort_graph_optimization": model.onnx_graph_optimization, "score_domain": model.score_domain,
    }
    spec = model.inference_spec
    chunk_length, overlap_length = chunk_window(model.sample_rate, chunk_seconds or spec.chunk_seconds,
                                                overlap_seconds if overlap_seconds is not None else spec.overlap_seconds)
    metadata.update({"chunk_length": chunk_length, "overlap_length": overlap_length,
                     "hop_length": chunk_length - overlap_length, "stream_delay": overlap_length,
                     "lookahead": overlap_length, "algorithmic_latency": chunk_length})
    with onnx_verify.staged(path) as tmp_name:
        with torch.no_grad():
            with onnx_verify.tracing(f"the score network of {model.name}"):
                torch.onnx.export(network, example, tmp_name, dynamo=False, opset_version=OPSET,
                                  input_names=names, output_names=output_names, dynamic_axes=dynamic,
                                  do_constant_folding=True)
            session = onnx_verify.ort_session(tmp_name)
            worst, golden = 0.0, {}
            for index, length in enumerate(lengths):
                inputs = example if index == 0 else model.score_network_inputs(length, generator)
                reference = network(*inputs).numpy()
                (output,) = session.run(None, {name: tensor.numpy() for name, tensor in zip(names, inputs)})
                worst = max(worst, onnx_verify.relative_error(output, reference))
                golden.update({f"{name}_{index}": tensor.numpy() for name, tensor in zip(names, inputs)})
                golden[f"score_{index}"] = reference
        onnx_verify.publish_verified(tmp_name, path, metadata, f"score network export of {model.name}", worst,
                                     tolerance, seed=seed, frames=lengths)
    np.savez(golden_path, tolerance=np.float64(tolerance), **golden)
    return ExportResult(path, golden_path, False, metadata, worst, tolerance)
