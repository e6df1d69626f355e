"""Declarations a model makes about itself: inference mode, options, front end, streaming states.

Every :class:`~speechkit.models.base.SpeechModel` declares

* ``inference_spec`` (:class:`InferenceSpec`): how a file or a stream is run through it
  (``"stream"``: causal ``forward_step``; ``"chunk"``: cross-faded chunks of ``chunk_seconds``;
  ``"whole"``: one pass over the whole signal; ``"sampler"``: an iterative sampler such as a
  diffusion model), whether its output is deterministic, and the user options it accepts;
* ``frontend_spec`` (:class:`FrontendSpec`): its analysis window / filterbank;
* ``input_layout`` (:class:`~speechkit.tasks.InputLayout`) and ``task``
  (:class:`~speechkit.tasks.Task`);
* ``state_specs(batch_size)`` (:class:`StateSpec` list) when it streams.

**Options convention.** A model reads its validated options from ``self.options`` (a read-only
mapping holding every declared option, defaults filled in), set by
:meth:`~speechkit.models.base.SpeechModel.set_options` (``speechkit.load(..., options=...)``, the
CLI's ``--option key=value``). A stochastic model declares an ``int`` option ``seed`` and draws
all its noise from a ``torch.Generator`` seeded with ``self.options["seed"]`` at the start of each
``forward`` call, so equal inputs and options give equal outputs.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ConfigError
from ..tasks import TASKS, InputLayout, Task

#: inference modes of :class:`InferenceSpec`
INFERENCE_MODES = ("stream", "chunk", "whole", "sampler")
#: option value types of :class:`OptionSpec`, by name
OPTION_TYPES: Mapping[str, type] = {"int": int, "float": float, "bool": bool, "str": str}
#: contract checks a model may be exempted from, with a reason (see :attr:`InferenceSpec.exemptions`)
CONTRACT_CHECKS = ("chunk_equals_whole", "onnx_export", "checkpoint_bit_exact")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclasses.dataclass(frozen=True)
class StateSpec:
    """One streaming state tensor: its name (ONNX input name) and shape."""

    name: str
    shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One user option of a model (e.g. the number of sampler steps).

    Attributes:
        name: option key (``--option name=value``).
        type: ``int``, ``float``, ``bool`` or ``str``.
        default: value used when the option is not given.
        minimum / maximum: inclusive numeric bounds (None: unbounded).
        choices: allowed values (None: any value of ``type``).
        help: one sentence for ``--help`` and error messages.
    """

    name: str
    type: type
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    help: str = ""

    def __post_init__(self) -> None:
        if self.type not in OPTION_TYPES.values():
            raise ConfigError(f"option {self.name!r} has type {self.type!r}; use int, float, bool or str")

    def coerce(self, value: Any, model: str = "model") -> Any:
        """``value`` (a string from the command line or a Python value) checked and converted."""
        converted = _convert(value, self.type)
        if converted is None:
            raise ConfigError(
                f"{model} option {self.name} needs a {self.type.__name__} value, got {value!r}"
            )
        if self.minimum is not None and converted < self.minimum:
            raise ConfigError(f"{model} option {self.name}={converted} is below its minimum {self.minimum}")
        if self.maximum is not None and converted > self.maximum:
            raise ConfigError(f"{model} option {self.name}={converted} is above its maximum {self.maximum}")
        if self.choices is not None and converted not in self.choices:
            allowed = ", ".join(str(choice) for choice in self.choices)
            raise ConfigError(f"{model} option {self.name}={converted} is not one of {allowed}")
        return converted

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (stored in export metadata)."""
        return {
            "name": self.name, "type": self.type.__name__, "default": self.default, "minimum": self.minimum,
            "maximum": self.maximum, "choices": None if self.choices is None else list(self.choices),
            "help": self.help,
        }


@dataclasses.dataclass(frozen=True)
class InferenceSpec:
    """How a model is run on a file or a stream.

    Attributes:
        mode: ``"stream"`` | ``"chunk"`` | ``"whole"`` | ``"sampler"``.
        deterministic: False when the output depends on random draws (then declare a ``seed`` option).
        chunk_seconds: preferred chunk length for ``"chunk"`` mode (None: the pipeline default).
        overlap_seconds: preferred cross-faded overlap between chunks (None: the pipeline default).
        options: the user options the model accepts.
        exemptions: ``(check, reason)`` pairs: contract checks (:data:`CONTRACT_CHECKS`) that do not
            apply to this model and why; the contract test prints every reason.
    """

    mode: str
    deterministic: bool = True
    chunk_seconds: float | None = None
    overlap_seconds: float | None = None
    options: tuple[OptionSpec, ...] = ()
    exemptions: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in INFERENCE_MODES:
            raise ConfigError(f"unknown inference mode {self.mode!r} (known: {', '.join(INFERENCE_MODES)})")
        if self.chunk_seconds is not None and not self.chunk_seconds > 0:
            raise ConfigError(f"InferenceSpec.chunk_seconds must be positive, got {self.chunk_seconds}")
        if self.overlap_seconds is not None and not (
            self.overlap_seconds >= 0 and (self.chunk_seconds is None or self.overlap_seconds < self.chunk_seconds)
        ):
            raise ConfigError(
                f"InferenceSpec.overlap_seconds must be >= 0 and below chunk_seconds, got {self.overlap_seconds}"
            )
        names = [option.name for option in self.options]
        if len(set(names)) != len(names):
            raise ConfigError(f"InferenceSpec declares an option twice: {', '.join(names)}")
        for check, reason in self.exemptions:
            if check not in CONTRACT_CHECKS or not str(reason).strip():
                raise ConfigError(
                    f"exemption {check!r} needs a known check ({', '.join(CONTRACT_CHECKS)}) and a reason"
                )

    def exemption(self, check: str) -> str | None:
        """The declared reason ``check`` does not apply, or None."""
        return dict(self.exemptions).get(check)

    def validate_options(self, values: Mapping[str, Any] | None, model: str = "model") -> dict[str, Any]:
        """Every declared option, ``values`` checked and converted, defaults for the rest.

        Raises a one-line :class:`ConfigError` for an unknown option, a wrong type or a value out
        of range. String values (from the command line) are parsed to the declared type.
        """
        values = dict(values or {})
        known = {option.name: option for option in self.options}
        unknown = sorted(set(values) - set(known))
        if unknown:
            accepted = ", ".join(sorted(known)) or "none"
            raise ConfigError(f"{model} has no option {unknown[0]!r} (accepted: {accepted})")
        return {
            name: option.coerce(values[name], model) if name in values else option.default
            for name, option in known.items()
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (stored in export metadata)."""
        return {
            "mode": self.mode, "deterministic": self.deterministic, "chunk_seconds": self.chunk_seconds,
            "overlap_seconds": self.overlap_seconds, "options": [option.to_dict() for option in self.options],
            "exemptions": [list(pair) for pair in self.exemptions],
        }


