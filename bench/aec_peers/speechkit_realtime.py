"""speechkit's echo canceller as the realtime engine runs it live: ONNX Runtime, no torch, no look-ahead.

Where :class:`bench.aec_peers.speechkit_aec.SpeechkitEchoCanceller` measures the bulk delay on the
whole clip before cancelling (``speechkit aec`` on files), this system streams each clip through
:class:`realtime.engine.Engine` hop by hop from a fresh state, with the far end aligned by
:class:`realtime.echo_delay.DelayAlignedModel` from the past samples only (``speechkit stream``):
until the tracker adopts a delay (about 1 s of far-end speech) the far end is not aligned. The
timed compute includes the delay tracking.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from bench.peers.base import Availability

from .base import AlignedEchoCanceller


class RealtimeEchoCanceller(AlignedEchoCanceller):
    """A streaming ONNX export of an echo canceller (``speechkit export --streaming``) run by the realtime engine.

    Args:
        onnx_path: the exported step graph.
        whole_clip_delay: impose the bulk delay GCC-PHAT finds on the whole clip (what ``speechkit aec``
            does on files) instead of tracking it live: the engine's output then matches the file path.
    """

    name = "speechkit-realtime"
    package = "onnxruntime"

    @classmethod
    def availability(cls) -> Availability:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as error:
            return Availability(False, f"onnxruntime is not installed ({error})")
        return Availability(True)

    def __init__(self, onnx_path: str | os.PathLike, whole_clip_delay: bool = False) -> None:
        from realtime.echo_delay import DelayAlignedModel
        from realtime.model import StreamModel

        self.stream_model = StreamModel(onnx_path)
        self.model = DelayAlignedModel(self.stream_model)
        self.whole_clip_delay = whole_clip_delay
        self.onnx_path = os.fspath(onnx_path)
        self.native_rate = self.model.sample_rate  # type: ignore[misc]
        self.block_size = self.model.hop_length  # type: ignore[misc]
        self.stream_delay = 0  # type: ignore[misc]  # the engine's output comes latency-compensated
        #: delay (ms) and tracker figures of every processed clip
        self.delays: list[dict[str, Any]] = []

    @property
    def algorithmic_latency(self) -> float | None:
        """The export's algorithmic latency in seconds (block + stream delay)."""
        return int(self.stream_model.algorithmic_latency) / self.native_rate

    def describe(self) -> dict[str, Any]:
        """The export's model name, latency and the delays the tracker found."""
        metadata = self.model.metadata
        return {
            "onnx": self.onnx_path,
            "model_name": metadata.get("model_name"),
            "algorithmic_latency_samples": metadata.get("algorithmic_latency"),
            "delays": self.delays,
        }

    def process_native(self, audio: np.ndarray, state: Any) -> np.ndarray:
        from realtime.echo_delay import DelayAlignedModel
        from realtime.engine import Engine
        from speechkit.delay import estimate_delay

        if self.whole_clip_delay:
            found = estimate_delay(audio[0], audio[1], self.native_rate)
            self.model = DelayAlignedModel(self.stream_model, delay_seconds=found.seconds)
        engine = Engine(self.model, self.model.hop_length)
        output = engine.run_array(audio.astype(np.float32))  # [2, T] -> [1, T], latency compensated
        self.delays.append(self.model.summary())
        return output[0]


__all__ = ["RealtimeEchoCanceller"]
