"""speechkit's own enhancer (the bundled default, a bundled name or a checkpoint path) behind the
same interface as the peers.

Offline mode (default) runs :meth:`speechkit.api.Processor.enhance`, what a user of the Python API
calls: the output is aligned with the input (no delay). Streaming mode runs the model's
``forward_step`` block by block with its explicit state, as a real-time engine would, so its output
is delayed by ``stream_delay`` and its speed includes the per-block overhead.
"""
from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from .base import Availability, Enhancer, resample


def is_trained(provenance: dict[str, Any]) -> bool:
    """Whether checkpoint provenance records any training (``steps_trained`` > 0 and not ``untrained``)."""
    if provenance.get("untrained"):
        return False
    return int(provenance.get("steps_trained") or 0) > 0


class SpeechkitEnhancer(Enhancer):
    """A speechkit enhancement checkpoint.

    Args:
        model: bundled model name or checkpoint path (None: the bundled default).
        streaming: run ``forward_step`` block by block instead of the offline API (causal models only).
        attenuation_limit_db: offline only: the API's attenuation limit (input added back this many dB down).
    """

    name = "speechkit"
    package = "speechkit"

    @classmethod
    def availability(cls) -> Availability:
        return Availability(True)

    def __init__(
        self, model: str | os.PathLike | None = None, streaming: bool = False, attenuation_limit_db: float | None = None
    ) -> None:
        import speechkit
        from speechkit.errors import ConfigError
        from speechkit.pretrained import DEFAULT_MODEL

        if streaming and attenuation_limit_db is not None:
            raise ConfigError("the attenuation limit is applied by the offline API only; drop it with --streaming")
        self.processor = speechkit.load(model, attenuation_limit_db=attenuation_limit_db)
        self.model_reference = str(model) if model is not None else DEFAULT_MODEL
        network = self.processor.model
        if network.num_sources != 1 or network.num_input_channels != 1:
            raise ConfigError(
                f"{self.model_reference} is a {network.task} model with {network.num_sources} source(s); "
                "the comparison needs a single-channel enhancement model"
            )
        if streaming and not network.supports_streaming:
            raise ConfigError(f"{self.model_reference} ({network.name}) does not stream; run it offline")
        self.streaming = streaming
        self.native_rate = network.sample_rate  # type: ignore[misc]
        self.block_size = network.block_size if streaming else 1  # type: ignore[misc]
        self.stream_delay = network.stream_delay if streaming else 0  # type: ignore[misc]
        metadata = getattr(network, "checkpoint_metadata", None) or {}
        self.provenance: dict[str, Any] = metadata.get("provenance", {})
        self.trained = is_trained(self.provenance)
        self.name = "speechkit" + ("-stream" if streaming else "")  # type: ignore[misc]
        if attenuation_limit_db is not None:
            self.name += f"-attlim{attenuation_limit_db:g}"  # type: ignore[misc]

    @property
    def algorithmic_latency(self) -> float | None:
        """The model's declared latency in seconds (None for a non-causal model)."""
        latency = self.processor.model.algorithmic_latency
        return None if latency is None else latency / self.native_rate

    def describe(self) -> dict[str, Any]:
        """Model summary (architecture, parameters, latency) plus whether it was trained."""
        summary = self.processor.describe()
        summary["trained"] = self.trained
        summary["model_reference"] = self.model_reference
        return summary

    def flush_length(self, sample_rate: int) -> int:
        if not self.streaming:
            return 0
        return super().flush_length(sample_rate)

    def process(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        if self.streaming:
            return super().process(audio, sample_rate)
        start_time = time.perf_counter()
        enhanced = self.processor.enhance(np.asarray(audio, dtype=np.float32), sample_rate)  # [C=1, T]
        self.last_compute_seconds = time.perf_counter() - start_time
        return np.asarray(enhanced[0], dtype=np.float32)

    def new_state(self) -> Any:
        return self.processor.model.initial_state(1)

    def process_native(self, audio: np.ndarray, state: Any) -> np.ndarray:
        import torch

        network = self.processor.model
        source = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None, None]  # [T] -> [1, 1, T]
        pieces = []
        with torch.inference_mode():
            for start in range(0, source.shape[-1], self.block_size):
                block, state = network.forward_step(source[..., start : start + self.block_size], state)
                pieces.append(block[0, 0, 0])  # [1, 1, 1, block] -> [block]
        return torch.cat(pieces).numpy()


__all__ = ["SpeechkitEnhancer", "is_trained", "resample"]
