"""ONNX export of speechkit models, verified against PyTorch.

Two graph kinds:

* **streaming** (models with ``supports_streaming``): a fixed-shape one-block graph::

      (x[1, C_in, block_size], state_1, ..., state_k) -> (y[1, S, C_out, block_size], state_1_out, ..., state_k_out)

  with every state tensor an explicit input and output (named after ``model.state_names()``;
  outputs carry an ``_out`` suffix). The ``realtime`` engine runs this graph once per hop.
* **chunk** (any model): ``x[1, C_in, T] -> y[1, S, C_out, T]`` with a dynamic time axis T. Its
  metadata (``mode = "chunk"``) also declares the window the realtime engine slides over the
  signal: ``chunk_length`` N and ``overlap_length`` O samples, hop ``H = N - O`` (``O <= N / 2``).
  The engine runs the graph on the newest N input samples every H samples and joins the windows
  with the cross-fade of :mod:`speechkit.crossfade`; a run releases H output samples that trail
  the newest input by O (``stream_delay = lookahead = O``), so the algorithmic latency is
  ``H + O = N``, the window length: the first sample of a released block is only final once the
  window that cross-fades it with its predecessor has been computed, and that window ends N
  samples later. Compute time and device buffering come on top (the engine's ``buffering`` term).

Every export stores ``mode``: ``"stream"`` (step graph), ``"chunk"`` (whole-chunk graph) or, for
an iterative stochastic model, ``"sampler"``. A sampler export's graph is the score network
``(x[1, C, T], condition[1, C, T], t[1]) -> score[1, C, T]`` with the diffusion time ``t`` an
explicit input and no random operation inside; the sampler loop (``realtime.sampler``) draws the
noise outside the graph and reads its schedule from the ``schedule`` metadata entry
(:data:`SAMPLER_SCHEDULE_KEYS`). :func:`export_onnx` writes ``"stream"`` and ``"chunk"`` graphs,
and for a sampler model that provides a score network (e.g. SGMSE+, whose network works on
compressed spectra) :func:`export_score_network`'s graph (defined in :mod:`speechkit.export_sampler`,
importable from here); :func:`write_onnx_metadata` stamps any graph.

The legacy TorchScript exporter is used (``torch.onnx.export(dynamo=False)``, opset 17). After
export, ONNX Runtime is run against PyTorch on random input (several consecutive steps for
streaming graphs, two lengths for chunk graphs); the export fails with
:class:`ExportVerificationError` if the error exceeds the tolerance. Golden input/output arrays
(``<model>.golden.npz``) are written beside the model so a runtime can check itself later. The
verification and the atomic publication of a verified graph live in :mod:`speechkit.onnx_verify`.

Everything the runtime needs is stored in the ONNX ``metadata_props`` as JSON-encoded strings,
under the keys of :data:`METADATA_KEYS`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._optional import require
from ._version import __version__
from .errors import SpeechkitError
from .frontend.stft import ISTFT, STFT
from .models.base import SpeechModel, config_to_dict

#: ONNX opset used by every export
OPSET = 17
#: metadata_props keys written by :func:`export_onnx` (values are JSON strings)
METADATA_KEYS = (
    "speechkit_format",
    "speechkit_version",
    "model_name",
    "task",
    "graph_kind",
    "mode",
    "chunk_length",
    "overlap_length",
    "schedule",
    "sample_rate",
    "block_size",
    "hop_length",
    "frontend",
    "input_layout",
    "inference",
    "lookahead",
    "stream_delay",
    "algorithmic_latency",
    "model_block_size",
    "input_names",
    "output_names",
    "input_shape",
    "output_shape",
    "state_names",
    "state_shapes",
    "num_input_channels",
    "num_sources",
    "num_output_channels",
    "config",
    "ort_graph_optimization",
    "verification",
)
#: default window of a whole-chunk graph for the realtime engine, in seconds (its algorithmic latency)
DEFAULT_REALTIME_CHUNK_SECONDS = 1.0
#: default overlap of consecutive realtime windows, as a fraction of the window
DEFAULT_REALTIME_OVERLAP_FRACTION = 0.25
#: entries of the ``schedule`` metadata of a ``mode = "sampler"`` export (see ``realtime.sampler``)
SAMPLER_SCHEDULE_KEYS = ("sde", "sigma_min", "sigma_max", "num_steps", "corrector_steps", "snr", "t_eps", "start", "seed",
                         "theta", "corrector", "noise_std")


def __getattr__(name: str) -> Any:
    # export_score_network lives in speechkit.export_sampler, which imports this module: loaded on first use
    if name == "export_score_network":
        from .export_sampler import export_score_network

        return export_score_network
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ExportError(SpeechkitError):
    """A model cannot be exported to ONNX."""


class ExportVerificationError(ExportError):
    """ONNX Runtime disagrees with PyTorch on the exported graph beyond the tolerance."""


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and measured."""

    onnx_path: Path
    golden_path: Path
    streaming: bool
    metadata: dict[str, Any]
    max_abs_error: float
    tolerance: float


