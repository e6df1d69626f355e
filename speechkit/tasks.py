"""The task vocabulary and the input layout of a model (torch-free).

:class:`Task` is a ``str`` enum, so ``Task.AEC == "aec"`` and task strings in recipe configs,
checkpoint metadata and ONNX metadata keep working. :class:`InputLayout` says what the channels
of a model's input ``x[B, C_in, T]`` are: ``num_microphones`` microphone channels (in array
order) and, for an echo canceller, one far-end (loudspeaker) reference channel.

This module imports no torch, so the realtime engine can use it.
"""
from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError


class Task(str, enum.Enum):
    """What a model does; compares equal to its string value (``Task.SEPARATION == "separation"``)."""

    SEPARATION = "separation"
    ENHANCEMENT = "enhancement"
    DEREVERBERATION = "dereverberation"
    MULTICHANNEL_ENHANCEMENT = "multichannel_enhancement"
    AEC = "aec"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: "str | Task") -> "Task":
        """``value`` as a :class:`Task`, or a one-line :class:`ConfigError` naming the known tasks."""
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(task.value for task in cls)
            raise ConfigError(f"unknown task {value!r} (known: {known})") from None


#: every task string, in declaration order
TASKS = tuple(task.value for task in Task)


@dataclasses.dataclass(frozen=True)
class InputLayout:
    """The channels of a model input ``x[B, C_in, T]``.

    Channels ``0 .. num_microphones - 1`` are microphones in array order; ``far_end_channel``
    (None: no reference) is the loudspeaker reference of an echo canceller. ``num_microphones == 1``
    with no far end marks a single-channel model, which file inference runs on every channel of a
    file on its own.

    Attributes:
        num_microphones: microphone channels the model takes.
        far_end_channel: input index of the far-end reference, or None.
        reference_microphone: index of the microphone whose target the model estimates.
        geometry: microphone positions ``((x, y, z), ...)`` in metres, or None (unknown / any).
    """

    num_microphones: int = 1
    far_end_channel: int | None = None
    reference_microphone: int = 0
    geometry: tuple[tuple[float, float, float], ...] | None = None

    def __post_init__(self) -> None:
        if int(self.num_microphones) < 1:
            raise ConfigError(f"InputLayout.num_microphones must be at least 1, got {self.num_microphones}")
        if not 0 <= int(self.reference_microphone) < int(self.num_microphones):
            raise ConfigError(
                f"InputLayout.reference_microphone {self.reference_microphone} is not one of the "
                f"{self.num_microphones} microphones"
            )
        if self.far_end_channel is not None and self.far_end_channel != self.num_microphones:
            raise ConfigError(
                f"InputLayout.far_end_channel must follow the microphones (index {self.num_microphones}), "
                f"got {self.far_end_channel}"
            )
        if self.geometry is not None:
            if len(self.geometry) != self.num_microphones or any(len(point) != 3 for point in self.geometry):
                raise ConfigError(
                    f"InputLayout.geometry needs one (x, y, z) position per microphone ({self.num_microphones})"
                )

    @property
    def num_channels(self) -> int:
        """Input channels ``C_in``: the microphones plus the far end, if any."""
        return int(self.num_microphones) + (0 if self.far_end_channel is None else 1)

    @property
    def channel_wise(self) -> bool:
        """True for a one-microphone model without far end (run on each file channel on its own)."""
        return self.num_microphones == 1 and self.far_end_channel is None

    def describe(self) -> str:
        """A short human description, e.g. ``"4 microphones"`` or ``"1 microphone + far end"``."""
        plural = "" if self.num_microphones == 1 else "s"
        text = f"{self.num_microphones} microphone{plural}"
        return text + (" + far end" if self.far_end_channel is not None else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in checkpoint and ONNX metadata)."""
        return {
            "num_microphones": int(self.num_microphones),
            "far_end_channel": self.far_end_channel,
            "reference_microphone": int(self.reference_microphone),
            "geometry": None if self.geometry is None else [list(point) for point in self.geometry],
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "InputLayout":
        """Inverse of :meth:`to_dict` (a ConfigError for unknown keys)."""
        unknown = sorted(set(values) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"InputLayout has no field(s) {', '.join(unknown)}")
        geometry = values.get("geometry")
        return cls(
            num_microphones=int(values.get("num_microphones", 1)),
            far_end_channel=values.get("far_end_channel"),
            reference_microphone=int(values.get("reference_microphone", 0)),
            geometry=None if geometry is None else tuple(tuple(float(v) for v in point) for point in geometry),
        )

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], num_input_channels: int) -> "InputLayout":
        """The layout an export or checkpoint metadata records (``"input_layout"``), else :meth:`legacy`."""
        values = metadata.get("input_layout")
        if values is None:
            return cls.legacy(metadata.get("task"), num_input_channels)
        return cls.from_dict(values)

    @classmethod
    def legacy(cls, task: str | None, num_input_channels: int) -> "InputLayout":
        """The layout implied by an old checkpoint / export that stored only a task and a channel count."""
        if task == Task.AEC and num_input_channels == 2:
            return cls(num_microphones=1, far_end_channel=1)
        return cls(num_microphones=max(1, int(num_input_channels)))


__all__ = ["TASKS", "InputLayout", "Task"]
