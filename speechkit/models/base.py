"""The contract every speechkit model follows.

Offline::

    y = model(x)            # x [B, C_in, T] -> y [B, S, C_out, T], same length T

Streaming (causal models with ``supports_streaming``)::

    state = model.initial_state(batch_size)
    y_block, state = model.forward_step(x_block, state)   # [B, C_in, block_size] -> [B, S, C_out, block_size]

The concatenated step outputs equal the offline output delayed by ``stream_delay`` samples:
``stream[n] == offline[n - stream_delay]``. ``algorithmic_latency = block_size + stream_delay``:
the time from an input sample's arrival to the moment its output can leave with infinitely fast
compute. States are plain tensors (no Python-side buffers), so the step exports to ONNX with
every state as an explicit input/output. A streaming model declares its states once,
``state_specs(batch_size) -> [StateSpec(name, shape)]``; :meth:`SpeechModel.state_names` and
:meth:`SpeechModel.initial_state` derive from it, and ``forward_step`` reads the states in that
order through :meth:`SpeechModel.read_state` and returns the new ones in the same order.

Declarations (:mod:`speechkit.models.spec`): ``task`` (:class:`~speechkit.tasks.Task`),
``input_layout``, ``frontend_spec``, ``inference_spec`` (mode, determinism, options). Options
reach the model through :meth:`SpeechModel.set_options` and are read from ``self.options``.
"""
from __future__ import annotations

import dataclasses
import itertools
import typing
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..frontend.stft import BACKENDS, ISTFT, STFT
from ..tasks import TASKS, InputLayout, Task
from .spec import FrontendSpec, InferenceSpec, StateSpec


