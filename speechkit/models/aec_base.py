"""What the streaming echo-canceller models share: the (microphone, far end) input and the streaming contract.

:class:`StreamingEchoCanceller` is the base of ``linear_aec`` and ``complex_d3net_aec``: both take
``x [B, 2, T]`` (channel 0 microphone, channel 1 far-end reference, bulk delay already removed),
are causal and run files through :meth:`~speechkit.models.base.SpeechModel.forward_step` with the
state carried through the whole recording.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from ..tasks import InputLayout, Task
from .base import SpeechModel
from .spec import InferenceSpec


class StreamingEchoCanceller(SpeechModel):
    """Base of causal streaming echo cancellers with input ``x [B, 2, T]`` (microphone, far end).

    Subclasses declare the rest of the contract (``block_size``, ``stream_delay``,
    ``frontend_spec``, ``state_specs``, ``forward_step``, ``forward``).
    """

    task = Task.AEC

    @property
    def input_layout(self) -> InputLayout:
        """One microphone (channel 0), then the far-end reference (channel 1)."""
        return InputLayout(num_microphones=1, far_end_channel=1)

    @property
    def inference_spec(self) -> InferenceSpec:
        """Streams one block per step (files run through ``forward_step`` with the state carried)."""
        return InferenceSpec(mode="stream")

    @property
    def causal(self) -> bool:
        """Always causal."""
        return True

    @property
    def supports_streaming(self) -> bool:
        """Always streams."""
        return True

    def _check_input(self, x: torch.Tensor) -> None:
        """Refuse anything but ``x [batch, 2, time]`` (not checked while tracing for ONNX)."""
        if torch.jit.is_tracing():
            return
        if x.dim() != 3 or x.shape[1] != 2:
            raise ConfigError(
                f"{self.name} expects x [batch, 2, time] (microphone, far end), got shape {tuple(x.shape)}"
            )


__all__ = ["StreamingEchoCanceller"]
