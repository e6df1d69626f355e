"""Bulk-delay estimation between a microphone signal and the far-end reference (numpy only).

An echo canceller sees ``mic[n] = near_end[n] + (h * reference)[n - delay] + noise[n]``, where the
bulk ``delay`` (playback buffering, device latency: often tens to hundreds of milliseconds) is
much larger than what a frame-based canceller can bridge. :func:`estimate_delay` finds it with the
generalised cross-correlation with phase transform (GCC-PHAT; C. H. Knapp and G. C. Carter,
"The generalized correlation method for estimation of time delay", IEEE TASSP 24(4), 1976): the
cross-spectrum ``M(f) conj(R(f))`` is whitened (``|.|^-beta``, ``beta = 1`` is PHAT) so that the
inverse transform has a sharp peak at the lag of the strongest echo path tap, whatever the
spectral colour of speech. :func:`align_reference` then shifts the reference by that lag.

Sign convention: a positive delay means the echo in the microphone lags the reference (the
physical case): ``mic[n] ~ reference[n - delay]``.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .errors import AudioError

#: default search range of :func:`estimate_delay`
DEFAULT_MAX_DELAY_SECONDS = 0.5
#: default amount of signal analysed (from the start); ``None`` in the call analyses everything
DEFAULT_ANALYSIS_SECONDS = 60.0
#: reference RMS below this (about -100 dBFS) counts as silence: no delay can be estimated
SILENCE_RMS = 1e-5


@dataclasses.dataclass(frozen=True)
class DelayEstimate:
    """Result of :func:`estimate_delay`.

    Attributes:
        samples: estimated delay of the microphone against the reference, in samples.
        sample_rate: rate of the analysed signals, in Hz.
        confidence: peak of the whitened cross-correlation over its RMS within the search
            range (roughly: above 5 is a clear peak, below 3 is a guess); 0 when the reference is
            silent and the delay is unknown (then ``samples`` is 0).
    """

    samples: int
    sample_rate: int
    confidence: float

    @property
    def seconds(self) -> float:
        """The delay in seconds."""
        return self.samples / self.sample_rate

    @property
    def reliable(self) -> bool:
        """True when the correlation peak stands out clearly (``confidence >= 5``)."""
        return self.confidence >= 5.0


def _as_mono(signal: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(signal, dtype=np.float64)
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]  # [1, T] -> [T]
    if array.ndim != 1:
        raise AudioError(f"the {name} signal must be mono ([T] or [1, T]), got shape {tuple(array.shape)}")
    if array.size == 0:
        raise AudioError(f"the {name} signal is empty")
    if not np.isfinite(array).all():
        raise AudioError(f"the {name} signal contains NaN or infinite samples")
    return array


def gcc_phat(
    mic: np.ndarray, reference: np.ndarray, max_lag: int, min_lag: int = 0, beta: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Whitened cross-correlation of ``mic`` against ``reference`` for lags ``min_lag .. max_lag``.

    Args:
        mic: microphone samples ``[T_mic]``.
        reference: reference samples ``[T_ref]``.
        max_lag: largest lag (mic lagging the reference), in samples.
        min_lag: smallest lag (may be negative: mic leading the reference).
        beta: whitening exponent (1 = PHAT, 0 = plain cross-correlation).

    Returns:
        ``(lags [L], correlation [L])`` with ``correlation[i] = sum_n mic[n + lags[i]] ref[n]``
        computed on the whitened spectra.
    """
    if max_lag < min_lag:
        raise AudioError(f"max_lag ({max_lag}) must not be smaller than min_lag ({min_lag})")
    size = len(mic) + len(reference) + max(abs(min_lag), abs(max_lag))
    n_fft = 1 << int(np.ceil(np.log2(max(size, 2))))
    cross = np.fft.rfft(mic, n_fft) * np.conj(np.fft.rfft(reference, n_fft))  # [n_fft // 2 + 1]
    weight = np.abs(cross)
    floor = 1e-12 * max(float(weight.max()), 1e-30)
    cross = cross / np.power(weight + floor, beta)
    correlation = np.fft.irfft(cross, n_fft)  # [n_fft], negative lags wrap to the end
    lags = np.arange(min_lag, max_lag + 1)
    return lags, correlation[lags % n_fft]


