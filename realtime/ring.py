"""Preallocated multi-channel ring buffer addressed by absolute sample index.

One producer and one consumer; writes and reads are numpy copies into/out of storage allocated
once. The buffer keeps the last ``capacity`` samples written, so a consumer can also read back
history (the engine's pass-through fallback does).
"""
from __future__ import annotations

import numpy as np


class RingBuffer:
    """``channels x capacity`` float32 samples; ``written`` counts every sample ever written."""

    def __init__(self, channels: int, capacity: int) -> None:
        if channels < 1 or capacity < 1:
            raise ValueError("a ring buffer needs at least one channel and one sample of capacity")
        self.channels = int(channels)
        self.capacity = int(capacity)
        self._data = np.zeros((self.channels, self.capacity), dtype=np.float32)
        self.written = 0

    def reset(self) -> None:
        """Forget everything (zero the storage, restart indices at 0)."""
        self._data.fill(0.0)
        self.written = 0

    @property
    def oldest(self) -> int:
        """Absolute index of the oldest sample still held."""
        return max(0, self.written - self.capacity)

    def write(self, block: np.ndarray) -> None:
        """Append ``block [channels, n]`` (n may exceed nothing: n <= capacity)."""
        count = block.shape[-1]
        if count > self.capacity:
            raise ValueError(f"block of {count} samples does not fit a ring of {self.capacity}")
        start = self.written % self.capacity
        first = min(count, self.capacity - start)
        self._data[:, start : start + first] = block[:, :first]
        if first < count:
            self._data[:, : count - first] = block[:, first:]
        self.written += count

    def write_zeros(self, count: int) -> None:
        """Append ``count`` zero samples."""
        start = self.written % self.capacity
        first = min(count, self.capacity - start)
        self._data[:, start : start + first] = 0.0
        if first < count:
            self._data[:, : count - first] = 0.0
        self.written += count

    def holds(self, start: int, count: int) -> bool:
        """True when samples ``[start, start + count)`` are all still in the buffer."""
        return start >= self.oldest and start + count <= self.written

    def read(self, start: int, out: np.ndarray) -> None:
        """Copy samples ``[start, start + out.shape[-1])`` into ``out [channels, n]``.

        Samples before index 0 or no longer held read as zeros; the caller must not ask for
        samples not yet written.
        """
        count = out.shape[-1]
        if start + count > self.written:
            raise ValueError("reading samples that were not written yet")
        skip = min(count, max(0, self.oldest - start))
        if skip:
            out[:, :skip] = 0.0
        position = start + skip
        remaining = count - skip
        offset = skip
        while remaining > 0:
            index = position % self.capacity
            span = min(remaining, self.capacity - index)
            out[:, offset : offset + span] = self._data[:, index : index + span]
            position += span
            offset += span
            remaining -= span
