"""The echo-cancellation pipeline: microphone and far-end blocks paired, aligned and run through a Pipeline."""
from __future__ import annotations

from collections.abc import Sequence

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

    ``delay_samples`` may also be a schedule ``[(start_sample, delay_samples), ...]`` (starts
    increasing from 0, see :func:`speechkit.delay.delay_schedule`): from each start on the
    reference is shifted by that entry's delay. The model's state carries on across a change, so
    an adaptive filter keeps the echo path it learned; only the alignment moves (a longer delay
    ``d' > d`` feeds the last ``d' - d`` reference samples again, a shorter one skips ``d - d'``).

    Args:
        model: an echo canceller (two input channels: microphone, far end).
        mic_rate: rate of the microphone blocks (and of the output).
        reference_rate: rate of the reference blocks.
        delay_samples: bulk delay of the echo in samples at ``mic_rate``, or a schedule of them.
        chunk_seconds, overlap_seconds, device, streaming: as for :class:`Pipeline`.
    """

    def __init__(
        self,
        model: SpeechModel,
        mic_rate: int,
        reference_rate: int,
        delay_samples: int | Sequence[tuple[int, int]] = 0,
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
        schedule = [(0, int(delay_samples))] if isinstance(delay_samples, (int, np.integer)) else [
            (int(start), int(delay)) for start, delay in delay_samples
        ]
        starts = [start for start, _ in schedule]
        if not schedule or starts[0] != 0 or any(later <= earlier for earlier, later in zip(starts, starts[1:])):
            raise ConfigError(f"a delay schedule must start at sample 0 with increasing starts, got {starts[:4]}")
        self._starts = np.asarray(starts, dtype=np.int64)  # [K]
        self._delays = np.asarray([delay for _, delay in schedule], dtype=np.int64)  # [K]
        self._mic = np.zeros(0, dtype=np.float32)
        self._mic_start = 0  # absolute index of self._mic[0]
        self._reference = np.zeros(0, dtype=np.float32)  # resampled, unaligned
        self._reference_start = 0  # absolute index of self._reference[0]
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

    @property
    def delay_schedule(self) -> list[tuple[int, int]]:
        """The alignment in use: ``[(start_sample, delay_samples), ...]``."""
        return [(int(start), int(delay)) for start, delay in zip(self._starts, self._delays)]

    def _add_reference(self, samples: np.ndarray) -> None:
        self._reference = np.concatenate([self._reference, samples])  # [k + n']

    def _run(self, final: bool) -> np.ndarray:
        """Feed the paired samples (all the microphone's once the reference has ended) to the pipeline."""
        positions = self._mic_start + np.arange(self._mic.shape[-1])  # [k] absolute microphone indices
        sources = positions - self._delays[np.searchsorted(self._starts, positions, side="right") - 1]  # [k]
        reference_end = self._reference_start + self._reference.shape[-1]
        if self._reference_ended:
            count = self._mic.shape[-1]
        else:  # pair only the samples whose reference has arrived
            missing = np.flatnonzero(sources >= reference_end)
            count = int(missing[0]) if missing.size else self._mic.shape[-1]
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        offsets = sources[:count] - self._reference_start  # [count]
        inside = (sources[:count] >= 0) & (offsets >= 0) & (offsets < self._reference.shape[-1])
        reference = np.zeros(count, dtype=np.float32)
        reference[inside] = self._reference[offsets[inside]]
        pair = np.stack([self._mic[:count], reference])  # [2, count]
        self._mic = self._mic[count:]
        self._mic_start += count
        # keep the reference the remaining samples can still read: back to the largest delay ahead
        ahead = self._delays[max(0, int(np.searchsorted(self._starts, self._mic_start, side="right")) - 1) :]
        keep_from = self._mic_start - int(ahead.max()) - self._reference_start
        if keep_from > 0:
            self._reference = self._reference[keep_from:]
            self._reference_start += keep_from
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
