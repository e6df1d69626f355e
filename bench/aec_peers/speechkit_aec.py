"""speechkit's echo canceller (``complex_d3net_aec``) behind the same interface as the AEC peers.

It runs what ``speechkit aec`` and the Python API run, :meth:`speechkit.api.Processor.cancel_echo`:
the far-end reference is aligned to the microphone by the bulk delay GCC-PHAT finds (up to
500 ms, on the start of the clip: an offline step; a streaming application would estimate it once
and track it), then the network runs with its state carried through the clip. The output is
aligned with the input (no delay); the timed compute includes the delay estimation.

``model`` is a checkpoint path or bundled name (loaded with :func:`speechkit.api.load_echo_canceller`),
or ``"untrained:PRESET"`` (e.g. ``untrained:paper``) for a randomly initialised network: its quality
numbers mean nothing, but its real-time factor is the architecture's.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from bench.peers.base import Availability
from bench.peers.speechkit_model import is_trained

from .base import MIC_CHANNEL, REFERENCE_CHANNEL, AlignedEchoCanceller

#: prefix of a ``model`` argument that builds an untrained network from a preset
UNTRAINED_PREFIX = "untrained:"
#: the registry name of speechkit's echo-cancellation model
AEC_MODEL_NAME = "complex_d3net_aec"


class SpeechkitEchoCanceller(AlignedEchoCanceller):
    """A speechkit echo-cancellation checkpoint (or an untrained preset), run as ``speechkit aec`` runs it.

    Args:
        model: checkpoint path, bundled model name, or ``"untrained:PRESET"``.
        align: estimate and remove the bulk delay of the reference first (as ``speechkit aec``).
    """

    name = "speechkit"
    package = "speechkit"

    @classmethod
    def availability(cls) -> Availability:
        return Availability(True)

    def __init__(self, model: str | os.PathLike, align: bool = True) -> None:
        from speechkit.api import Processor, load_echo_canceller
        from speechkit.models import build_model

        reference = os.fspath(model)
        if reference.startswith(UNTRAINED_PREFIX):
            preset = reference[len(UNTRAINED_PREFIX) :] or "paper"
            self.processor = Processor(build_model(AEC_MODEL_NAME, preset), name=f"{AEC_MODEL_NAME} {preset}")
            self.processor.check_action("cancel_echo")
            self.provenance: dict[str, Any] = {"untrained": True, "preset": preset}
        else:
            self.processor = load_echo_canceller(reference)
            metadata = getattr(self.processor.model, "checkpoint_metadata", None) or {}
            self.provenance = metadata.get("provenance", {})
        self.network = self.processor.model
        self.model_reference = reference
        self.align = align
        # an adaptive filter without learned weights (linear_aec) needs no training to be meaningful
        self.trained = is_trained(self.provenance) or self.network.num_parameters() == 0
        self.native_rate = self.network.sample_rate  # type: ignore[misc]
        self.block_size = 1  # type: ignore[misc]
        self.stream_delay = 0  # type: ignore[misc]

    @property
    def algorithmic_latency(self) -> float | None:
        """The network's declared latency in seconds (None for a non-causal model)."""
        latency = self.network.algorithmic_latency
        return None if latency is None else latency / self.native_rate

    def describe(self) -> dict[str, Any]:
        """Model summary (architecture, parameters, latency), provenance and whether it was trained."""
        summary = dict(self.network.describe())
        summary.update(trained=self.trained, model_reference=self.model_reference, provenance=self.provenance)
        return summary

    def process_native(self, audio: np.ndarray, state: Any) -> np.ndarray:
        from speechkit.api import DEFAULT_MAX_DELAY_SECONDS

        max_delay_seconds = DEFAULT_MAX_DELAY_SECONDS if self.align else 0.0
        near_end = self.processor.cancel_echo(
            audio[MIC_CHANNEL], audio[REFERENCE_CHANNEL], self.native_rate, max_delay_seconds=max_delay_seconds
        )
        return np.asarray(near_end, dtype=np.float32)


__all__ = ["AEC_MODEL_NAME", "UNTRAINED_PREFIX", "SpeechkitEchoCanceller"]
