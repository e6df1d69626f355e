"""The common interface of every system the comparison benchmark runs.

An :class:`Enhancer` takes mono float audio at any rate and returns its enhanced version at the
same rate. Frame-based peers run at their native rate (``native_rate``), one block of
``block_size`` samples at a time, exactly as a real-time application would call them, so their
output is *delayed*: :meth:`Enhancer.process` returns the raw output, flushed with
:meth:`Enhancer.flush_length` extra samples so nothing is cut, and the benchmark measures and
compensates the delay before scoring (:mod:`bench.peers.delay`).

Latency convention (the same as speechkit's ``SpeechModel``): ``algorithmic_latency = block_size +
stream_delay``: the time from an input sample's arrival to the moment its output can leave with
infinitely fast compute (buffering of one block plus the system's own look-ahead/overlap delay).
Resampling to and from the native rate is done offline with soxr (zero-phase, no added delay), so it
is excluded from the declared latency.
"""
from __future__ import annotations

import abc
import dataclasses
import math
import time
from typing import Any, ClassVar

import numpy as np

#: int16 full scale used by the peers that work on 16-bit samples
INT16_SCALE = 32767.0


@dataclasses.dataclass(frozen=True)
class Availability:
    """Whether a peer can run here, and why not."""

    available: bool
    reason: str = ""


def resample(audio: np.ndarray, input_rate: int, output_rate: int) -> np.ndarray:
    """Offline high-quality resampling (soxr) of a mono float signal ``[T]`` (delay-compensated)."""
    if input_rate == output_rate:
        return np.asarray(audio, dtype=np.float32)
    import soxr

    return soxr.resample(np.asarray(audio, dtype=np.float32), input_rate, output_rate, quality="HQ").astype(np.float32)


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Float ``[-1, 1]`` audio as clipped int16 samples."""
    return np.clip(np.round(audio * INT16_SCALE), -32768, 32767).astype(np.int16)


class Enhancer(abc.ABC):
    """A single-channel speech enhancer under test.

    Subclasses set :attr:`name`, :attr:`native_rate`, :attr:`block_size` and :attr:`stream_delay`
    (declared, in native samples) and implement :meth:`availability` and :meth:`process_native`.
    """

    #: short identifier used in tables and on the command line
    name: ClassVar[str] = ""
    #: PyPI package providing the peer (empty for speechkit itself)
    package: ClassVar[str] = ""
    #: the rate the system works at, in Hz
    native_rate: ClassVar[int] = 16000
    #: samples (at ``native_rate``) consumed and produced per call of the underlying library
    block_size: ClassVar[int] = 160
    #: declared delay (native samples) of the output relative to the input
    stream_delay: ClassVar[int] = 0

    @classmethod
    @abc.abstractmethod
    def availability(cls) -> Availability:
        """Whether the peer's package is installed and loads, with the reason when it is not."""

    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        """``(True, "")`` when the peer can run, else ``(False, reason)``."""
        status = cls.availability()
        return status.available, status.reason

    @property
    def algorithmic_latency(self) -> float | None:
        """Seconds from an input sample's arrival to its output (None: needs the whole input)."""
        return (self.block_size + self.stream_delay) / self.native_rate

    def flush_length(self, sample_rate: int) -> int:
        """Extra output samples (at ``sample_rate``) :meth:`process` appends to flush the delay."""
        return int(math.ceil((self.stream_delay + self.block_size) * sample_rate / self.native_rate))

    def version(self) -> str:
        """Version of the package that provides the peer."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(self.package) if self.package else ""
        except PackageNotFoundError:
            return ""

    #: seconds spent in the last :meth:`process_native` call (excludes state creation and resampling)
    last_compute_seconds: float = 0.0

    def new_state(self) -> Any:
        """Fresh per-signal state of the underlying library (not timed); None when there is none."""
        return None

    def free_state(self, state: Any) -> None:
        """Release a state made by :meth:`new_state`."""

    @abc.abstractmethod
    def process_native(self, audio: np.ndarray, state: Any) -> np.ndarray:
        """Enhance ``audio [T]`` at :attr:`native_rate`, ``T`` a multiple of :attr:`block_size`; same length out."""

    def process(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Enhance mono ``audio [T]`` at ``sample_rate``; returns the raw (delayed) output.

        The input is resampled to the native rate, zero-padded by the declared delay plus up to two
        blocks (so the delayed tail is flushed), processed block by block with fresh state, and
        resampled back. The result has ``T + flush_length(sample_rate)`` samples and is *not*
        delay-compensated. :attr:`last_compute_seconds` is set to the block-processing time.
        """
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"{self.name} expects mono audio [T], got shape {audio.shape}")
        return self.process_padded(audio, sample_rate)

    def process_padded(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Run :meth:`process_native` on ``audio [T]`` or ``[C, T]`` (float32) as :meth:`process` describes.

        Every channel is resampled to the native rate and zero-padded along time to a whole number
        of blocks covering the declared delay plus one block; the mono output ``[T + flush]`` is
        resampled back. Shared by single-channel enhancers and two-channel echo cancellers.
        """
        total = audio.shape[-1] + self.flush_length(sample_rate)
        if audio.ndim == 1:
            native = resample(audio, sample_rate, self.native_rate)  # [T] -> [T']
        else:
            native = np.stack([resample(channel, sample_rate, self.native_rate) for channel in audio])  # [C, T']
        padded_length = native.shape[-1] + self.stream_delay + self.block_size
        padded_length = int(math.ceil(padded_length / self.block_size)) * self.block_size
        time_padding = [(0, 0)] * (native.ndim - 1) + [(0, padded_length - native.shape[-1])]
        native = np.pad(native, time_padding)  # [..., T'] -> [..., k * block_size]
        state = self.new_state()
        try:
            start_time = time.perf_counter()
            enhanced_native = self.process_native(native, state)
            self.last_compute_seconds = time.perf_counter() - start_time
        finally:
            self.free_state(state)
        enhanced = resample(enhanced_native, self.native_rate, sample_rate)
        if enhanced.shape[0] < total:
            enhanced = np.pad(enhanced, (0, total - enhanced.shape[0]))  # -> [total]
        return enhanced[:total]

    def close(self) -> None:
        """Release native resources (optional)."""
