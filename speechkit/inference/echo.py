"""The echo-cancellation pipeline: microphone and far-end blocks paired, aligned and run through a Pipeline."""
from __future__ import annotations

import numpy as np
import torch

from ..audio import StreamResampler
from ..errors import AudioError, ConfigError
from ..models.base import SpeechModel
from .pipeline import DEFAULT_CHUNK_SECONDS, DEFAULT_OVERLAP_SECONDS, Pipeline


class EchoPipeline:
    """Microphone and far-end reference blocks in, near-end blocks out (at the microphone rate), bounded memory.

    The reference is resampled to the microphone rate (when the rates differ), shifted by
    ``delay_samples`` (``aligned[n] = reference[n - delay_samples]``, see
    :func:`speechkit.delay.align_reference`), cut or zero-padded to the microphone's length and fed
    with the microphone as the two input channels of an echo-cancellation model through a
    :class:`Pipeline` (so a streaming model runs its ``forward_step`` with state carried across the
    whole recording). The two inputs may arrive in blocks of any sizes.

    Args:
        model: an echo canceller (two input channels: microphone, far end).
        mic_rate: rate of the microphone blocks (and of the output).
        reference_rate: rate of the reference blocks.
        delay_samples: bulk delay of the echo, in samples at ``mic_rate``.
        chunk_seconds, overlap_seconds, device, streaming: as for :class:`Pipeline`.
    """

    def __init__(
        self,
        model: SpeechModel,
        mic_rate: int,
        reference_rate: int,
        delay_samples: int = 0,
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
        overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
        device: torch.device | str = "cpu",
        streaming: bool | None = None,
    ) -> None:
        layout = model.input_layout
        if layout.far_end_channel is None or layout.num_microphones != 1:
            raise ConfigError(
                f"{model.name} is not an echo canceller with one microphone (it expects {layout.describe()})"
            )
        if mic_rate <= 0 or reference_rate <= 0:
            raise AudioError(f"invalid sample rates {mic_rate} and {reference_rate}")
        self.pipeline = Pipeline(model, mic_rate, 2, "separate", chunk_seconds, overlap_seconds, device, streaming)
        self.runner = self.pipeline.runner
        self._reference_in = StreamResampler(reference_rate, mic_rate, 1)
        self._mic = np.zeros(0, dtype=np.float32)
        self._reference = np.zeros(max(0, int(delay_samples)), dtype=np.float32)
        self._reference_skip = max(0, -int(delay_samples))
        self._reference_ended = False

    def push(self, mic_block: np.ndarray, reference_block: np.ndarray | None = None) -> np.ndarray:
        """Add microphone ``[n]`` and reference ``[n']`` samples; returns the near end ``[m]`` now final."""
        self._mic = np.concatenate([self._mic, np.asarray(mic_block, np.float32).reshape(-1)])  # [k + n]
        if reference_block is not None and len(reference_block):
            if self._reference_ended:
                raise AudioError("reference samples arrived after end_reference()")
            self._add_reference(self._reference_in.process(np.asarray(reference_block, np.float32).reshape(1, -1))[0])
        return self._run(final=False)

    def end_reference(self) -> None:
        """The reference has ended: the microphone is paired with zeros from now on."""
        if not self._reference_ended:
            self._add_reference(self._reference_in.flush()[0])
            self._reference_ended = True

    def finish(self) -> np.ndarray:
        """The rest of the near end ``[m]``; the total equals the microphone length exactly."""
        self.end_reference()
        head = self._run(final=True)
        return np.concatenate([head, self.pipeline.finish()[0, 0]])  # [m]

    def _add_reference(self, samples: np.ndarray) -> None:
        skipped = min(self._reference_skip, samples.shape[-1])
        self._reference_skip -= skipped
        self._reference = np.concatenate([self._reference, samples[skipped:]])  # [k + n']

    def _run(self, final: bool) -> np.ndarray:
        """Feed the paired samples (all the microphone's once the reference has ended) to the pipeline."""
        count = self._mic.shape[-1] if self._reference_ended else min(self._mic.shape[-1], self._reference.shape[-1])
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        reference = self._reference[:count]
        if reference.shape[-1] < count:  # the reference has ended: zeros after it
            reference = np.pad(reference, (0, count - reference.shape[-1]))
        pair = np.stack([self._mic[:count], reference])  # [2, count]
        self._mic = self._mic[count:]
        self._reference = self._reference[count:]
        if final:
            self._reference = self._reference[:0]  # reference beyond the microphone's end is cut
        return self.pipeline.push(pair)[0, 0]  # [S=1, C_out=1, m] -> [m]


class EchoFeed:
    """An :class:`EchoPipeline` in the shape :func:`speechkit.files.run_file` drives.

    ``push(mic [1, n], reference [1, n'] | None) -> [S=1, C=1, m]``, where a ``None`` reference block
    means the reference file has ended (the microphone is paired with zeros from then on);
    ``finish() -> [1, 1, m]``.
    """

    output_channels = 1

    def __init__(self, pipeline: EchoPipeline) -> None:
        self.pipeline = pipeline
        self.runner = pipeline.runner

    def push(self, mic_block: np.ndarray, reference_block: np.ndarray | None) -> np.ndarray:
        """Add one microphone block and the next reference block (None once the reference has ended)."""
        if reference_block is None:
            self.pipeline.end_reference()
            return self.pipeline.push(mic_block[0])[None, None]  # [1, n] -> [m] -> [1, 1, m]
        return self.pipeline.push(mic_block[0], reference_block[0])[None, None]  # [1, 1, m]

    def finish(self) -> np.ndarray:
        """The rest of the near end ``[1, 1, m]``."""
        return self.pipeline.finish()[None, None]
