"""WebRTC AEC3 (the echo canceller of the WebRTC audio-processing module: delay estimator, linear
adaptive filter and nonlinear residual-echo suppressor; J. Sjoberg, P. Aahgren and others, "The
WebRTC AEC3", webrtc.org) through ``pywebrtc-audio``.

Two configurations: ``webrtc_aec3`` is ``EchoCanceller`` alone (AEC3 with the high-pass filter it
enables), ``webrtc_aec3_ns`` is ``AudioProcessor`` with AEC3 followed by WebRTC noise suppression
(level 2 of 0..3, "18 dB"), the closest match to a joint echo and noise suppressor. 16 kHz int16,
10 ms frames of 160 samples; AEC3 finds the bulk delay itself (``stream_delay_ms`` left at 0).
The near-end output is delayed by 128 samples (8 ms, measured: AEC3's block processing), plus 96
with noise suppression (its analysis-window overlap, as for ``bench.peers.webrtc_ns``), so the
latencies are 18 ms and 24 ms.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from bench.peers.base import INT16_SCALE, Availability, to_int16

from .base import MIC_CHANNEL, REFERENCE_CHANNEL, EchoCanceller

#: WebRTC noise-suppression level of ``webrtc_aec3_ns`` (0..3: 6, 12, 18, 21 dB)
DEFAULT_NS_LEVEL = 2


class WebRTCAEC3(EchoCanceller):
    """WebRTC AEC3 via ``pywebrtc_audio.EchoCanceller.process`` (10 ms frames)."""

    name = "webrtc_aec3"
    package = "pywebrtc-audio"
    native_rate = 16000
    block_size = 160
    stream_delay = 128

    @classmethod
    def availability(cls) -> Availability:
        try:
            from pywebrtc_audio import AudioProcessor, EchoCanceller  # noqa: F401
        except ImportError:
            return Availability(False, "pywebrtc-audio is not installed (pip install pywebrtc-audio)")
        return Availability(True)

    def new_state(self) -> Any:
        from pywebrtc_audio import EchoCanceller as WebRTCEchoCanceller

        return WebRTCEchoCanceller(self.native_rate, 1, 0)

    def process_native(self, audio: np.ndarray, state: Any) -> np.ndarray:
        microphone, reference = to_int16(audio[MIC_CHANNEL]), to_int16(audio[REFERENCE_CHANNEL])
        pieces = [
            state.process(microphone[start : start + self.block_size], reference[start : start + self.block_size])
            for start in range(0, microphone.shape[0], self.block_size)
        ]
        return np.concatenate(pieces).astype(np.float32) / INT16_SCALE


class WebRTCAEC3NoiseSuppression(WebRTCAEC3):
    """WebRTC AEC3 + noise suppression via ``pywebrtc_audio.AudioProcessor`` (AGC off)."""

    name = "webrtc_aec3_ns"
    stream_delay = 224

    def __init__(self, ns_level: int = DEFAULT_NS_LEVEL) -> None:
        self.ns_level = int(ns_level)

    def new_state(self) -> Any:
        from pywebrtc_audio import AudioProcessor

        return AudioProcessor(
            self.native_rate, 1, echo_cancellation=True, noise_suppression=True, high_pass_filter=True,
            auto_gain_control=False, ns_level=self.ns_level,
        )
