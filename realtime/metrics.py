"""Stream metrics: per-step compute time percentiles, real-time factor, misses, ring and device events.

Storage is allocated once: the last ``window`` step times are kept in a ring (percentiles are over
that window); the maximum, the totals and the counters cover the whole stream.
"""
from __future__ import annotations

from typing import Any

import numpy as np

#: PortAudio callback status flags counted by :meth:`Metrics.count_status`
STATUS_FLAGS = ("input_underflow", "input_overflow", "output_underflow", "output_overflow", "priming_output")


class Metrics:
    """Counters of one stream (see the module docstring)."""

    def __init__(self, sample_rate: int, hop_length: int, window: int = 65536) -> None:
        self.sample_rate = int(sample_rate)
        self.hop_length = int(hop_length)
        self._step_times = np.zeros(int(window), dtype=np.float64)
        self._status_counts = np.zeros(len(STATUS_FLAGS), dtype=np.int64)
        self.algorithmic_latency_samples = 0
        self.latency_samples = 0
        self.reset()

    def set_latency(self, algorithmic_samples: int, total_samples: int) -> None:
        """The stream's configured latency (algorithmic: a chunk model's window; total: with
        buffering and the device), reported with the metrics."""
        self.algorithmic_latency_samples = int(algorithmic_samples)
        self.latency_samples = int(total_samples)

    def reset(self) -> None:
        """Zero every counter."""
        self._step_times.fill(0.0)
        self._status_counts.fill(0)
        self.steps = 0
        self.skipped_steps = 0
        self.compute_seconds = 0.0
        self.max_step_seconds = 0.0
        self.deadline_misses = 0
        self.ring_underflows = 0
        self.ring_overflows = 0
        self.max_backlog_samples = 0
        self.backlog_samples = 0

    def record_step(self, seconds: float) -> None:
        """One model step took ``seconds``."""
        self._step_times[self.steps % self._step_times.shape[0]] = seconds
        self.steps += 1
        self.compute_seconds += seconds
        if seconds > self.max_step_seconds:
            self.max_step_seconds = seconds

    def record_backlog(self, samples: int) -> None:
        """Input samples waiting for the worker right now."""
        self.backlog_samples = samples
        if samples > self.max_backlog_samples:
            self.max_backlog_samples = samples

    def count_status(self, status: Any) -> None:
        """Count the flags set in a PortAudio ``CallbackFlags`` (cheap; callable from the callback)."""
        for index, flag in enumerate(STATUS_FLAGS):
            if getattr(status, flag, False):
                self._status_counts[index] += 1

    @property
    def audio_seconds(self) -> float:
        """Audio processed by model steps, in seconds."""
        return self.steps * self.hop_length / self.sample_rate

    @property
    def real_time_factor(self) -> float:
        """Compute time over audio duration (below 1 keeps up)."""
        return self.compute_seconds / self.audio_seconds if self.steps else 0.0

    def percentiles_ms(self) -> dict[str, float]:
        """p50/p95/p99/max step time in milliseconds."""
        count = min(self.steps, self._step_times.shape[0])
        if count == 0:
            return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
        p50, p95, p99 = np.percentile(self._step_times[:count], [50, 95, 99])
        return {
            "p50_ms": 1000.0 * float(p50),
            "p95_ms": 1000.0 * float(p95),
            "p99_ms": 1000.0 * float(p99),
            "max_ms": 1000.0 * self.max_step_seconds,
        }

    def summary(self) -> dict[str, Any]:
        """Every metric as a JSON-ready dict."""
        return {
            "algorithmic_latency_samples": self.algorithmic_latency_samples,
            "algorithmic_latency_ms": 1000.0 * self.algorithmic_latency_samples / self.sample_rate,
            "latency_samples": self.latency_samples,
            "latency_ms": 1000.0 * self.latency_samples / self.sample_rate,
            "steps": self.steps,
            "skipped_steps": self.skipped_steps,
            "audio_seconds": self.audio_seconds,
            "compute_seconds": self.compute_seconds,
            "real_time_factor": self.real_time_factor,
            **self.percentiles_ms(),
            "deadline_misses": self.deadline_misses,
            "ring_underflows": self.ring_underflows,
            "ring_overflows": self.ring_overflows,
            "backlog_samples": self.backlog_samples,
            "max_backlog_samples": self.max_backlog_samples,
            "portaudio_status": {flag: int(count) for flag, count in zip(STATUS_FLAGS, self._status_counts)},
        }

    def describe(self) -> str:
        """One status line."""
        times = self.percentiles_ms()
        status = sum(int(count) for count in self._status_counts)
        return (
            f"{self.audio_seconds:7.2f} s  RTF {self.real_time_factor:.3f}  step p50 {times['p50_ms']:.3f}"
            f" p95 {times['p95_ms']:.3f} p99 {times['p99_ms']:.3f} max {times['max_ms']:.3f} ms"
            f"  misses {self.deadline_misses}  ring under/over {self.ring_underflows}/{self.ring_overflows}"
            f"  portaudio flags {status}"
        )