def estimate_delay(
    mic: np.ndarray,
    reference: np.ndarray,
    sample_rate: int,
    max_delay_seconds: float = DEFAULT_MAX_DELAY_SECONDS,
    allow_negative: bool = False,
    analysis_seconds: float | None = DEFAULT_ANALYSIS_SECONDS,
    beta: float = 1.0,
) -> DelayEstimate:
    """Estimate the bulk delay of the echo in ``mic`` against the far-end ``reference`` (GCC-PHAT).

    Args:
        mic: microphone signal ``[T]`` or ``[1, T]``.
        reference: far-end (loudspeaker) signal ``[T']`` or ``[1, T']`` at the same rate.
        sample_rate: rate of both signals, in Hz.
        max_delay_seconds: search up to this delay (default 0.5 s).
        allow_negative: also search negative delays (mic leading the reference, e.g. swapped
            recordings); physical echoes always lag.
        analysis_seconds: analyse only this much of the start of both signals (``None``: all).
        beta: whitening exponent (1 = PHAT).

    Returns:
        A :class:`DelayEstimate`; ``samples == 0`` with ``confidence == 0`` when the reference is
        silent.
    """
    mic = _as_mono(mic, "microphone")
    reference = _as_mono(reference, "reference")
    if sample_rate <= 0:
        raise AudioError(f"the sample rate must be positive, got {sample_rate}")
    if max_delay_seconds < 0:
        raise AudioError(f"max_delay_seconds must not be negative, got {max_delay_seconds}")
    if analysis_seconds is not None:
        limit = int(round(analysis_seconds * sample_rate))
        mic, reference = mic[:limit], reference[:limit]
    if np.sqrt(np.mean(reference**2)) < SILENCE_RMS or np.sqrt(np.mean(mic**2)) < SILENCE_RMS:
        return DelayEstimate(samples=0, sample_rate=sample_rate, confidence=0.0)
    max_lag = int(round(max_delay_seconds * sample_rate))
    min_lag = -max_lag if allow_negative else 0
    lags, correlation = gcc_phat(mic, reference, max_lag, min_lag, beta)
    peak_index = int(np.argmax(correlation))
    rms = float(np.sqrt(np.mean(correlation**2)))
    confidence = float(correlation[peak_index] / rms) if rms > 0 else 0.0
    return DelayEstimate(samples=int(lags[peak_index]), sample_rate=sample_rate, confidence=max(confidence, 0.0))


def align_reference(reference: np.ndarray, delay_samples: int, length: int) -> np.ndarray:
    """Shift ``reference`` by ``delay_samples`` (later if positive) and cut or zero-pad it to ``length``.

    ``reference`` is ``[T]`` or ``[C, T]`` (shifted along the last axis); returns ``[..., length]``
    so that ``aligned[n] = reference[n - delay_samples]`` (zero outside the reference).
    """
    reference = np.asarray(reference)
    if length < 0:
        raise AudioError(f"the aligned length must not be negative, got {length}")
    aligned = np.zeros((*reference.shape[:-1], length), dtype=reference.dtype)
    source_start = max(0, -delay_samples)
    target_start = max(0, delay_samples)
    count = min(reference.shape[-1] - source_start, length - target_start)
    if count > 0:
        aligned[..., target_start : target_start + count] = reference[..., source_start : source_start + count]
    return aligned


def check_pair_lengths(
    mic_length: int, reference_length: int, sample_rate: int, max_difference_seconds: float
) -> None:
    """Raise :class:`AudioError` when two signals' lengths differ too much to be one recording pair.

    A reference somewhat shorter or longer than the microphone is normal (it is zero-padded or cut
    after alignment); a larger difference usually means the files do not belong together.
    """
    difference = abs(mic_length - reference_length) / sample_rate
    if difference > max_difference_seconds:
        raise AudioError(
            f"the microphone ({mic_length / sample_rate:.2f} s) and reference ({reference_length / sample_rate:.2f} s) "
            f"lengths differ by {difference:.2f} s, more than the allowed {max_difference_seconds:g} s; "
            "check that the files belong together or raise --max-length-difference"
        )


__all__ = [
    "DEFAULT_MAX_DELAY_SECONDS",
    "DelayEstimate",
    "align_reference",
    "check_pair_lengths",
    "estimate_delay",
    "gcc_phat",
]
