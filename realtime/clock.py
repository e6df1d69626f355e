"""Clocks the engine schedules against: the real monotonic clock, or a virtual one for tests."""
from __future__ import annotations

import time


class RealClock:
    """``time.perf_counter`` seconds; ``sleep_until`` sleeps."""

    def now(self) -> float:
        """Current time in seconds."""
        return time.perf_counter()

    def sleep_until(self, deadline: float) -> None:
        """Block until ``deadline`` (returns at once if it has passed)."""
        remaining = deadline - time.perf_counter()
        if remaining > 0:
            time.sleep(remaining)


class VirtualClock:
    """A clock that only moves when told: ``sleep_until`` jumps, ``advance`` simulates work."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        """Current virtual time in seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (e.g. to simulate a slow model step)."""
        self._now += float(seconds)

    def sleep_until(self, deadline: float) -> None:
        """Jump to ``deadline`` if it is in the future."""
        self._now = max(self._now, float(deadline))
