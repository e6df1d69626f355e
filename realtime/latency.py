"""Latency accounting: every term between a sample entering and its processed version leaving.

Timing model (all in samples at the model rate). The device (or a paced file) delivers input and
takes output in callbacks of ``device_block`` samples; callback ``k`` happens once input samples
``[k*B, (k+1)*B)`` have arrived and it takes output-stream samples ``[k*B, (k+1)*B)``. The model
runs one step per hop ``H``; step ``j`` needs input ``[j*H, (j+1)*H)`` and its output goes to
output-stream samples ``[j*H + P, (j+1)*H + P)``, where ``P`` is the output *prefill*. ``P`` is the
smallest value at which every step has at least ``compute_allowance`` samples of time (and at
least one callback) between the callback that completes its input and the callback that takes
its first output sample.

Terms:

* ``algorithmic`` = ``H + stream_delay`` (from the model: a hop must be collected, plus the delay
  of the streamed output against the offline output). For a chunk-mode model (``realtime.chunk``)
  ``H`` is the window minus the overlap and ``stream_delay`` the overlap: the algorithmic latency is
  the window length.
* ``buffering`` = ``P - H``: what the engine adds to fit the device block to the hop and to leave
  the step its compute time. The output stream equals the model's offline output delayed by
  exactly ``algorithmic + buffering`` samples (checked by the identity-model test).
* ``device_input`` / ``device_output``: what PortAudio reports for the opened stream (0 for files).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from .errors import LatencyBudgetError


def callback_completing_input(hop_index: int, hop_length: int, device_block: int) -> int:
    """Index of the callback after which the input of step ``hop_index`` is complete."""
    return -(-(hop_index + 1) * hop_length // device_block) - 1


def callback_taking_output(hop_index: int, hop_length: int, device_block: int, prefill: int) -> int:
    """Index of the callback that takes the first output sample of step ``hop_index``."""
    return (hop_index * hop_length + prefill) // device_block


def minimum_prefill(hop_length: int, device_block: int, compute_allowance: int | None = None) -> int:
    """Smallest output prefill ``P >= hop_length`` giving every step its compute time.

    Args:
        hop_length: model hop H in samples.
        device_block: samples per device callback B.
        compute_allowance: samples of time each step may take (default H, i.e. real time).
    """
    allowance = hop_length if compute_allowance is None else int(compute_allowance)
    period = device_block // math.gcd(device_block, hop_length)  # the pattern repeats every `period` hops
    prefill = hop_length
    while True:
        fits = True
        for hop_index in range(period):
            gap = callback_taking_output(hop_index, hop_length, device_block, prefill) - callback_completing_input(
                hop_index, hop_length, device_block
            )
            if gap < 1 or gap * device_block < allowance:
                fits = False
                break
        if fits:
            return prefill
        prefill += 1


@dataclasses.dataclass(frozen=True)
class LatencyTerms:
    """Every latency term of a configured stream, in samples at ``sample_rate``.

    ``mode`` is the model's (``"stream"``, or ``"chunk"``/``"sampler"`` where the algorithmic term
    is the window).
    """

    sample_rate: int
    hop_length: int
    stream_delay: int
    device_block: int
    prefill: int
    device_input: int = 0
    device_output: int = 0
    mode: str = "stream"

    @property
    def algorithmic(self) -> int:
        """Hop plus stream delay of the model."""
        return self.hop_length + self.stream_delay

    @property
    def buffering(self) -> int:
        """Samples the engine adds for block/hop alignment and compute time."""
        return self.prefill - self.hop_length

    @property
    def signal_delay(self) -> int:
        """Delay of the output stream against the offline output (algorithmic + buffering)."""
        return self.algorithmic + self.buffering

    @property
    def total(self) -> int:
        """Input-to-output latency including the device."""
        return self.signal_delay + self.device_input + self.device_output

    def milliseconds(self, samples: int) -> float:
        """``samples`` in milliseconds."""
        return 1000.0 * samples / self.sample_rate

    def as_dict(self) -> dict[str, Any]:
        """Each term in samples and milliseconds."""
        terms = {
            "algorithmic": self.algorithmic,
            "buffering": self.buffering,
            "device_input": self.device_input,
            "device_output": self.device_output,
            "total": self.total,
        }
        result: dict[str, Any] = {f"{key}_samples": value for key, value in terms.items()}
        result.update({f"{key}_ms": self.milliseconds(value) for key, value in terms.items()})
        result.update(
            {"hop_length": self.hop_length, "device_block": self.device_block, "prefill": self.prefill, "mode": self.mode}
        )
        return result

    def describe(self) -> str:
        """One line: every term in ms."""
        algorithmic = "algorithmic" if self.mode == "stream" else f"{self.mode} window"
        return (
            f"latency {self.milliseconds(self.total):.2f} ms = {algorithmic} {self.milliseconds(self.algorithmic):.2f}"
            f" + buffering {self.milliseconds(self.buffering):.2f}"
            f" + device in {self.milliseconds(self.device_input):.2f} + out {self.milliseconds(self.device_output):.2f}"
        )

    def check_budget(self, budget_ms: float | None) -> None:
        """Raise :class:`LatencyBudgetError` when the total exceeds ``budget_ms``."""
        if budget_ms is None:
            return
        if self.milliseconds(self.total) > budget_ms + 1e-9:
            raise LatencyBudgetError(
                f"the configuration needs {self.describe()}, over the {budget_ms:g} ms budget; "
                "use a smaller device block, a model with a smaller hop, or raise --latency-ms"
            )
