"""RNNoise (J.-M. Valin, "A hybrid DSP/deep learning approach to real-time full-band speech
enhancement", MMSP 2018) through ``pyrnnoise`` (bundled librnnoise and model). 48 kHz, frames of
480 samples (10 ms) on int16-scaled floats; the output is delayed by 960 samples (measured), so
the algorithmic latency is 30 ms. Other rates are resampled (soxr).
"""
from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from .base import INT16_SCALE, Availability, Enhancer


class RNNoise(Enhancer):
    """RNNoise via ``pyrnnoise.rnnoise`` (``rnnoise_create`` / ``rnnoise_process_frame``)."""

    name = "rnnoise"
    package = "pyrnnoise"
    native_rate = 48000
    block_size = 480
    stream_delay = 960

    @classmethod
    def availability(cls) -> Availability:
        try:
            from pyrnnoise import rnnoise  # noqa: F401
        except ImportError:
            return Availability(False, "pyrnnoise is not installed (pip install pyrnnoise)")
        except OSError as error:
            return Availability(False, f"pyrnnoise cannot load librnnoise ({error})")
        return Availability(True)

    def new_state(self) -> Any:
        from pyrnnoise import rnnoise

        if rnnoise.FRAME_SIZE != self.block_size:
            raise RuntimeError(f"librnnoise reports frames of {rnnoise.FRAME_SIZE}, expected {self.block_size}")
        return rnnoise.create()

    def free_state(self, state: Any) -> None:
        from pyrnnoise import rnnoise

        rnnoise.destroy(state)

    def process_native(self, audio: np.ndarray, state: Any) -> np.ndarray:
        from pyrnnoise import rnnoise

        source = np.ascontiguousarray(np.clip(audio, -1.0, 1.0) * INT16_SCALE, dtype=np.float32)
        output = np.empty_like(source)
        float_pointer = ctypes.POINTER(ctypes.c_float)
        for start in range(0, source.shape[0], self.block_size):
            rnnoise.lib.rnnoise_process_frame(
                state, output[start:].ctypes.data_as(float_pointer), source[start:].ctypes.data_as(float_pointer)
            )
        return output / INT16_SCALE
