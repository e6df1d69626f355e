"""The common interface of the echo cancellers the AEC benchmark runs.

An :class:`EchoCanceller` is a :class:`bench.peers.base.Enhancer` (same ``name``, ``package``,
``native_rate``, ``block_size``, ``stream_delay``, ``availability``, ``algorithmic_latency``,
``flush_length``, ``version`` and ``last_compute_seconds``) whose input has two channels instead
of one: ``audio [2, T]`` is the microphone signal (channel 0) and the far-end (loudspeaker)
reference (channel 1), exactly as recorded, *not* aligned. Each system copes with the bulk delay
between the two its own way (WebRTC AEC3 estimates it, Speex needs a filter tail long enough to
cover it, speechkit aligns the reference with GCC-PHAT as ``speechkit aec`` does); the benchmark
can also hand every system a pre-aligned reference.

:meth:`EchoCanceller.process` resamples both channels to the native rate (soxr, offline), zero-pads
them so the delayed tail is flushed, runs :meth:`EchoCanceller.process_native` block by block with
fresh state and returns the raw, *delayed* near-end estimate ``[T + flush]``; the benchmark
measures and compensates the output delay (:mod:`bench.peers.delay`) before scoring.
"""
from __future__ import annotations

import abc
from typing import Any

import numpy as np

from bench.peers.base import Enhancer

#: channel order of :meth:`EchoCanceller.process` input
MIC_CHANNEL, REFERENCE_CHANNEL = 0, 1


class EchoCanceller(Enhancer):
    """An echo canceller under test: ``process(audio [2, T] = (mic, far_end), rate) -> near_end [T + flush]``.

    Subclasses implement :meth:`availability` and :meth:`process_native` (both channels at
    :attr:`native_rate`, length a multiple of :attr:`block_size`).
    """

    @abc.abstractmethod
    def process_native(self, audio: np.ndarray, state: Any) -> np.ndarray:
        """Cancel the echo in ``audio [2, T]`` (mic, far end) at :attr:`native_rate`; returns ``[T]``."""

    def process(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Near-end estimate of ``audio [2, T]`` (microphone, far-end reference) at ``sample_rate``.

        Returns the raw (delayed) output with ``T + flush_length(sample_rate)`` samples and sets
        :attr:`last_compute_seconds` to the block-processing time (state creation and resampling
        excluded).
        """
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 2 or audio.shape[0] != 2:
            raise ValueError(f"{self.name} expects [2, T] audio (microphone, far end), got shape {audio.shape}")
        return self.process_padded(audio, sample_rate)  # [2, T] -> [T + flush]

    def cancel(self, microphone: np.ndarray, far_end: np.ndarray, sample_rate: int) -> np.ndarray:
        """Convenience form of :meth:`process` for two mono signals ``[T]`` of equal length."""
        microphone, far_end = np.asarray(microphone, np.float32), np.asarray(far_end, np.float32)
        if microphone.shape != far_end.shape or microphone.ndim != 1:
            raise ValueError(
                f"microphone and far end must be mono signals of one length, got {microphone.shape} and {far_end.shape}"
            )
        return self.process(np.stack([microphone, far_end]), sample_rate)  # 2 x [T] -> [2, T]


class AlignedEchoCanceller(EchoCanceller):
    """An echo canceller whose :meth:`process_native` returns the whole near end already aligned with its
    input (speechkit's file path and its realtime engine, which compensate their own latency): no flush,
    no declared delay. :meth:`process` resamples, times only :meth:`process_native` and returns ``[T]``."""

    def flush_length(self, sample_rate: int) -> int:
        return 0

    def process(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        import time

        from bench.peers.base import resample

        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 2 or audio.shape[0] != 2:
            raise ValueError(f"{self.name} expects [2, T] audio (microphone, far end), got shape {audio.shape}")
        native = np.stack([resample(channel, sample_rate, self.native_rate) for channel in audio])  # [2, T']
        start_time = time.perf_counter()
        near_end = self.process_native(native, None)
        self.last_compute_seconds = time.perf_counter() - start_time
        near_end = resample(near_end, self.native_rate, sample_rate)[: audio.shape[1]]
        return np.pad(near_end, (0, audio.shape[1] - near_end.shape[0]))  # -> [T]


__all__ = ["MIC_CHANNEL", "REFERENCE_CHANNEL", "AlignedEchoCanceller", "EchoCanceller"]
