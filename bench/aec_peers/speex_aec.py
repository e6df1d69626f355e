"""Speex acoustic echo canceller (the MDF adaptive filter of SpeexDSP, J.-M. Valin, "On adjusting
the learning rate in frequency domain echo cancellation with double-talk", IEEE TASLP 15(3),
2007) through ``speexdsp-aec`` (a ctypes wrapper of the system's ``libspeexdsp``: on Debian/Ubuntu
``apt-get install libspeexdsp1``). 16 kHz int16, 10 ms frames (160 samples); the adaptive filter
covers ``filter_tail_ms`` of echo path, which must include the bulk delay when the reference is
not pre-aligned. Only the linear canceller is exposed by the wrapper (no ``speex_preprocess``
residual-echo suppressor). The output is not delayed (measured), so the latency is one frame.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from bench.peers.base import INT16_SCALE, Availability, to_int16

from .base import MIC_CHANNEL, REFERENCE_CHANNEL, EchoCanceller

#: echo-path length the Speex filter models when the reference is not aligned (bulk delay up to
#: 200 ms plus the room's early response)
DEFAULT_FILTER_TAIL_MS = 300


class SpeexEchoCanceller(EchoCanceller):
    """Speex AEC via ``speexdsp_aec.SpeexAec.process`` (frame by frame).

    Args:
        filter_tail_ms: length of the adaptive filter in milliseconds.
    """

    name = "speex_aec"
    package = "speexdsp-aec"
    native_rate = 16000
    block_size = 160
    stream_delay = 0

    @classmethod
    def availability(cls) -> Availability:
        try:
            import speexdsp_aec
        except ImportError:
            return Availability(False, "speexdsp-aec is not installed (pip install speexdsp-aec)")
        try:
            speexdsp_aec.SpeexAec(cls.native_rate, 10, 100).close()
        except (RuntimeError, OSError) as error:
            return Availability(False, f"speexdsp-aec cannot load libspeexdsp ({error}); apt-get install libspeexdsp1")
        return Availability(True)

    def __init__(self, filter_tail_ms: int = DEFAULT_FILTER_TAIL_MS) -> None:
        self.filter_tail_ms = int(filter_tail_ms)

    def new_state(self) -> Any:
        import speexdsp_aec

        frame_ms = 1000 * self.block_size // self.native_rate
        return speexdsp_aec.SpeexAec(self.native_rate, frame_ms, self.filter_tail_ms)

    def free_state(self, state: Any) -> None:
        state.close()

    def process_native(self, audio: np.ndarray, state: Any) -> np.ndarray:
        microphone, reference = to_int16(audio[MIC_CHANNEL]), to_int16(audio[REFERENCE_CHANNEL])
        pieces = [
            np.frombuffer(
                state.process(microphone[start : start + self.block_size], reference[start : start + self.block_size]),
                np.int16,
            )
            for start in range(0, microphone.shape[0], self.block_size)
        ]
        return np.concatenate(pieces).astype(np.float32) / INT16_SCALE