class _StepGraph(nn.Module):
    """``forward_step`` as a module with flat tensor inputs/outputs (what the exporter traces)."""

    def __init__(self, model: SpeechModel) -> None:
        super().__init__()
        self.model = model
        # a new module starts in training mode, and torch.onnx.export restores the mode of the module
        # it was given recursively: without this the wrapped model leaves the export in training mode
        # (batch norm then uses batch statistics in the verification and updates its running stats)
        self.train(model.training)

    def forward(self, x_block: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y_block, new_state = self.model.forward_step(x_block, list(state))
        return (y_block, *new_state)


def inference_mode(model: SpeechModel) -> str:
    """How ``model`` runs: its ``inference_spec.mode`` when it declares one, else ``"stream"`` for
    streaming models and ``"chunk"`` for the others."""
    spec = getattr(model, "inference_spec", None)
    if spec is not None:
        return str(spec.mode)
    return "stream" if model.supports_streaming else "chunk"


def chunk_window(
    sample_rate: int, chunk_seconds: float | None = None, overlap_seconds: float | None = None
) -> tuple[int, int]:
    """The realtime window ``(chunk_length, overlap_length)`` in samples of a whole-chunk graph.

    Defaults: :data:`DEFAULT_REALTIME_CHUNK_SECONDS` and :data:`DEFAULT_REALTIME_OVERLAP_FRACTION`
    of it. Raises :class:`ExportError` unless ``0 <= overlap <= chunk / 2`` and the chunk has at
    least two samples.
    """
    seconds = DEFAULT_REALTIME_CHUNK_SECONDS if chunk_seconds is None else float(chunk_seconds)
    chunk_length = int(round(seconds * sample_rate))
    if overlap_seconds is None:
        overlap_length = int(round(DEFAULT_REALTIME_OVERLAP_FRACTION * chunk_length))
    else:
        overlap_length = int(round(float(overlap_seconds) * sample_rate))
    if chunk_length < 2 or not 0 <= overlap_length <= chunk_length // 2:
        raise ExportError(
            f"a chunk window needs at least 2 samples and 0 <= overlap <= half of it, got "
            f"{chunk_length} and {overlap_length} samples"
        )
    return chunk_length, overlap_length


def export_metadata(
    model: SpeechModel,
    streaming: bool,
    hops_per_step: int = 1,
    chunk_length: int | None = None,
    overlap_length: int | None = None,
) -> dict[str, Any]:
    """The metadata an export of ``model`` carries (values JSON-serialisable, not yet encoded).

    A streaming graph consumes ``hops_per_step * model.block_size`` samples per run (for models
    whose ``forward_step`` accepts whole multiples of its block); its algorithmic latency is that
    block plus ``stream_delay``.

    ``lookahead`` is the model's ``lookahead`` attribute when it defines one, else its
    ``stream_delay`` (how far the offline output at time t may look past t), else 0.

    A chunk graph declares the realtime window (``chunk_length`` N, ``overlap_length`` O; default
    :func:`chunk_window`): hop ``N - O``, stream delay and lookahead O, algorithmic latency N (see
    the module docstring).
    """
    model.eval()
    num_input_channels = model.num_input_channels
    metadata: dict[str, Any] = {
        "speechkit_format": "speechkit-onnx/1",
        "speechkit_version": __version__,
        "model_name": model.name,
        "task": model.task,
        "graph_kind": "streaming" if streaming else "chunk",
        "mode": "stream" if streaming else "chunk",
        "chunk_length": None,
        "overlap_length": None,
        "schedule": None,
        "sample_rate": model.sample_rate,
        "frontend": model.frontend_spec.to_dict(),
        "input_layout": model.input_layout.to_dict(),
        "inference": model.inference_spec.to_dict(),
        "num_input_channels": num_input_channels,
        "num_sources": model.num_sources,
        "num_output_channels": model.num_output_channels,
        "config": config_to_dict(model.config),
        "ort_graph_optimization": model.onnx_graph_optimization,
        # echo cancellers with a linear stage: feed the far end this many samples ahead of the bulk delay
        "reference_lead": int(getattr(model, "reference_lead", 0)),
    }
    if streaming:
        if hops_per_step < 1:
            raise ExportError(f"hops_per_step must be at least 1, got {hops_per_step}")
        block_size = int(model.block_size) * int(hops_per_step)
        delay = int(model.stream_delay)
        state = model.initial_state(1)
        names = list(model.state_names())
        if len(names) != len(state):
            raise ExportError(
                f"{model.name} names {len(names)} states but initial_state returns {len(state)} tensors"
            )
        metadata.update(
            {
                "block_size": block_size,
                "hop_length": block_size,
                "stream_delay": delay,
                "lookahead": int(getattr(model, "lookahead", delay)),
                "algorithmic_latency": block_size + delay,
                "model_block_size": int(model.block_size),
                "input_names": ["x", *names],
                "output_names": ["y", *[f"{name}_out" for name in names]],
                "input_shape": [1, num_input_channels, block_size],
                "output_shape": [1, model.num_sources, model.num_output_channels, block_size],
                "state_names": names,
                "state_shapes": [list(tensor.shape) for tensor in state],
            }
        )
    else:
        if chunk_length is None or overlap_length is None:
            default_chunk, default_overlap = chunk_window(model.sample_rate)
            chunk_length = default_chunk if chunk_length is None else int(chunk_length)
            overlap_length = default_overlap if overlap_length is None else int(overlap_length)
        if chunk_length < 2 or not 0 <= overlap_length <= chunk_length // 2:
            raise ExportError(
                f"a chunk window needs at least 2 samples and 0 <= overlap <= half of it, got "
                f"{chunk_length} and {overlap_length} samples"
            )
        hop_length = chunk_length - overlap_length
        metadata.update(
            {
                "chunk_length": chunk_length,
                "overlap_length": overlap_length,
                "block_size": hop_length,
                "hop_length": hop_length,
                "stream_delay": overlap_length,
                "lookahead": overlap_length,
                "algorithmic_latency": chunk_length,
                "model_block_size": None,
                "input_names": ["x"],
                "output_names": ["y"],
                "input_shape": [1, num_input_channels, "time"],
                "output_shape": [1, model.num_sources, model.num_output_channels, "time"],
                "state_names": [],
                "state_shapes": [],
            }
        )
    return metadata


def export_onnx(
    model: SpeechModel,
    path: str | os.PathLike,
    *,
    streaming: bool | None = None,
    hops_per_step: int = 1,
    tolerance: float = 1e-4,
    verify_steps: int = 16,
    chunk_lengths: Sequence[int] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    chunk_seconds: float | None = None,
    overlap_seconds: float | None = None,
) -> ExportResult:
    """Export ``model`` to ONNX at ``path``, verify it with ONNX Runtime and save golden data.

    Args:
        model: the model (put in eval mode; weights are not changed).
        path: destination ``.onnx`` file; golden data goes to ``<stem>.golden.npz`` beside it.
        streaming: export the one-block step graph (default: when the model supports streaming).
        hops_per_step: model blocks per graph run (fewer, larger runs: less overhead, more latency).
        tolerance: largest allowed ``max|ort - torch| / max(1, max|torch|)`` over outputs and states.
        verify_steps: consecutive streaming steps compared (states carried between steps).
        chunk_lengths: input lengths compared for chunk graphs (default: the realtime window and 0.37 s).
        seed: seed of the random verification input (fixed inputs: the check is repeatable).
        overwrite: replace existing files.
        chunk_seconds: realtime window of a chunk graph (default :data:`DEFAULT_REALTIME_CHUNK_SECONDS`).
        overlap_seconds: overlap of consecutive realtime windows (default a quarter of the window).

    Raises:
        ExportVerificationError: ONNX Runtime and PyTorch disagree beyond ``tolerance``.
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    onnx = require("onnx", "onnx", "ONNX export")
    from . import onnx_verify  # imports this module: a function-level import keeps the dependency one-way

    path = Path(path)
    golden_path = onnx_verify.golden_path(path, overwrite)
    mode = inference_mode(model)
    if mode == "sampler" and callable(getattr(model, "score_network", None)) and not streaming:
        from .export_sampler import export_score_network

        return export_score_network(model, path, tolerance=tolerance, seed=seed, overwrite=overwrite,
                                    chunk_seconds=chunk_seconds, overlap_seconds=overlap_seconds)
    if mode == "sampler":
        raise ExportError(
            f"{model.name} is an iterative sampler; export its score network and stamp it with "
            "write_onnx_metadata (mode 'sampler')"
        )
    if streaming is None:
        streaming = mode == "stream" and chunk_seconds is None
    if streaming and not model.supports_streaming:
        raise ExportError(f"{model.name} does not support streaming; export it without --streaming")
    if streaming and chunk_seconds is not None:
        raise ExportError("--chunk SECONDS describes a whole-chunk graph; do not combine it with --streaming")
    model.eval()
    chunk_length = overlap_length = None
    if not streaming:
        chunk_length, overlap_length = chunk_window(model.sample_rate, chunk_seconds, overlap_seconds)
    metadata = export_metadata(model, streaming, hops_per_step, chunk_length, overlap_length)
    generator = torch.Generator().manual_seed(seed)
    with onnx_verify.staged(path) as tmp_name:
        with torch.no_grad(), exportable_stft(model):
            with onnx_verify.tracing(model.name):
                if streaming:
                    _export_step_graph(model, tmp_name, metadata)
                else:
                    _export_chunk_graph(model, tmp_name)
            if streaming:
                golden, error = onnx_verify.verify_streaming(model, tmp_name, metadata, verify_steps, generator)
            else:
                lengths = list(chunk_lengths or (metadata["chunk_length"], int(0.37 * model.sample_rate)))
                golden, error = onnx_verify.verify_chunk(model, tmp_name, lengths, generator)
        onnx_verify.publish_verified(tmp_name, path, metadata, f"export of {model.name}", error, tolerance, seed=seed)
    np.savez(golden_path, tolerance=np.float64(tolerance), **golden)
    return ExportResult(path, golden_path, streaming, metadata, error, tolerance)


def write_onnx_metadata(path: str | os.PathLike, metadata: dict[str, Any]) -> None:
    """Replace the metadata of the ONNX file ``path`` by ``metadata`` (each value JSON-encoded).

    Keys of :data:`METADATA_KEYS` come first, in that order, then any other key; the model is
    checked with ``onnx.checker`` and saved in place.
    """
    onnx = require("onnx", "onnx", "ONNX export")
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    keys = [key for key in METADATA_KEYS if key in metadata] + sorted(set(metadata) - set(METADATA_KEYS))
    for key in keys:
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = json.dumps(metadata[key], sort_keys=True)
    proto.producer_name = "speechkit"
    proto.producer_version = __version__
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


@contextlib.contextmanager
def exportable_stft(model: SpeechModel) -> Iterator[None]:
    """Run every STFT/iSTFT of ``model`` on the ONNX-exportable ``"conv"`` backend inside the block."""
    modules = [module for module in model.modules() if isinstance(module, (STFT, ISTFT))]
    backends = [module.config.backend for module in modules]
    model.set_stft_backend("conv")
    try:
        yield
    finally:
        for module, backend in zip(modules, backends):
            module.set_backend(backend)


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The decoded speechkit metadata of an exported ONNX file."""
    onnx = require("onnx", "onnx", "reading ONNX metadata")
    proto = onnx.load(str(path), load_external_data=False)
    return {entry.key: json.loads(entry.value) for entry in proto.metadata_props}


# ---------------------------------------------------------------------------------- internals
def _export_step_graph(model: SpeechModel, target: str, metadata: dict[str, Any]) -> None:
    x_block = torch.zeros(metadata["input_shape"])
    state = model.initial_state(1)
    torch.onnx.export(
        _StepGraph(model),
        (x_block, *state),
        target,
        dynamo=False,
        opset_version=OPSET,
        input_names=metadata["input_names"],
        output_names=metadata["output_names"],
        do_constant_folding=True,
    )


def _export_chunk_graph(model: SpeechModel, target: str) -> None:
    x = torch.zeros(1, model.num_input_channels, model.sample_rate)
    torch.onnx.export(
        model,
        (x,),
        target,
        dynamo=False,
        opset_version=OPSET,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {2: "time"}, "y": {3: "time"}},
        do_constant_folding=True,
    )
