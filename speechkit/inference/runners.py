"""Model runners over a stream of model-rate blocks: cross-faded chunks or carried streaming state.

:class:`ChunkedRunner` runs a model on fixed-length chunks that overlap by ``overlap_length``
samples and joins them with the cross-fade of :mod:`speechkit.crossfade` (sources re-aligned
across chunks for separation models). :class:`StreamingRunner` feeds a streaming model's
``forward_step`` in steps of whole blocks with the state carried throughout (equal to one offline
pass). :func:`make_runner` picks one. See :mod:`speechkit.inference` for the whole picture.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from ..crossfade import MIN_MODEL_INPUT, CrossfadeJoiner
from ..errors import ConfigError
from ..models.base import SpeechModel


def select_device(device: str | torch.device = "cpu") -> torch.device:
    """Validate a device name (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"``) and return it.

    ``"auto"`` picks CUDA when available, else the CPU. Requesting CUDA on a machine without it
    raises :class:`~speechkit.errors.ConfigError` instead of failing later.
    """
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        selected = torch.device(name)
    except (RuntimeError, ValueError) as error:
        raise ConfigError(f"unknown device {device!r} (use cpu, cuda, cuda:N or auto)") from error
    if selected.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} was requested but CUDA is not available here; use --device cpu")
        if selected.index is not None and selected.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {device!r} does not exist (this machine has {torch.cuda.device_count()} CUDA device(s))"
            )
    elif selected.type != "cpu":
        raise ConfigError(f"device type {selected.type!r} is not supported (use cpu or cuda)")
    return selected


def _zero_nonfinite(output: np.ndarray) -> tuple[np.ndarray, int]:
    """``output`` with its NaN/Inf samples replaced by 0, and how many there were."""
    finite = np.isfinite(output)
    if finite.all():
        return output, 0
    return np.where(finite, output, np.float32(0.0)), int((~finite).sum())


class ChunkedRunner:
    """Run a model over a stream of model-rate blocks in overlapping chunks.

    Args:
        model: a :class:`~speechkit.models.base.SpeechModel` (put in eval mode here).
        channel_groups: input channels fed together as one batch item, e.g. ``[[0], [1]]`` to
            process two channels independently with a mono model, ``[[0, 1]]`` for a two-input model.
        chunk_length: samples per chunk.
        overlap_length: samples shared by consecutive chunks (cross-faded), at most ``chunk_length // 2``
            (as the realtime chunk mode; a longer overlap would cross-fade over chunks that are not
            neighbours).
        device: where the model runs.
        align_sources: re-order each chunk's sources to match the previous chunk.
    """

    def __init__(
        self,
        model: SpeechModel,
        channel_groups: list[list[int]],
        chunk_length: int,
        overlap_length: int,
        device: torch.device | str = "cpu",
        align_sources: bool = True,
    ) -> None:
        if chunk_length <= 0 or overlap_length < 0 or overlap_length >= chunk_length:
            raise ConfigError(
                f"need 0 <= overlap ({overlap_length}) < chunk length ({chunk_length}) samples"
            )
        if overlap_length > chunk_length // 2:  # as the realtime chunk mode: a cross-fade spans at most half a chunk
            raise ConfigError(
                f"the overlap ({overlap_length} samples) may be at most half the chunk ({chunk_length} samples); "
                "lower the overlap or lengthen the chunk"
            )
        self.model = model.eval()
        self.channel_groups = [list(group) for group in channel_groups]
        self.chunk_length = int(chunk_length)
        self.overlap_length = int(overlap_length)
        self.device = torch.device(device)
        self.align_sources = align_sources
        self.num_sources = int(model.num_sources)
        self.output_channels = len(self.channel_groups) * int(model.num_output_channels)
        self.nonfinite_outputs = 0
        self.chunks_processed = 0
        self._num_input_channels = sum(len(group) for group in self.channel_groups)
        self._buffer = np.zeros((self._num_input_channels, 0), dtype=np.float32)
        self._joiner = CrossfadeJoiner(self.overlap_length, self.num_sources, align_sources)

    def push(self, block: np.ndarray) -> np.ndarray:
        """Add input ``[C, n]``; returns the output ``[S, C_out, m]`` that is now final (m may be 0)."""
        buffer = np.concatenate([self._buffer, block.astype(np.float32, copy=False)], axis=-1)  # [C, k + n]
        pieces = []
        hop = self.chunk_length - self.overlap_length
        start = 0
        while buffer.shape[-1] - start >= self.chunk_length:
            chunk_output = self._run(buffer[:, start : start + self.chunk_length])  # [S, C_out, N]
            pieces.append(self._join(chunk_output, final=False))
            start += hop
        self._buffer = buffer[:, start:].copy()  # [C, k + n] -> [C, < N] (only the unprocessed rest is kept)
        return self._concat(pieces)

    def flush(self) -> np.ndarray:
        """The remaining output ``[S, C_out, m]`` once the input has ended."""
        pending = self._buffer.shape[-1]
        if self._tail is None:  # never reached one full chunk: process everything at once
            output = self._join(self._run(self._buffer), final=True) if pending else self._empty()
        elif pending > self.overlap_length:
            output = self._join(self._run(self._buffer), final=True)
        else:  # only the already processed overlap is left
            output = self._tail
        self._buffer = self._buffer[:, :0]
        self._tail = None
        return output

    # ------------------------------------------------------------------ internals
    def _empty(self) -> np.ndarray:
        return np.zeros((self.num_sources, self.output_channels, 0), dtype=np.float32)

    def _concat(self, pieces: list[np.ndarray]) -> np.ndarray:
        if not pieces:
            return self._empty()
        return np.concatenate(pieces, axis=-1)  # [S, C_out, sum m]

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        """Model output ``[S, C_out, L]`` for input ``[C, L]``, one channel group at a time."""
        length = chunk.shape[-1]
        outputs = []
        for group in self.channel_groups:
            group_input = chunk[group]  # [C, L] -> [C_g, L]
            if not np.any(group_input):  # digital silence: no model call, exact zeros out
                outputs.append(
                    np.zeros((self.num_sources, self.model.num_output_channels, length), dtype=np.float32)
                )
                continue
            padded_length = max(length, MIN_MODEL_INPUT)
            model_input = torch.from_numpy(
                np.pad(group_input, ((0, 0), (0, padded_length - length)))
            )[None]  # [C_g, L'] -> [1, C_g, L']
            with torch.inference_mode():
                estimate = self.model(model_input.to(self.device))  # [1, C_g, L'] -> [1, S, C_out, L']
            estimate = estimate[0, :, :, :length].float().cpu().numpy()  # -> [S, C_out, L]
            estimate, nonfinite = _zero_nonfinite(estimate)
            self.nonfinite_outputs += nonfinite
            outputs.append(estimate)
        self.chunks_processed += 1
        return np.concatenate(outputs, axis=1)  # G x [S, C_out, L] -> [S, G*C_out, L]

    def _join(self, chunk_output: np.ndarray, final: bool) -> np.ndarray:
        """Cross-fade ``chunk_output`` onto the pending tail (see :class:`~speechkit.crossfade.CrossfadeJoiner`)."""
        return self._joiner.join(chunk_output, final)

    @property
    def _tail(self) -> np.ndarray | None:
        return self._joiner.tail

    @_tail.setter
    def _tail(self, value: np.ndarray | None) -> None:
        self._joiner.tail = value

    @property
    def permutations_applied(self) -> int:
        """Chunks whose sources were re-ordered to match the previous chunk."""
        return self._joiner.permutations_applied


#: torch threads during streaming steps (None: leave torch's setting). Measured on the 2-core
#: development machine while it also trained a model (load ~8), per forward_step call with 1 vs 2
#: threads: conv_tasnet enhance_causal_16k one 32-sample block 7.7 vs 135 ms, a 1 s step (500
#: blocks) 74 vs 1406 ms; complex_d3net_aec paper one 256-sample hop 133 vs 2087 ms. Steps are
#: small sequential calls where extra threads mostly wait on each other, so they run on one thread
#: (restored afterwards); pass ``num_threads=None`` to :class:`StreamingRunner` to keep torch's.
STEP_THREADS = 1


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(num_threads)``, restoring the previous value after."""
    previous = torch.get_num_threads()
    if num_threads is None or num_threads == previous:
        yield
        return
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def max_step_blocks(model: SpeechModel, group_size: int, device: torch.device | str = "cpu") -> int:
    """2 if ``model.forward_step`` accepts several blocks per call with the same result, else 1.

    Checked once by running two random blocks in one call and in two calls from a fresh state
    (models whose step only takes one block raise or disagree). The answer "2" means "any whole
    number": the contract is that a step of ``k`` blocks equals ``k`` steps of one block.
    """
    block = int(model.block_size)
    generator = torch.Generator().manual_seed(0)
    probe = 0.1 * torch.randn(1, group_size, 2 * block, generator=generator).to(device)  # [1, C_g, 2*block]
    with torch.inference_mode():
        try:
            joint, _ = model.forward_step(probe, model.initial_state(1))  # [1, S, C_out, 2*block]
        except (RuntimeError, ValueError, IndexError, ConfigError):
            return 1
        first, state = model.forward_step(probe[..., :block], model.initial_state(1))
        second, _ = model.forward_step(probe[..., block:], state)
    separate = torch.cat([first, second], dim=-1)  # [1, S, C_out, 2*block]
    if joint.shape != separate.shape or not torch.allclose(joint, separate, rtol=1e-4, atol=1e-6):
        return 1
    return 2


class StreamingRunner:
    """Run a streaming model over model-rate blocks with its ``forward_step``, state carried throughout.

    The output equals ``model(x)`` on the whole signal (to float rounding): ``stream_delay`` zeros
    are fed after the end and the first ``stream_delay`` outputs are dropped. Memory is bounded by
    ``step_length`` samples of input plus the model state, whatever the length of the signal.

    Args:
        model: a model with ``supports_streaming`` (put in eval mode here).
        channel_groups: input channels fed together as one stream; every group must have the same
            size (the groups become the batch of the step), e.g. ``[[0], [1]]`` or ``[[0, 1]]``.
        step_length: input samples per model call (rounded down to whole blocks, at least one).
        device: where the model runs.
        num_threads: torch threads during the steps (default :data:`STEP_THREADS`; None leaves
            torch's setting).
    """

    def __init__(
        self,
        model: SpeechModel,
        channel_groups: list[list[int]],
        step_length: int,
        device: torch.device | str = "cpu",
        num_threads: int | None = STEP_THREADS,
    ) -> None:
        if not model.supports_streaming:
            raise ConfigError(f"{model.name} does not stream; use ChunkedRunner")
        sizes = {len(group) for group in channel_groups}
        if len(sizes) != 1 or 0 in sizes:
            raise ConfigError(f"streaming needs channel groups of one common size, got {channel_groups}")
        self.model = model.eval()
        self.channel_groups = [list(group) for group in channel_groups]
        self.device = torch.device(device)
        self.num_sources = int(model.num_sources)
        self.output_channels = len(self.channel_groups) * int(model.num_output_channels)
        self.block_size = int(model.block_size)
        self.stream_delay = int(model.stream_delay)
        group_size = sizes.pop()
        self.blocks_per_call = max(1, int(step_length) // self.block_size)
        with torch_threads(num_threads):
            multi_block = max_step_blocks(self.model, group_size, self.device) >= 2
        self.step_blocks = self.blocks_per_call if multi_block else 1
        self.num_threads = num_threads
        self.step_length = self.blocks_per_call * self.block_size
        self.nonfinite_outputs = 0
        self.chunks_processed = 0
        self.permutations_applied = 0  # sources never swap: one stream, one state
        self.frames_in = 0
        self.frames_out = 0
        self._num_input_channels = sum(len(group) for group in self.channel_groups)
        self._buffer = np.zeros((self._num_input_channels, 0), dtype=np.float32)
        self._to_drop = self.stream_delay
        with torch.inference_mode():
            self._state = list(model.initial_state(len(self.channel_groups)))

    def push(self, block: np.ndarray) -> np.ndarray:
        """Add input ``[C, n]``; returns the output ``[S, C_out, m]`` that is now final (m may be 0)."""
        self.frames_in += block.shape[-1]
        buffer = np.concatenate([self._buffer, block.astype(np.float32, copy=False)], axis=-1)  # [C, k + n]
        ready = (buffer.shape[-1] // self.step_length) * self.step_length
        self._buffer = buffer[:, ready:].copy()  # [C, k + n] -> [C, < step_length]
        return self._deliver(self._steps(buffer[:, :ready]), final=False)

    def flush(self) -> np.ndarray:
        """The remaining output ``[S, C_out, m]`` once the input has ended; totals the input length."""
        pending = self._buffer.shape[-1] + self.stream_delay
        padded = -(-pending // self.block_size) * self.block_size  # whole blocks
        tail = np.pad(self._buffer, ((0, 0), (0, padded - self._buffer.shape[-1])))  # [C, padded]
        self._buffer = self._buffer[:, :0]
        output = self._deliver(self._steps(tail), final=True)
        with torch.inference_mode():
            self._state = list(self.model.initial_state(len(self.channel_groups)))
        self._to_drop = self.stream_delay
        self.frames_in = self.frames_out = 0
        return output

    # ------------------------------------------------------------------ internals
    def _steps(self, signal: np.ndarray) -> np.ndarray:
        """Model output ``[S, C_out, L]`` of ``signal [C, L]`` (L whole blocks), advancing the state."""
        length = signal.shape[-1]
        if length == 0:
            return np.zeros((self.num_sources, self.output_channels, 0), dtype=np.float32)
        grouped = np.stack([signal[group] for group in self.channel_groups])  # [C, L] -> [G, C_g, L]
        model_input = torch.from_numpy(grouped).to(self.device)
        pieces = []
        step = self.step_blocks * self.block_size
        with torch.inference_mode(), torch_threads(self.num_threads):
            for start in range(0, length, step):
                estimate, self._state = self.model.forward_step(
                    model_input[..., start : start + step], self._state
                )  # [G, C_g, n] -> [G, S, C_out, n]
                pieces.append(estimate)
        self.chunks_processed += 1
        estimate = torch.cat(pieces, dim=-1)  # [G, S, C_out, L]
        groups, sources, channels, _ = estimate.shape
        estimate = estimate.transpose(0, 1).reshape(sources, groups * channels, length)  # [S, G*C_out, L]
        output, nonfinite = _zero_nonfinite(estimate.float().cpu().numpy())
        self.nonfinite_outputs += nonfinite
        return output

    def _deliver(self, output: np.ndarray, final: bool) -> np.ndarray:
        """Drop the stream delay; never deliver more than came in (exactly that much on ``final``)."""
        if self._to_drop:
            dropped = min(self._to_drop, output.shape[-1])
            output = output[..., dropped:]
            self._to_drop -= dropped
        allowed = self.frames_in - self.frames_out
        output = output[..., :allowed]
        if final and output.shape[-1] < allowed:  # cannot happen with whole blocks; kept as a guard
            output = np.pad(output, ((0, 0), (0, 0), (0, allowed - output.shape[-1])))
        self.frames_out += output.shape[-1]
        return output


def make_runner(
    model: SpeechModel,
    channel_groups: list[list[int]],
    chunk_length: int,
    overlap_length: int,
    device: torch.device | str = "cpu",
    streaming: bool | None = None,
) -> "ChunkedRunner | StreamingRunner":
    """The runner for ``model``: :class:`StreamingRunner` for streaming models, else :class:`ChunkedRunner`.

    ``streaming=None`` decides from ``model.supports_streaming``; ``False`` forces the chunked
    cross-fade path; ``True`` requires a streaming model. Both runners have ``push``/``flush``.
    """
    if streaming is None:
        streaming = bool(model.supports_streaming)
    if streaming:
        return StreamingRunner(model, channel_groups, step_length=chunk_length, device=device)
    return ChunkedRunner(model, channel_groups, chunk_length, overlap_length, device)