class SpeechModel(nn.Module):
    """Base class of every speechkit model.

    Subclasses set the class attributes, define a frozen ``Config`` dataclass with at least a
    ``sample_rate`` field, declare :attr:`input_layout`, :attr:`frontend_spec` and
    :attr:`inference_spec`, and implement :meth:`forward` (and :meth:`state_specs` and
    :meth:`forward_step` when they stream). See "Adding a model" in DEVELOPING.md.
    """

    #: registry name, e.g. ``"conv_tasnet"``
    name: ClassVar[str] = ""
    #: a :class:`~speechkit.tasks.Task` (a str enum: equal to its string, one of :data:`TASKS`)
    task: ClassVar[Task | str] = ""
    #: the frozen config dataclass of this model
    config_class: ClassVar[type]
    #: named configurations; always ``"tiny"`` (for tests), ``"paper"`` where a paper defines one
    presets: ClassVar[Mapping[str, Any]] = {}
    #: citation of the paper the model implements
    paper: ClassVar[str] = ""
    #: ONNX Runtime graph optimisation level that runs this model's exports fastest on CPU ("all",
    #: "extended" or "basic"; stored in the export metadata, measured by ``bench/realtime_bench.py``)
    onnx_graph_optimization: ClassVar[str] = "all"

    def __init__(self, config: Any) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise ConfigError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config
        self._options: Mapping[str, Any] | None = None

    # ----------------------------------------------------------------- description
    @property
    def sample_rate(self) -> int:
        """Sample rate the model works at, in Hz."""
        return int(self.config.sample_rate)

    @property
    def input_layout(self) -> InputLayout:
        """What the input channels are (default: one microphone, run on every file channel on its own)."""
        return InputLayout()

    @property
    def num_input_channels(self) -> int:
        """Channels C_in of the input ``x[B, C_in, T]``: :attr:`input_layout`'s microphones and far end."""
        return self.input_layout.num_channels

    @property
    def num_sources(self) -> int:
        """Number S of output sources (1 for enhancement)."""
        return 1

    @property
    def num_output_channels(self) -> int:
        """Channels C_out of each output source."""
        return 1

    @property
    def causal(self) -> bool:
        """True when the output at time t depends on no input later than t + lookahead."""
        return False

    @property
    def supports_streaming(self) -> bool:
        """True when :meth:`forward_step` is implemented and equals the offline output."""
        return False

    @property
    def block_size(self) -> int:
        """Samples consumed and produced by one :meth:`forward_step`."""
        raise NotImplementedError(f"{self.name} does not stream")

    @property
    def stream_delay(self) -> int:
        """Delay in samples of the streamed output relative to the offline output."""
        raise NotImplementedError(f"{self.name} does not stream")

    @property
    def algorithmic_latency(self) -> int | None:
        """Samples from an input sample's arrival to its output (None: needs the whole input)."""
        if not self.supports_streaming:
            return None
        return self.block_size + self.stream_delay

    @property
    def frontend_spec(self) -> FrontendSpec:
        """The model's analysis window / filterbank (:class:`~speechkit.models.spec.FrontendSpec`)."""
        raise NotImplementedError(f"{type(self).__name__} declares no frontend_spec")

    @property
    def options(self) -> Mapping[str, Any]:
        """The validated inference options (every declared option; defaults unless :meth:`set_options`)."""
        if self._options is None:
            return MappingProxyType(self.inference_spec.validate_options({}, self.name))
        return self._options

    def set_options(self, values: Mapping[str, Any] | None) -> None:
        """Validate ``values`` (strings are parsed) against :attr:`inference_spec` and keep them in :attr:`options`."""
        self._options = MappingProxyType(self.inference_spec.validate_options(values, self.name))

    def set_stft_backend(self, backend: str) -> None:
        """Compute every STFT/iSTFT of the model with ``backend``: ``"torch"`` or ``"conv"`` (ONNX-exportable).

        Both give the same numbers to float rounding; the backend is an inference/export-time
        choice, never part of the architecture config.
        """
        if backend not in BACKENDS:
            raise ConfigError(f"unknown STFT backend {backend!r} (known: {', '.join(BACKENDS)})")
        for module in self.modules():
            if isinstance(module, (STFT, ISTFT)):
                module.set_backend(backend)

    @property
    def inference_spec(self) -> InferenceSpec:
        """How files and streams run through this model (:class:`~speechkit.models.spec.InferenceSpec`).

        Default: ``"stream"`` for streaming models, ``"chunk"`` otherwise, deterministic, no options.
        """
        return InferenceSpec(mode="stream" if self.supports_streaming else "chunk")

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ----------------------------------------------------------------- computation
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """``x[B, C_in, T] -> y[B, S, C_out, T]``."""
        raise NotImplementedError

    def state_specs(self, batch_size: int) -> list[StateSpec]:
        """Name and shape of every streaming state tensor for ``batch_size`` streams, in step order.

        The one declaration a streaming model makes about its state: :meth:`state_names`,
        :meth:`initial_state` and the ONNX state inputs/outputs are derived from it.
        """
        raise ConfigError(f"{self.name} does not stream")

    def state_names(self) -> list[str]:
        """Names of the streaming state tensors, in the order of :meth:`initial_state`."""
        return [spec.name for spec in self.state_specs(1)]

    def initial_state(self, batch_size: int = 1) -> list[torch.Tensor]:
        """Zero state for ``batch_size`` new streams (dtype and device of the model's parameters)."""
        reference = next(itertools.chain(self.parameters(), self.buffers()), None)
        dtype = reference.dtype if reference is not None else torch.get_default_dtype()
        device = reference.device if reference is not None else None
        return [torch.zeros(spec.shape, dtype=dtype, device=device) for spec in self.state_specs(batch_size)]

    def check_step_length(self, x_block: torch.Tensor, unit: str = "block") -> None:
        """Refuse a :meth:`forward_step` input that is not a whole, non-zero number of :attr:`block_size` samples.

        ``unit`` names a block in the message (e.g. ``"hop"``).
        """
        size, samples = self.block_size, x_block.shape[-1]
        if samples % size or samples == 0:
            raise ConfigError(f"forward_step needs a whole number of {size}-sample {unit}s, got {samples} samples")

    def read_state(self, state: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Check that ``state`` holds :meth:`initial_state`'s tensor count; an iterator over them.

        The one streaming style: ``forward_step`` takes the states with ``next()`` in the order of
        :meth:`state_specs` and returns the new states in the same order.
        """
        count = self.__dict__.get("_state_count")
        if count is None:
            count = len(self.state_specs(1))
            self.__dict__["_state_count"] = count
        if len(state) != count:
            raise ConfigError(f"forward_step needs the {count} state tensors of initial_state, got {len(state)}")
        return iter(state)

    def forward_step(
        self, x_block: torch.Tensor, state: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One streaming step: ``[B, C_in, block_size] -> [B, S, C_out, block_size]`` and new state."""
        raise NotImplementedError(f"{self.name} does not stream")

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_preset(cls, preset: str = "tiny", **overrides: Any) -> "SpeechModel":
        """Build the model from a named preset, with field overrides."""
        return cls(make_config(cls, preset, **overrides))

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable summary (used by ``speechkit models`` and ``info``)."""
        latency = self.algorithmic_latency
        return {
            "name": self.name,
            "task": self.task,
            "sample_rate": self.sample_rate,
            "parameters": self.num_parameters(),
            "causal": self.causal,
            "streaming": self.supports_streaming,
            "algorithmic_latency_samples": latency,
            "algorithmic_latency_ms": None if latency is None else 1000.0 * latency / self.sample_rate,
            "input_channels": self.num_input_channels,
            "input_layout": self.input_layout.describe(),
            "inference_mode": self.inference_spec.mode,
            "options": [option.name for option in self.inference_spec.options],
            "sources": self.num_sources,
        }


def make_config(model_class: type[SpeechModel], preset: str = "tiny", **overrides: Any) -> Any:
    """The preset config of ``model_class`` with ``overrides`` replaced."""
    if preset not in model_class.presets:
        known = ", ".join(sorted(model_class.presets))
        raise ConfigError(f"{model_class.name} has no preset {preset!r} (known: {known})")
    config = model_class.presets[preset]
    if overrides:
        config = config_from_dict(model_class.config_class, {**config_to_dict(config), **overrides})
    return config


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a JSON-serialisable dict (tuples become lists)."""
    return json_ready(dataclasses.asdict(config))


def json_ready(value: Any) -> Any:
    """Tuples to lists, recursively, so ``json.dumps`` round-trips through :func:`config_from_dict`."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value


def config_from_dict(config_class: type, values: Mapping[str, Any]) -> Any:
    """Build ``config_class`` from a dict, with a clear error for unknown or missing fields.

    Keys named in the config class's ``removed_fields`` (a ``ClassVar`` tuple: fields older
    checkpoints carry that no longer exist, e.g. the D3Net AEC's ``stft_backend``) are ignored.
    """
    fields = {field.name: field for field in dataclasses.fields(config_class)}
    removed = getattr(config_class, "removed_fields", ())  # fields of old checkpoints, now ignored
    values = {key: value for key, value in values.items() if key not in removed}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{config_class.__name__} has no field(s) {', '.join(unknown)}")
    missing = [
        name
        for name, field in fields.items()
        if name not in values
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        raise ConfigError(f"{config_class.__name__} is missing field(s) {', '.join(missing)}")
    hints = typing.get_type_hints(config_class)
    converted = {key: _restore_tuples(value, hints.get(key)) for key, value in values.items()}
    try:
        return config_class(**converted)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid {config_class.__name__}: {error}") from error


def _restore_tuples(value: Any, hint: Any) -> Any:
    """JSON lists back to tuples where the field's annotation is a tuple."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or str(origin) == "types.UnionType":
        for option in typing.get_args(hint):
            if typing.get_origin(option) is tuple or option is tuple:
                hint = option
                break
    if isinstance(value, list) and (typing.get_origin(hint) is tuple or hint is tuple):
        args = typing.get_args(hint)
        inner = args[0] if args else None
        return tuple(_restore_tuples(item, inner) for item in value)
    return value
