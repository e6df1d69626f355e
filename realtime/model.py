"""An exported speechkit streaming graph run with ONNX Runtime, one hop per :meth:`step`.

:func:`load_model` opens any export: step graphs as :class:`StreamModel`, whole-chunk and sampler
graphs as :class:`realtime.chunk.ChunkModel` (a sliding window with cross-fade).

The state tensors live in two preallocated sets of numpy buffers bound to the session with
``IOBinding``: step ``n`` reads set ``n % 2`` and writes set ``(n + 1) % 2``, so a step allocates
nothing. The input block and the output block are preallocated too.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from speechkit.tasks import InputLayout

from .errors import RealtimeError

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as error:
        raise RealtimeError(
            "onnxruntime is needed by the realtime engine but is not installed: pip install 'speechkit[realtime]'"
        ) from error
    return onnxruntime


def read_metadata(session: Any, source: str) -> dict[str, Any]:
    """The decoded speechkit metadata of an ONNX Runtime session."""
    raw = session.get_modelmeta().custom_metadata_map
    if "speechkit_format" not in raw:
        raise RealtimeError(f"{source} has no speechkit metadata; export it with 'speechkit export'")
    try:
        return {key: json.loads(value) for key, value in raw.items()}
    except json.JSONDecodeError as error:
        raise RealtimeError(f"{source}: speechkit metadata is not valid JSON ({error})") from error


def read_file_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The decoded speechkit metadata of an exported ``.onnx`` file (loaded without optimisation)."""
    ort = _import_onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise RealtimeError(f"model file {path} does not exist")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # only read the metadata
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise RealtimeError(f"{path} is not a loadable ONNX model ({error})") from error
    return read_metadata(session, str(path))


def graph_mode(metadata: dict[str, Any]) -> str:
    """``"stream"``, ``"chunk"`` or ``"sampler"``: how the engine runs an export (older exports have no
    ``mode`` entry: their ``graph_kind`` decides)."""
    if "mode" in metadata and metadata["mode"] is not None:
        return str(metadata["mode"])
    return "stream" if metadata.get("graph_kind") == "streaming" else "chunk"


