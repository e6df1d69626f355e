"""Speex DSP noise suppression (the ``speex_preprocess`` denoiser of SpeexDSP, J.-M. Valin)
through ``speexdsp-ns``. 16 kHz int16, frames of 160 samples (10 ms); the output is delayed by one
frame (160 samples, measured), so the algorithmic latency is 20 ms.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import INT16_SCALE, Availability, Enhancer, to_int16


class SpeexNoiseSuppression(Enhancer):
    """Speex NS via ``speexdsp_ns.NoiseSuppression``."""

    name = "speex_ns"
    package = "speexdsp-ns"
    native_rate = 16000
    block_size = 160
    stream_delay = 160

    @classmethod
    def availability(cls) -> Availability:
        try:
            import speexdsp_ns  # noqa: F401
        except ImportError:
            return Availability(False, "speexdsp-ns is not installed (pip install speexdsp-ns)")
        return Availability(True)

    def new_state(self) -> Any:
        import speexdsp_ns

        return speexdsp_ns.NoiseSuppression.create(self.block_size, self.native_rate)

    def process_native(self, audio: np.ndarray, state: Any) -> np.ndarray:
        samples = to_int16(audio)
        pieces = [
            np.frombuffer(state.process(samples[start : start + self.block_size].tobytes()), np.int16)
            for start in range(0, samples.shape[0], self.block_size)
        ]
        return np.concatenate(pieces).astype(np.float32) / INT16_SCALE
