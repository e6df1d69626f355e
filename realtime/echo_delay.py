"""Live bulk-delay alignment of the far end for echo-cancellation models.

Between the far-end signal handed to the loudspeaker and its echo in the microphone lie the
playback and capture buffers and the acoustic path: tens to hundreds of milliseconds that a
frame-based echo canceller cannot bridge. ``speechkit aec`` measures this bulk delay on the whole
file (GCC-PHAT) before cancelling; live there is no whole file, so :class:`DelayTracker` measures it
on a sliding window of the *past* microphone and far-end samples, and :class:`DelayAlignedModel`
feeds the model the far end delayed by the current estimate (minus the model's
``reference_lead``, exactly as the file path aligns it). Delaying the far end only reads older
samples, so the alignment adds no latency.

The tracking policy is :class:`speechkit.delay.DelayTracker`'s (numpy only; the file path uses it
too). Until the first adoption the far end is not delayed.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from speechkit.delay import DelayTracker, TrackerOptions  # numpy only

from .errors import RealtimeError


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
