"""Errors raised by the realtime engine (subclasses of speechkit's, so the CLI reports them)."""
from __future__ import annotations

from speechkit.errors import SpeechkitError


class RealtimeError(SpeechkitError):
    """A stream cannot be set up or run (bad model file, device, budget or input)."""


class LatencyBudgetError(RealtimeError):
    """The configuration cannot meet the requested latency budget."""
