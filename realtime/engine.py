"""The realtime engine: ring buffers between the device (or a file) and one model step per hop.

Data flow::

    source --push(block)--> input ring --worker: one step per hop--> output ring --pull(n)--> sink

``push`` and ``pull`` are what an audio callback does (copies into/out of preallocated rings);
the worker (:meth:`Engine.run_pending`) runs the model whenever a whole hop of input is there.
The output ring starts with ``prefill`` zeros (see :mod:`realtime.latency`), so the output
stream is the model's streamed output delayed by a fixed number of samples, and the total
signal delay is ``algorithmic + buffering`` samples, exactly.

Deadlines and fallback. Step ``j`` owns output-stream samples ``[j*hop + prefill, (j+1)*hop + prefill)``.
It misses its deadline when the sink needs its first sample before the step has finished: either
the sink already took (part of) that range when the worker gets to it, or, on a scheduled clock,
the step finished after the time of the callback that takes it. A missed step's whole range is
replaced by the *fallback* and counted once in ``metrics.deadline_misses``:

* ``"passthrough"`` (default): the input (first channel) delayed by the configured signal delay,
  copied to every output channel, so the listener hears the unprocessed signal in time;
* ``"silence"``: zeros.

A step whose deadline has passed before it starts is not computed at all (``skipped_steps``),
so a worker that fell behind catches up instead of carrying a growing backlog: the output stays
at the configured latency whatever happens (its timeline is fixed by the sink's clock), and the
model state simply continues from the last computed step.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import numpy as np

from .clock import RealClock
from .errors import RealtimeError
from .latency import LatencyTerms, callback_completing_input, callback_taking_output, minimum_prefill
from .metrics import Metrics
from .ring import RingBuffer

FALLBACKS = ("passthrough", "silence")


class Clock(Protocol):
    """What the engine needs from a clock."""

    def now(self) -> float: ...

    def sleep_until(self, deadline: float) -> None: ...


class StepModel(Protocol):
    """What the engine needs from a model (:class:`realtime.model.StreamModel`, or
    :class:`realtime.chunk.ChunkModel` whose hop is its window minus the overlap and whose
    ``stream_delay`` is the overlap, so the algorithmic latency is its window). An optional
    ``mode`` attribute (``"stream"``, ``"chunk"``, ``"sampler"``) is reported with the latency."""

    sample_rate: int
    hop_length: int
    stream_delay: int
    num_input_channels: int
    num_output_channels: int
    input_block: np.ndarray
    output_block: np.ndarray

    def step(self) -> np.ndarray: ...

    def reset(self) -> None: ...


class Engine:
    """Block scheduling of one streaming model under a fixed latency.

    Args:
        model: the step model (usually :class:`realtime.model.StreamModel`).
        device_block: samples per device callback (any value works with any hop).
        latency_budget_ms: refuse (raise :class:`realtime.errors.LatencyBudgetError`) a
            configuration whose total latency exceeds it.
        fallback: ``"passthrough"`` or ``"silence"`` for missed steps.
        compute_allowance: samples of time each step may take (default one hop).
        extra_buffer: additional output prefill in samples (safety margin).
        device_input: input device latency in samples (as reported by PortAudio).
        device_output: output device latency in samples.
        clock: time source (default the real clock; tests pass a virtual one).
        ring_seconds: capacity of the input ring (history for the fallback and worker backlog).
        step_hook: called with the hop index right after each step, inside the timed region
            (tests use it to inject slow steps on a virtual clock).
        variable_blocks: callbacks may bring any number of samples up to ``device_block``
            (PortAudio ``blocksize=0``); the prefill then grows to at least
            ``hop + device_block - 1`` so every step still completes one callback before its
            output is taken.
        attenuation_limit_db: add the (first) input channel back to every model output this many
            dB down, aligned by the signal delay, as ``speechkit enhance --attenuation-limit``
            does offline; None disables it.
    """

    def __init__(
        self,
        model: StepModel,
        device_block: int,
        *,
        latency_budget_ms: float | None = None,
        fallback: str = "passthrough",
        compute_allowance: int | None = None,
        extra_buffer: int = 0,
        device_input: int = 0,
        device_output: int = 0,
        clock: Clock | None = None,
        ring_seconds: float = 2.0,
        step_hook: Callable[[int], None] | None = None,
        variable_blocks: bool = False,
        attenuation_limit_db: float | None = None,
    ) -> None:
        from speechkit.audio import attenuation_limit_gain

        self.mix_back_gain = attenuation_limit_gain(attenuation_limit_db)
        if fallback not in FALLBACKS:
            raise RealtimeError(f"unknown fallback {fallback!r} (known: {', '.join(FALLBACKS)})")
        if device_block < 1:
            raise RealtimeError(f"the device block must be at least one sample, got {device_block}")
        self.model = model
        self.device_block = int(device_block)
        self.fallback = fallback
        self.clock: Clock = clock or RealClock()
        self.step_hook = step_hook
        hop_length = int(model.hop_length)
        prefill = minimum_prefill(hop_length, self.device_block, compute_allowance)
        if variable_blocks:
            prefill = max(prefill, hop_length + self.device_block - 1)
        prefill += int(extra_buffer)
        self.latency = LatencyTerms(
            mode=str(getattr(model, "mode", "stream")),
            sample_rate=int(model.sample_rate),
            hop_length=hop_length,
            stream_delay=int(model.stream_delay),
            device_block=self.device_block,
            prefill=prefill,
            device_input=int(device_input),
            device_output=int(device_output),
        )
        self.latency.check_budget(latency_budget_ms)
        self.metrics = Metrics(model.sample_rate, hop_length)
        self.metrics.set_latency(self.latency.algorithmic, self.latency.total)
        ring_capacity = max(int(ring_seconds * model.sample_rate), 8 * (hop_length + self.device_block) + prefill)
        self._input = RingBuffer(model.num_input_channels, ring_capacity + self.latency.signal_delay)
        self._output = RingBuffer(model.num_output_channels, 8 * (hop_length + self.device_block) + prefill)
        self._scratch_in = np.zeros((model.num_input_channels, hop_length + self.device_block), dtype=np.float32)
        self._scratch_out = np.zeros((model.num_output_channels, hop_length + self.device_block), dtype=np.float32)
        self._lock = threading.Lock()
        self._start_time = 0.0
        self.reset()

    # ------------------------------------------------------------------ lifecycle
    @property
    def signal_delay(self) -> int:
        """Samples between an input sample and its output in the stream (algorithmic + buffering)."""
        return self.latency.signal_delay

    def reset(self, start_time: float | None = None) -> None:
        """Start a new stream: zero model state, rings and metrics; prefill the output ring.

        Args:
            start_time: clock time of the stream's sample 0 (default: now), used for deadlines.
        """
        with self._lock:
            self.model.reset()
            self._input.reset()
            self._output.reset()
            self._output.write_zeros(self.latency.prefill)
            self._claimed = 0
            self._next_hop = 0
            self.metrics.reset()
        self._start_time = self.clock.now() if start_time is None else float(start_time)

    def warm_up(self, steps: int = 20) -> list[float]:
        """Run ``steps`` steps on low-level noise (timed), then reset; returns the step times in seconds.

        Noise, not silence: a chunk model does not compute windows of digital silence.
        """
        times = []
        self.model.input_block[...] = 1e-3 * np.random.default_rng(0).standard_normal(self.model.input_block.shape)
        for _ in range(steps):
            started = self.clock.now()
            self.model.step()
            times.append(self.clock.now() - started)
        self.reset()
        return times

    def slack_seconds(self) -> float:
        """Shortest time any step has between its input's callback and its output's callback."""
        hop_length, block = self.latency.hop_length, self.device_block
        period = block // math.gcd(block, hop_length)
        gaps = [
            callback_taking_output(index, hop_length, block, self.latency.prefill)
            - callback_completing_input(index, hop_length, block)
            for index in range(period)
        ]
        return min(gaps) * block / self.latency.sample_rate

    def check_compute(self, step_times: Iterable[float]) -> None:
        """Refuse a model that cannot keep up: warm-up mean step time above the hop duration
        (real-time factor above 1), or p99 above the shortest slack a step has before its deadline.
        """
        times = np.asarray(list(step_times), dtype=np.float64)
        if times.size == 0:
            return
        hop_seconds = self.latency.hop_length / self.latency.sample_rate
        mean = float(times.mean())
        if mean > hop_seconds:
            raise RealtimeError(
                f"a model step takes {1000 * mean:.2f} ms on average (warm-up) but a hop lasts "
                f"{1000 * hop_seconds:.2f} ms; this machine cannot run the model in real time"
            )
        p99 = float(np.percentile(times, 99))
        slack = self.slack_seconds()
        if p99 > slack:
            raise RealtimeError(
                f"the slowest model steps take {1000 * p99:.2f} ms (p99 of the warm-up), more than the "
                f"{1000 * slack:.2f} ms a step may take; raise --extra-buffer-ms or the device block"
            )

    # ------------------------------------------------------------------ callback side
    def push(self, block: np.ndarray) -> None:
        """The source delivers ``block [C_in, n]`` (audio-callback safe: one copy)."""
        count = block.shape[-1]
        if self._input.written + count - self._next_hop * self.latency.hop_length > self._input.capacity:
            self.metrics.ring_overflows += 1  # the worker is more than a ring behind: oldest input is lost
        self._input.write(block)

    def pull(self, out: np.ndarray) -> None:
        """The sink takes the next ``out.shape[-1]`` output samples into ``out [C_out, n]``.

        Samples the worker has not produced yet are filled with the fallback (ring underflow).
        """
        count = out.shape[-1]
        with self._lock:
            end = self._claimed + count
            if self._output.written < end:
                self.metrics.ring_underflows += 1
                self._write_fallback(self._output.written, end)
            self._output.read(self._claimed, out)
            self._claimed = end

    @property
    def pending_hops(self) -> int:
        """Whole hops of input that have arrived but not yet been run by the worker."""
        return max(0, self._input.written // self.latency.hop_length - self._next_hop)

    # ------------------------------------------------------------------ worker side
    def hop_deadline(self, hop_index: int) -> float:
        """Clock time of the callback that takes the first output sample of step ``hop_index``."""
        callback = callback_taking_output(hop_index, self.latency.hop_length, self.device_block, self.latency.prefill)
        return self._start_time + (callback + 1) * self.device_block / self.latency.sample_rate

    def run_pending(self, stop_time: float | None = None, scheduled: bool = False) -> int:
        """Run every step whose input has arrived; returns how many steps were considered.

        Args:
            stop_time: do not start a step at or after this clock time (the next callback).
            scheduled: also treat a step that finishes after :meth:`hop_deadline` as missed
                (single-threaded drivers with a fixed device block, where the callback that
                would have taken it runs only after the step).
        """
        hop_length = self.latency.hop_length
        handled = 0
        while self._input.written >= (self._next_hop + 1) * hop_length:
            if stop_time is not None and self.clock.now() >= stop_time:
                break
            self._run_hop(self._next_hop, scheduled)
            self._next_hop += 1
            handled += 1
        self.metrics.record_backlog(self._input.written - self._next_hop * hop_length)
        return handled

    def _run_hop(self, hop_index: int, scheduled: bool) -> None:
        hop_length = self.latency.hop_length
        first = hop_index * hop_length + self.latency.prefill
        with self._lock:
            already_late = self._output.written > first
        if already_late or not self._input.holds(hop_index * hop_length, hop_length):
            self._miss(first, skipped=True)
            return
        self._input.read(hop_index * hop_length, self.model.input_block)
        started = self.clock.now()
        output = self.model.step()
        if self.step_hook is not None:
            self.step_hook(hop_index)
        finished = self.clock.now()
        self.metrics.record_step(finished - started)
        with self._lock:
            late = self._output.written > first or (scheduled and finished > self.hop_deadline(hop_index))
            if not late:
                if self.mix_back_gain:
                    output = output + self.mix_back_gain * self._input_at_output(first)[:1]  # [C_out, hop]
                self._output.write(output)
                return
        self._miss(first, skipped=False)

    def _input_at_output(self, first: int) -> np.ndarray:
        """The input ``[C_in, hop]`` that output-stream samples ``[first, first + hop)`` are aligned with."""
        source = self._scratch_in[:, : self.latency.hop_length]
        self._input.read(first - self.signal_delay, source)
        return source

    def _miss(self, first: int, skipped: bool) -> None:
        self.metrics.deadline_misses += 1
        if skipped:
            self.metrics.skipped_steps += 1
        with self._lock:
            end = first + self.latency.hop_length
            if self._output.written < end:
                self._write_fallback(self._output.written, end)

    def _write_fallback(self, start: int, end: int) -> None:
        """Append the fallback for output-stream samples ``[start, end)`` (caller holds the lock)."""
        chunk = self._scratch_out.shape[-1]
        position = start
        while position < end:
            count = min(chunk, end - position)
            out = self._scratch_out[:, :count]
            if self.fallback == "passthrough":
                source = self._scratch_in[:, :count]
                self._input.read(position - self.signal_delay, source)
                out[...] = source[0]
            else:
                out.fill(0.0)
            self._output.write(out)
            position += count

    # ------------------------------------------------------------------ single-threaded drivers
    def run_array(
        self,
        x: np.ndarray,
        *,
        paced: bool = False,
        callback_sizes: Iterable[int] | None = None,
        compensate_latency: bool = True,
        progress: Callable[["Engine"], None] | None = None,
        progress_interval: float = 1.0,
    ) -> np.ndarray:
        """Stream a whole signal through the engine as a device would, and flush it.

        Callbacks deliver ``device_block`` samples each (or the sizes from ``callback_sizes``,
        cycled). Paced: each callback waits for its time on the clock (input arriving in real
        time) and steps are scheduled between callbacks with deadlines; otherwise everything
        runs as fast as possible. After the input, zeros are pushed until every input sample's
        output has come out (flush).

        Args:
            x: input ``[C_in, T]`` (or ``[T]`` for one channel).
            paced: real-time pacing on :attr:`clock`.
            callback_sizes: varying callback sizes (not with ``paced``).
            compensate_latency: drop the first ``signal_delay`` output samples so the output is
                aligned with the input; otherwise return the stream as heard (delayed).
            progress: called with the engine about every ``progress_interval`` clock seconds.

        Returns:
            ``[C_out, T]``, the same length as the input.
        """
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 1:
            x = x[None]  # [T] -> [1, T]
        if x.shape[0] != self.model.num_input_channels:
            raise RealtimeError(
                f"the model takes {self.model.num_input_channels} input channel(s) but the input has {x.shape[0]}"
            )
        if paced and callback_sizes is not None:
            raise RealtimeError("paced streaming uses the fixed device block; do not pass callback sizes")
        length = x.shape[-1]
        delay = self.signal_delay
        needed = length + delay
        sizes = _cycle(callback_sizes, self.device_block) if callback_sizes is not None else None
        stream = np.zeros((self.model.num_output_channels, needed + self.device_block), dtype=np.float32)
        self.reset()
        rate = self.latency.sample_rate
        pushed = 0
        next_report = self._start_time + progress_interval
        while self._claimed < needed:
            count = self.device_block if sizes is None else next(sizes)
            if paced:
                self.clock.sleep_until(self._start_time + (pushed + count) / rate)
            block = np.zeros((x.shape[0], count), dtype=np.float32)
            available = max(0, min(count, length - pushed))
            block[:, :available] = x[:, pushed : pushed + available]
            self.push(block)
            if stream.shape[-1] < self._claimed + count:
                stream = np.concatenate([stream, np.zeros_like(stream)], axis=-1)  # grow [C_out, 2 * L]
            self.pull(stream[:, self._claimed : self._claimed + count])
            pushed += count
            if paced:
                next_callback = self._start_time + (pushed + self.device_block) / rate
                self.run_pending(stop_time=next_callback, scheduled=True)
            else:
                self.run_pending()
            if progress is not None and self.clock.now() >= next_report:
                progress(self)
                next_report = self.clock.now() + progress_interval
        if compensate_latency:
            return stream[:, delay : delay + length].copy()
        return stream[:, :length].copy()

    def summary(self) -> dict[str, Any]:
        """Latency terms and metrics as one JSON-ready dict."""
        return {
            "mode": self.latency.mode,
            "latency": self.latency.as_dict(),
            "metrics": self.metrics.summary(),
            "fallback": self.fallback,
        }


def _cycle(sizes: Iterable[int], device_block: int) -> Iterator[int]:
    values = [int(size) for size in sizes]
    if not values or min(values) < 1 or max(values) > device_block:
        raise RealtimeError(f"callback sizes must be between 1 and the device block ({device_block})")
    while True:
        yield from values
