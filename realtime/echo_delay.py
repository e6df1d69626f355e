"""Live bulk-delay alignment of the far end for echo-cancellation models.

Between the far-end signal handed to the loudspeaker and its echo in the microphone lie the
playback and capture buffers and the acoustic path: tens to hundreds of milliseconds that a
frame-based echo canceller cannot bridge. ``speechkit aec`` measures this bulk delay on the whole
file (GCC-PHAT) before cancelling; live there is no whole file, so :class:`DelayTracker` measures it
on a sliding window of the *past* microphone and far-end samples, and :class:`DelayAlignedModel`
feeds the model the far end delayed by the current estimate (minus the model's
``reference_lead``, exactly as the file path aligns it). Delaying the far end only reads older
samples, so the alignment adds no latency.

Policy: an analysis runs every ``update_seconds`` once ``min_history_seconds`` are buffered; it
counts only when the correlation peak is reliable (the same confidence rule as
:func:`speechkit.delay.estimate_delay`); a new delay is adopted when ``agreements`` consecutive
reliable analyses agree within ``tolerance_seconds`` and differ from the current delay by more
than that. Until the first adoption the far end is not delayed. Silence, a far end that never
reaches the microphone (a headset) or a near-end talker alone give no reliable peak and change
nothing.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from speechkit.delay import estimate_delay  # numpy only

from .errors import RealtimeError


@dataclasses.dataclass(frozen=True)
class TrackerOptions:
    """Settings of :class:`DelayTracker` (seconds)."""

    max_delay_seconds: float = 0.5
    window_seconds: float = 2.0
    min_history_seconds: float = 0.5
    update_seconds: float = 0.25
    tolerance_seconds: float = 0.004
    agreements: int = 2
    first_confidence: float = 10.0


class DelayTracker:
    """Online GCC-PHAT estimate of how far the microphone's echo lags the far end.

    Args:
        sample_rate: rate of both signals, in Hz.
        options: window, update period and adoption rule (:class:`TrackerOptions`).
    """

    def __init__(self, sample_rate: int, options: TrackerOptions | None = None) -> None:
        self.options = options or TrackerOptions()
        if self.options.max_delay_seconds <= 0 or self.options.window_seconds <= self.options.max_delay_seconds:
            raise RealtimeError(
                "the delay search needs 0 < max_delay_seconds < window_seconds, got "
                f"{self.options.max_delay_seconds} and {self.options.window_seconds}"
            )
        self.sample_rate = int(sample_rate)
        self._window = int(round(self.options.window_seconds * sample_rate))
        self._min_history = int(round(self.options.min_history_seconds * sample_rate))
        self._update = max(1, int(round(self.options.update_seconds * sample_rate)))
        self._tolerance = int(round(self.options.tolerance_seconds * sample_rate))
        self._history = np.zeros((2, self._window), dtype=np.float32)  # [mic, far] x window (oldest first)
        self.reset()

    def reset(self) -> None:
        """Forget the history and the estimate (a new stream)."""
        self._history.fill(0.0)
        self._filled = 0
        self._since_update = 0
        self._candidate: int | None = None
        self._agreeing = 0
        #: the adopted delay in samples (0 until the first adoption)
        self.delay = 0
        #: how many times the adopted delay changed
        self.changes = 0
        #: confidence of the last analysis (0: silent or not run)
        self.confidence = 0.0

    def push(self, mic: np.ndarray, far: np.ndarray) -> bool:
        """Append one block of microphone and far-end samples (``[n]`` each); True when the
        adopted delay changed."""
        count = mic.shape[-1]
        if count >= self._window:
            self._history[0], self._history[1] = mic[-self._window :], far[-self._window :]
        else:
            self._history[:, :-count] = self._history[:, count:]
            self._history[0, -count:], self._history[1, -count:] = mic, far
        self._filled = min(self._window, self._filled + count)
        self._since_update += count
        if self._filled < self._min_history or self._since_update < self._update:
            return False
        self._since_update = 0
        return self._analyse()

    def _analyse(self) -> bool:
        history = self._history[:, -self._filled :]
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
        confident_first = self.changes == 0 and estimate.confidence >= self.options.first_confidence
        if (self._agreeing < self.options.agreements and not confident_first) or (
            abs(estimate.samples - self.delay) <= self._tolerance
        ):
            return False
        self.delay = estimate.samples
        self.changes += 1
        return True


class DelayAlignedModel:
    """A step model with a far-end channel, fed the far end aligned to the microphone's echo.

    Fill :attr:`input_block` (``[C_in, hop]``, the far end as the model's far-end channel) and call
    :meth:`step` as with the wrapped model; every other attribute is the wrapped model's.

    Args:
        model: the engine model (:class:`realtime.model.StreamModel`) of an echo canceller.
        delay_seconds: impose this bulk delay (no tracking); None tracks it live.
        options: tracker settings when tracking.
        restart_on_change: zero the model's state when the tracked delay changes, so that its
            adaptive filter starts from a clean state on the newly aligned far end (as the file path
            starts on an aligned far end) instead of unlearning the echo path of the old alignment.
    """

    def __init__(
        self,
        model: Any,
        delay_seconds: float | None = None,
        options: TrackerOptions | None = None,
        restart_on_change: bool = True,
    ) -> None:
        far_channel = model.input_layout.far_end_channel
        if far_channel is None:
            raise RealtimeError("delay alignment is only for echo-cancellation models (microphone plus far end)")
        self.model = model
        self.restart_on_change = restart_on_change
        self.far_channel = int(far_channel)
        rate = int(model.sample_rate)
        #: the model's own alignment margin: the far end is fed this much earlier than the delay
        self.reference_lead = int(model.metadata.get("reference_lead") or 0)
        options = options or TrackerOptions()
        self.tracker = None if delay_seconds is not None else DelayTracker(rate, options)
        self.fixed_delay = None if delay_seconds is None else int(round(delay_seconds * rate))
        longest = self.fixed_delay if self.fixed_delay is not None else int(round(options.max_delay_seconds * rate))
        hop = int(model.hop_length)
        self.input_block = np.zeros_like(model.input_block)  # [C_in, hop]
        self._far = np.zeros(max(longest, 0) + hop, dtype=np.float32)  # far-end history, newest last
        self.reset()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["model"], name)

    @property
    def delay(self) -> int:
        """The bulk delay in use, in samples."""
        return self.fixed_delay if self.tracker is None else self.tracker.delay

    @property
    def shift(self) -> int:
        """How many samples the far end is delayed: the bulk delay minus the model's lead, at least 0."""
        return min(max(0, self.delay - self.reference_lead), self._far.shape[-1] - self.model.hop_length)

    def reset(self) -> None:
        """A new stream: the wrapped model, the far-end history and the tracker start over."""
        self.model.reset()
        self.input_block.fill(0.0)
        self._far.fill(0.0)
        if self.tracker is not None:
            self.tracker.reset()

    def step(self) -> np.ndarray:
        """Run the wrapped model on this hop with the far end delayed by :attr:`shift`."""
        hop = self.model.hop_length
        far = self.input_block[self.far_channel]
        self._far[:-hop] = self._far[hop:]
        self._far[-hop:] = far
        if self.tracker is not None and self.tracker.push(self.input_block[0], far) and self.restart_on_change:
            self.model.reset()  # a new alignment: the linear stage re-learns the echo path from a clean start
        inner = self.model.input_block
        inner[...] = self.input_block
        end = self._far.shape[-1] - self.shift
        inner[self.far_channel] = self._far[end - hop : end]
        return self.model.step()

    def summary(self) -> dict[str, Any]:
        """The delay in use (ms), whether it was tracked, its changes and the last confidence, for JSON."""
        return {
            "delay_ms": 1000.0 * self.delay / self.model.sample_rate,
            "tracked": self.tracker is not None,
            "changes": 0 if self.tracker is None else self.tracker.changes,
            "confidence": None if self.tracker is None else self.tracker.confidence,
        }

    def describe(self) -> str:
        """One line: the delay in use and how it was found."""
        milliseconds = 1000.0 * self.delay / self.model.sample_rate
        if self.tracker is None:
            return f"far-end delay {milliseconds:.1f} ms (imposed)"
        return (
            f"far-end delay {milliseconds:.1f} ms (tracked live; {self.tracker.changes} change(s), "
            f"last confidence {self.tracker.confidence:.1f})"
        )


__all__ = ["DelayAlignedModel", "DelayTracker", "TrackerOptions"]
