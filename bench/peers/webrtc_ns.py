"""WebRTC noise suppression (the audio-processing module of the WebRTC project) through
``webrtc-noise-gain`` (``AudioProcessor(auto_gain, noise_suppression)``; automatic gain control is
left off). 16 kHz int16, 10 ms frames of 160 samples; the output is delayed by 96 samples
(measured: the overlap of its 256-point analysis window), so the algorithmic latency is 16 ms.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import INT16_SCALE, Availability, Enhancer, to_int16

#: WebRTC suppression level, 1 (low) .. 4 (very high); 0 disables it
DEFAULT_LEVEL = 3


class WebRTCNoiseSuppression(Enhancer):
    """WebRTC NS via ``webrtc_noise_gain.AudioProcessor.Process10ms``."""

    name = "webrtc_ns"
    package = "webrtc-noise-gain"
    native_rate = 16000
    block_size = 160
    stream_delay = 96

    @classmethod
    def availability(cls) -> Availability:
        try:
            from webrtc_noise_gain import AudioProcessor  # noqa: F401
        except ImportError:
            return Availability(False, "webrtc-noise-gain is not installed (pip install webrtc-noise-gain)")
        return Availability(True)

    def __init__(self, level: int = DEFAULT_LEVEL) -> None:
        self.level = int(level)

    def new_state(self) -> Any:
        from webrtc_noise_gain import AudioProcessor

        return AudioProcessor(0, self.level)

    def process_native(self, audio: np.ndarray, state: Any) -> np.ndarray:
        samples = to_int16(audio)
        pieces = [
            np.frombuffer(state.Process10ms(samples[start : start + self.block_size].tobytes()).audio, np.int16)
            for start in range(0, samples.shape[0], self.block_size)
        ]
        return np.concatenate(pieces).astype(np.float32) / INT16_SCALE