def open_session(
    path: str | os.PathLike,
    spinning: bool = False,
    intra_op_threads: int = 1,
    providers: list[str] | None = None,
    graph_optimization: str | None = None,
) -> tuple[Any, dict[str, Any], str]:
    """An ONNX Runtime session tuned for one small run at a time, its metadata and optimisation level.

    Arguments as for :class:`StreamModel`.
    """
    ort = _import_onnxruntime()
    path = Path(path)
    if graph_optimization is None:
        graph_optimization = str(read_file_metadata(path).get("ort_graph_optimization", "all"))
    elif not path.is_file():
        raise RealtimeError(f"model file {path} does not exist")
    levels = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }
    if graph_optimization not in levels:
        raise RealtimeError(
            f"unknown graph optimisation level {graph_optimization!r}; use one of {', '.join(levels)}"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(intra_op_threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = levels[graph_optimization]
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
    available = ort.get_available_providers()
    chosen = [name for name in (providers or ["CPUExecutionProvider"]) if name in available]
    try:
        session = ort.InferenceSession(str(path), options, providers=chosen or ["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise RealtimeError(f"{path} is not a loadable ONNX model ({error})") from error
    return session, read_metadata(session, str(path)), graph_optimization


def load_model(path: str | os.PathLike, **options: Any) -> Any:
    """The engine model of an export: :class:`StreamModel` for step graphs, else
    :class:`realtime.chunk.ChunkModel` (whole-chunk and sampler graphs on a sliding window).

    ``options`` as for :class:`StreamModel`.
    """
    if graph_mode(read_file_metadata(path)) == "stream":
        return StreamModel(path, **options)
    from .chunk import ChunkModel

    return ChunkModel(path, **options)


class HopModel:
    """What the engine's step models share (:class:`StreamModel`, :class:`realtime.chunk.ChunkModel`):
    the input layout read from the metadata and :meth:`process` over a whole signal.

    A subclass sets ``metadata``, ``num_input_channels``, ``num_output_channels``, ``hop_length``,
    ``input_block`` and implements ``reset()`` and ``step()``.
    """

    metadata: dict[str, Any]
    num_input_channels: int
    num_output_channels: int
    hop_length: int
    input_block: np.ndarray

    def reset(self) -> None:
        raise NotImplementedError

    def step(self) -> np.ndarray:
        raise NotImplementedError

    def _read_layout(self, path: Path) -> None:
        """Set ``task``, ``input_layout``, ``num_far_end_channels`` and ``num_microphones`` from the metadata."""
        self.task = str(self.metadata.get("task", ""))
        #: what the input channels are (exports before the layout was stored: from task and channel count)
        self.input_layout = InputLayout.from_metadata(self.metadata, self.num_input_channels)
        if self.input_layout.num_channels != self.num_input_channels:
            raise RealtimeError(
                f"{path}: input layout {self.input_layout.describe()} does not match "
                f"{self.num_input_channels} input channels"
            )
        self.num_far_end_channels = 0 if self.input_layout.far_end_channel is None else 1
        self.num_microphones = self.input_layout.num_microphones

    def process(self, x: np.ndarray) -> np.ndarray:
        """Run the model hop by hop over a whole signal from a fresh state (the offline reference, no engine).

        ``x [C_in, T]`` -> ``y [S*C_out, T]``: the concatenated step outputs (zero-padded at the
        end to whole hops, then cut back to T; the output trails the input by ``stream_delay``).
        Resets before and after.
        """
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 1:
            x = x[None]  # [T] -> [1, T]
        length = x.shape[-1]
        hops = -(-length // self.hop_length)
        padded = np.zeros((x.shape[0], hops * self.hop_length), dtype=np.float32)  # [C_in, hops*hop]
        padded[:, :length] = x
        y = np.zeros((self.num_output_channels, hops * self.hop_length), dtype=np.float32)  # [S*C_out, hops*hop]
        self.reset()
        for hop_index in range(hops):
            start = hop_index * self.hop_length
            self.input_block[...] = padded[:, start : start + self.hop_length]
            y[:, start : start + self.hop_length] = self.step()
        self.reset()
        return y[:, :length]


class StreamModel(HopModel):
    """A streaming ONNX graph (``speechkit export --streaming``) with preallocated state.

    Args:
        path: the ``.onnx`` file.
        spinning: let ONNX Runtime's intra-op threads spin (lower wake-up latency, burns CPU).
        intra_op_threads: intra-op threads (1 suits small models).
        providers: execution providers (default CPU; CUDA first where requested and available).
        graph_optimization: ONNX Runtime graph optimisation level, ``"all"``, ``"extended"``,
            ``"basic"`` or ``"disabled"``; None takes the level the export stored (measured fastest
            for that architecture), else ``"all"``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        spinning: bool = False,
        intra_op_threads: int = 1,
        providers: list[str] | None = None,
        graph_optimization: str | None = None,
    ) -> None:
        path = Path(path)
        self.session, self.metadata, self.graph_optimization = open_session(
            path, spinning, intra_op_threads, providers, graph_optimization
        )
        self.path = path
        if graph_mode(self.metadata) != "stream":
            raise RealtimeError(
                f"{path} is a whole-chunk graph; StreamModel needs a streaming export "
                "('speechkit export MODEL --streaming'); load_model runs either kind"
            )
        #: how the engine runs the graph (one step per hop)
        self.mode = "stream"
        self.sample_rate = int(self.metadata["sample_rate"])
        self.hop_length = int(self.metadata["block_size"])
        self.stream_delay = int(self.metadata["stream_delay"])
        self.algorithmic_latency = int(self.metadata["algorithmic_latency"])
        self.input_names: list[str] = list(self.metadata["input_names"])
        self.output_names: list[str] = list(self.metadata["output_names"])
        self.state_names: list[str] = list(self.metadata["state_names"])
        input_shape = [int(size) for size in self.metadata["input_shape"]]
        output_shape = [int(size) for size in self.metadata["output_shape"]]
        self.num_input_channels = input_shape[1]
        self.num_output_channels = output_shape[1] * output_shape[2]
        self._read_layout(path)
        types = {node.name: _ORT_TYPES.get(node.type, np.float32) for node in self.session.get_inputs()}
        missing = [name for name in self.input_names if name not in types]
        if missing:
            raise RealtimeError(f"{path}: graph inputs lack {', '.join(missing)} named in its metadata")
        self._x = np.zeros(input_shape, dtype=np.float32)  # [1, C_in, hop]
        self._y = np.zeros(output_shape, dtype=np.float32)  # [1, S, C_out, hop]
        self.output_block = self._y.reshape(self.num_output_channels, self.hop_length)  # view [S*C_out, hop]
        self.input_block = self._x.reshape(self.num_input_channels, self.hop_length)  # view [C_in, hop]
        shapes = [tuple(int(size) for size in shape) for shape in self.metadata["state_shapes"]]
        self._states = [
            [np.zeros(shape, dtype=types[name]) for name, shape in zip(self.state_names, shapes)] for _ in range(2)
        ]
        self._bindings = [self._bind(self._states[parity], self._states[1 - parity]) for parity in range(2)]
        self._parity = 0

    def _bind(self, state_in: list[np.ndarray], state_out: list[np.ndarray]) -> Any:
        binding = self.session.io_binding()
        for name, array in zip(self.input_names, [self._x, *state_in]):
            binding.bind_input(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)
        for name, array in zip(self.output_names, [self._y, *state_out]):
            binding.bind_output(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)
        return binding

    def reset(self) -> None:
        """Zero the state (start of a new stream)."""
        for state_set in self._states:
            for array in state_set:
                array.fill(0)
        self._x.fill(0.0)
        self._y.fill(0.0)
        self._parity = 0

    def step(self) -> np.ndarray:
        """Run one hop on :attr:`input_block` (fill it first); returns :attr:`output_block`.

        The returned array is reused by the next step: copy it out before calling again.
        """
        self.session.run_with_iobinding(self._bindings[self._parity])
        self._parity = 1 - self._parity
        return self.output_block

    def warm_up(self, steps: int = 20) -> None:
        """Run ``steps`` steps on silence, then reset (first runs are slow: allocation, caches)."""
        self.input_block.fill(0.0)
        for _ in range(steps):
            self.step()
        self.reset()