@dataclasses.dataclass(frozen=True)
class FrontendSpec:
    """The analysis front end of a model, as the runtime and the metadata describe it.

    Attributes:
        kind: ``"stft"``, ``"learned"`` (a learned filterbank) or ``"none"`` (no framing).
        window: window name (:data:`speechkit.frontend.WINDOWS`; ``"learned"`` for a learned filterbank).
        n_fft: DFT size (STFT) or number of filters (learned filterbank).
        win_length: frame length in samples.
        hop_length: frame hop in samples.
        center: True for centred (non-causal) framing, False for the causal convention.
        compression: magnitude compression exponent applied to the network input (None: none).
    """

    kind: str
    window: str | None = None
    n_fft: int | None = None
    win_length: int | None = None
    hop_length: int | None = None
    center: bool = False
    compression: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("stft", "learned", "none"):
            raise ConfigError(f"unknown front-end kind {self.kind!r} (known: stft, learned, none)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in checkpoint and ONNX metadata)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "FrontendSpec":
        """Inverse of :meth:`to_dict`."""
        unknown = sorted(set(values) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"FrontendSpec has no field(s) {', '.join(unknown)}")
        return cls(**values)


def parse_option_strings(texts: Iterable[str]) -> dict[str, str]:
    """``["steps=30", "seed=1"]`` -> ``{"steps": "30", "seed": "1"}`` (values still strings).

    Raises a one-line :class:`ConfigError` for text without ``=`` or an option given twice.
    """
    parsed: dict[str, str] = {}
    for text in texts:
        key, separator, value = str(text).partition("=")
        key = key.strip()
        if not separator or not key:
            raise ConfigError(f"option {text!r} must look like key=value")
        if key in parsed:
            raise ConfigError(f"option {key!r} is given twice")
        parsed[key] = value.strip()
    return parsed


def _convert(value: Any, kind: type) -> Any:
    """``value`` as ``kind``, or None when it is not one (no silent float -> int truncation)."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        return None
    if kind is int or kind is float:
        accepted = int if kind is int else (int, float)  # an int is a float, never the other way round
        if isinstance(value, bool):
            return None
        if isinstance(value, accepted):
            return value if kind is int else float(value)
        if isinstance(value, str):
            try:
                return kind(value.strip())
            except ValueError:
                return None
        return None
    return value if isinstance(value, str) else None


__all__ = [
    "CONTRACT_CHECKS",
    "INFERENCE_MODES",
    "OPTION_TYPES",
    "TASKS",
    "FrontendSpec",
    "InferenceSpec",
    "InputLayout",
    "OptionSpec",
    "StateSpec",
    "Task",
    "parse_option_strings",
]
