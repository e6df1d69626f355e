"""Bulk-delay estimation between a microphone signal and the far-end reference (numpy only).

An echo canceller sees ``mic[n] = near_end[n] + (h * reference)[n - delay] + noise[n]``, where the
bulk ``delay`` (playback buffering, device latency: often tens to hundreds of milliseconds) is
much larger than what a frame-based canceller can bridge. :func:`estimate_delay` finds it with the
generalised cross-correlation with phase transform (GCC-PHAT; C. H. Knapp and G. C. Carter,
"The generalized correlation method for estimation of time delay", IEEE TASSP 24(4), 1976): the
cross-spectrum ``M(f) conj(R(f))`` is whitened (``|.|^-beta``, ``beta = 1`` is PHAT) so that the
inverse transform has a sharp peak at the lag of the strongest echo path tap, whatever the
spectral colour of speech. :func:`align_reference` then shifts the reference by that lag.

Real recordings may also change their delay mid-call (a dropped or repeated audio buffer, a
device switch): :class:`DelayTracker` follows it online on a sliding window (the realtime engine
uses it live) and :func:`delay_schedule` turns a whole recording into a piecewise-constant delay
(the file path).

Sign convention: a positive delay means the echo in the microphone lags the reference (the
physical case): ``mic[n] ~ reference[n - delay]``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable

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


@dataclasses.dataclass(frozen=True)
class TrackerOptions:
    """Settings of :class:`DelayTracker` (seconds)."""

    max_delay_seconds: float = DEFAULT_MAX_DELAY_SECONDS
    window_seconds: float = 2.0
    min_history_seconds: float = 0.5
    update_seconds: float = 0.25
    tolerance_seconds: float = 0.004
    agreements: int = 2
    first_confidence: float = 10.0

    @property
    def detection_lag_seconds(self) -> float:
        """Longest time from a delay change to its adoption: the window of the first analysis that
        finds the new delay may begin right at the change, and ``agreements - 1`` more analyses must
        confirm it."""
        return self.window_seconds + (self.agreements - 1) * self.update_seconds


class DelayTracker:
    """Online GCC-PHAT estimate of how far the microphone's echo lags the far end.

    Policy: an analysis (:func:`estimate_delay` on the last ``window_seconds`` of both signals)
    runs every ``update_seconds`` once ``min_history_seconds`` are buffered; it counts only when
    its peak is reliable; a new delay is adopted when ``agreements`` consecutive reliable analyses
    agree within ``tolerance_seconds`` and differ from the current delay by more than that (before
    any delay is known, one analysis with confidence ``first_confidence`` suffices). Silence, a far
    end that never reaches the microphone (a headset) or a near-end talker alone give no reliable
    peak and change nothing.

    Args:
        sample_rate: rate of both signals, in Hz.
        options: window, update period and adoption rule (:class:`TrackerOptions`).
        initial_delay: a delay already known (e.g. measured on the whole recording), in samples;
            None starts from 0 with the first delay still to be found.
        history_seconds: keep this much of both signals (at least the analysis window) for
            :meth:`history`.
    """

    def __init__(
        self, sample_rate: int, options: TrackerOptions | None = None, initial_delay: int | None = None,
        history_seconds: float = 0.0,
    ) -> None:
        self.options = options or TrackerOptions()
        if self.options.max_delay_seconds <= 0 or self.options.window_seconds <= self.options.max_delay_seconds:
            raise AudioError(
                "the delay search needs 0 < max_delay_seconds < window_seconds, got "
                f"{self.options.max_delay_seconds} and {self.options.window_seconds}"
            )
        self.sample_rate = int(sample_rate)
        self.initial_delay = initial_delay
        self._window = int(round(self.options.window_seconds * sample_rate))
        self._min_history = int(round(self.options.min_history_seconds * sample_rate))
        self._update = max(1, int(round(self.options.update_seconds * sample_rate)))
        self._tolerance = int(round(self.options.tolerance_seconds * sample_rate))
        kept = max(self._window, int(round(history_seconds * sample_rate)))
        self._history = np.zeros((2, kept), dtype=np.float32)  # [mic, far] x kept samples (oldest first)
        self.reset()

    def reset(self) -> None:
        """Forget the history and the estimate (a new stream)."""
        self._history.fill(0.0)
        self._filled = 0
        self._since_update = 0
        self._candidate: int | None = None
        self._agreeing = 0
        #: the adopted delay in samples (0, or ``initial_delay``, until the first adoption)
        self.delay = int(self.initial_delay or 0)
        #: how many times the adopted delay changed
        self.changes = 0
        #: confidence of the last analysis (0: silent or not run)
        self.confidence = 0.0

    def push(self, mic: np.ndarray, far: np.ndarray) -> bool:
        """Append one block of microphone and far-end samples (``[n]`` each); True when the
        adopted delay changed."""
        count, kept = mic.shape[-1], self._history.shape[-1]
        if count >= kept:
            self._history[0], self._history[1] = mic[-kept:], far[-kept:]
        else:
            self._history[:, :-count] = self._history[:, count:]
            self._history[0, -count:], self._history[1, -count:] = mic, far
        self._filled = min(kept, self._filled + count)
        self._since_update += count
        if self._filled < self._min_history or self._since_update < self._update:
            return False
        self._since_update = 0
        return self._analyse()

    def history(self) -> np.ndarray:
        """The kept microphone and far-end samples ``[2, n]``, newest last."""
        return self._history[:, -self._filled :] if self._filled else self._history[:, :0]

    def _analyse(self) -> bool:
        history = self._history[:, -min(self._filled, self._window) :]
        estimate = estimate_delay(
            history[0], history[1], self.sample_rate, self.options.max_delay_seconds, analysis_seconds=None
        )
        self.confidence = estimate.confidence
        if not estimate.reliable:
            self._candidate, self._agreeing = None, 0
            return False
        if self._candidate is not None and abs(estimate.samples - self._candidate) <= self._tolerance:
            self._agreeing += 1
        else:
            self._agreeing = 1
        self._candidate = estimate.samples
        first = self.changes == 0 and self.initial_delay is None
        confident_first = first and estimate.confidence >= self.options.first_confidence
        if (self._agreeing < self.options.agreements and not confident_first) or (
            abs(estimate.samples - self.delay) <= self._tolerance
        ):
            return False
        self.delay = estimate.samples
        self.changes += 1
        return True


def locate_change(
    mic: np.ndarray, far: np.ndarray, old: int, new: int, sample_rate: int,
    window_seconds: float = 0.5, hop_seconds: float = 0.1,
) -> int | None:
    """Where in ``mic`` the echo moves from lag ``old`` to lag ``new`` (samples, the same history of both).

    Slides a ``window_seconds`` window in steps of ``hop_seconds`` and compares the whitened
    cross-correlation (GCC-PHAT) of each window at the two lags; windows whose difference stands
    out (above twice its RMS over the searched lags) vote. Returns the centre of the first voting
    window after which every vote goes to ``new``, or None when no window votes for ``new``.
    """
    window = int(round(window_seconds * sample_rate))
    hop = max(1, int(round(hop_seconds * sample_rate)))
    longest, shortest = max(old, new, 0), min(old, new, 0)
    votes: list[tuple[int, bool]] = []
    for start in range(longest, mic.shape[-1] - window + 1, hop):
        mic_window = mic[start : start + window].astype(np.float64)
        far_window = far[start - longest : start + window - shortest].astype(np.float64)
        if np.sqrt(np.mean(mic_window**2)) < SILENCE_RMS or np.sqrt(np.mean(far_window**2)) < SILENCE_RMS:
            continue
        # mic[start + n + lag] ~ far[start - longest + n] when lag = delay - longest
        lags, correlation = gcc_phat(mic_window, far_window, max_lag=-shortest, min_lag=shortest - longest)
        rms = float(np.sqrt(np.mean(correlation**2)))
        at_new, at_old = (float(correlation[delay - longest - lags[0]]) for delay in (new, old))
        if rms > 0 and abs(at_new - at_old) > 2.0 * rms:
            votes.append((start + window // 2, at_new > at_old))
    for index, (centre, for_new) in enumerate(votes):
        if for_new and all(vote for _, vote in votes[index:]):
            return centre
    return None


def delay_schedule(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    sample_rate: int,
    initial_delay: int,
    options: TrackerOptions | None = None,
) -> list[tuple[int, int]]:
    """Where the bulk delay of a recording changes: ``[(start_sample, delay_samples), ...]``.

    ``pairs`` yields microphone and far-end blocks (``[n]`` each, the same ``n``, at
    ``sample_rate``) from the start of the recording. A :class:`DelayTracker` starting from
    ``initial_delay`` follows them. The recording is known in advance, so each adopted change is
    dated back: :func:`locate_change` finds it in the last
    :attr:`TrackerOptions.detection_lag_seconds` before its adoption (0.5 s windows), and the new
    delay starts a quarter second on the causal side of it: before it for a shorter delay (the
    echo then arrives earlier; until the change it merely lags a little more), after it for a
    longer one (switching before the change would make the echo lead the far end, which no causal
    filter can cancel). Where the change cannot be located, a shorter delay starts at the earliest
    moment the change can have happened and a longer one at its adoption. The first entry is
    ``(0, initial_delay)``; starts increase strictly.
    """
    options = options or TrackerOptions()
    # locate_change reads the detection span plus the longest delay before it
    tracker = DelayTracker(sample_rate, options, initial_delay=initial_delay,
                           history_seconds=options.detection_lag_seconds + options.max_delay_seconds)
    lag = int(round(options.detection_lag_seconds * sample_rate))
    margin = int(round(0.25 * sample_rate))
    schedule = [(0, int(initial_delay))]
    position = 0
    for mic, far in pairs:
        position += mic.shape[-1]
        if tracker.push(np.asarray(mic, np.float32), np.asarray(far, np.float32)):
            old, new = schedule[-1][1], tracker.delay
            history = tracker.history()  # [2, n]
            change = locate_change(history[0], history[1], old, new, sample_rate)
            if change is not None:
                start = position - history.shape[-1] + change + (margin if new > old else -margin)
            else:
                start = position - lag if new < old else position
            schedule.append((max(min(start, position), schedule[-1][0] + 1), new))
    return schedule


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
    "DelayTracker",
    "TrackerOptions",
    "align_reference",
    "check_pair_lengths",
    "delay_schedule",
    "estimate_delay",
    "locate_change",
    "gcc_phat",
]
