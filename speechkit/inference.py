"""Bounded-memory inference over arbitrarily long signals.

The signal arrives in blocks of any size at any rate. :class:`Pipeline` resamples it (streaming,
soxr) to the model rate, :class:`ChunkedRunner` runs the model on fixed-length chunks that overlap
by ``overlap_length`` samples and joins them with a raised-cosine cross-fade (the fade-in and
fade-out sum to one), and the result is resampled back to the input rate. Only one chunk and one
overlap are held at a time, so memory does not grow with the length of the signal.

Chunk layout (``N`` = chunk length, ``O`` = overlap, hop ``N - O``)::

    chunk k   : [k(N-O), k(N-O) + N)
    emitted   : cross-fade of the previous chunk's last O outputs with this chunk's first O,
                then this chunk's outputs up to its last O (kept for the next cross-fade)

For separation models the order of the sources in each chunk is arbitrary; before the cross-fade
each chunk's sources are permuted to best match the previous chunk over the shared overlap
(normalised correlation), so speakers never swap at chunk boundaries.

Streaming models (``supports_streaming``) are not chunked: :class:`StreamingRunner` feeds the
signal through ``forward_step`` in steps of whole blocks, carrying the model state from one step to
the next, feeds ``stream_delay`` zeros after the end and drops the first ``stream_delay`` outputs.
The result equals one offline pass ``model(x)`` over the whole signal (a cumulative norm keeps its
statistics across the file) while only one step of audio is held at a time. Models whose
``forward_step`` takes several blocks per call are detected once (:func:`max_step_blocks`) and run
one step of up to ``chunk_seconds`` per call; others run one block per call. Torch runs the steps
on one thread (measured faster for these sequential calls, see :data:`STEP_THREADS`).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from .audio import StreamResampler, attenuation_limit_gain
from .channels import select_channels
from .crossfade import (  # noqa: F401 (best_source_order, crossfade_windows, MAX_EXHAUSTIVE_SOURCES re-exported)
    MAX_EXHAUSTIVE_SOURCES,
    MIN_MODEL_INPUT,
    CrossfadeJoiner,
    best_source_order,
    crossfade_windows,
)
from .errors import AudioError, ConfigError
from .models.base import SpeechModel

#: default chunk and overlap lengths in seconds (at the model rate)
DEFAULT_CHUNK_SECONDS = 10.0
DEFAULT_OVERLAP_SECONDS = 1.0
CHANNEL_MODES = ("separate", "mix")
#: default channel handling of enhancement (API and CLI): every channel on its own
ENHANCE_CHANNELS = "separate"
#: default channel handling of separation (API and CLI): average the channels to mono first, since a
#: multichannel mixture holds the same talkers on every channel and separating each channel on its
#: own would give every channel its own, unrelated source order
SEPARATE_CHANNELS = "mix"


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
        overlap_length: samples shared by consecutive chunks (cross-faded), ``< chunk_length``.
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


class Pipeline:
    """Input-rate blocks in, input-rate model outputs out, in bounded memory.

    Handles channel layout (``channels="separate"`` runs a mono model on every channel,
    ``"mix"`` averages the channels first), resampling to and from the model rate, chunking, and
    exact output length (the output has as many frames as the input).

    Args:
        model: the model (already on ``device``).
        input_rate: sample rate of the blocks.
        input_channels: channels of the blocks.
        channels: ``"separate"`` or ``"mix"`` (ignored for models with several input channels).
        chunk_seconds: chunk length at the model rate (for streaming models: input per step).
        overlap_seconds: overlap of consecutive chunks (unused by streaming models).
        device: where the model runs.
        streaming: see :func:`make_runner` (None: stream exactly when the model supports it).
        attenuation_limit_db: with one output source, add the input back ``attenuation_limit_db``
            dB down, so noise is never attenuated by more than about that much (see
            :func:`attenuation_limit_gain`); None disables it.
        mics: input channels to use (:func:`speechkit.channels.select_channels`: for a
            microphone-array model exactly its M microphones in array order, default the first M;
            for a one-channel model the channels to process, default all).
    """

    def __init__(
        self,
        model: SpeechModel,
        input_rate: int,
        input_channels: int,
        channels: str = "separate",
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
        overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
        device: torch.device | str = "cpu",
        streaming: bool | None = None,
        attenuation_limit_db: float | None = None,
        mics: Sequence[int] | None = None,
    ) -> None:
        self.mix_back_gain = mix_back_gain(model, attenuation_limit_db)
        if channels not in CHANNEL_MODES:
            raise ConfigError(f"channels must be one of {', '.join(CHANNEL_MODES)}, got {channels!r}")
        if input_rate <= 0:
            raise AudioError(f"invalid sample rate {input_rate}")
        if not chunk_seconds > 0 or not overlap_seconds >= 0 or overlap_seconds >= chunk_seconds:
            raise ConfigError(
                f"need chunk_seconds > overlap_seconds >= 0 (got {chunk_seconds} and {overlap_seconds})"
            )
        layout = model.input_layout
        self.downmix = False
        # the input channels used, in model order (None: all of them, as they come)
        self.selection: list[int] | None = None
        if layout.far_end_channel is not None:  # the caller stacks microphones and far end (EchoPipeline)
            if input_channels != layout.num_channels or mics is not None:
                raise ConfigError(
                    f"{model.name} expects {layout.describe()} stacked as {layout.num_channels} channels, "
                    f"got {input_channels}; use the echo-cancellation path with a far-end reference"
                )
            groups = [list(range(input_channels))]
        else:
            selected = select_channels(input_channels, layout, mics)
            if selected != list(range(input_channels)):
                self.selection = selected
                input_channels = len(selected)
            if not layout.channel_wise:
                groups = [list(range(input_channels))]
            elif channels == "mix" and input_channels > 1:
                self.downmix = True
                groups = [[0]]
            else:
                groups = [[channel] for channel in range(input_channels)]
        model_rate = int(model.sample_rate)
        self.input_rate = int(input_rate)
        self.runner = make_runner(
            model,
            groups,
            chunk_length=max(1, round(chunk_seconds * model_rate)),
            overlap_length=round(overlap_seconds * model_rate),
            device=device,
            streaming=streaming,
        )
        self.num_sources = self.runner.num_sources
        self.output_channels = self.runner.output_channels
        self._to_model = StreamResampler(input_rate, model_rate, 1 if self.downmix else input_channels)
        self._from_model = StreamResampler(model_rate, input_rate, self.num_sources * self.output_channels)
        self.frames_in = 0
        self.frames_out = 0
        self._carry = np.zeros((self.num_sources, self.output_channels, 0), dtype=np.float32)
        # input frames not yet matched by output frames, for the attenuation limit: [C_out or 1, n]
        self._pending_input = np.zeros((1 if self.downmix else input_channels, 0), dtype=np.float32)

    def push(self, block: np.ndarray) -> np.ndarray:
        """Add an input block ``[C, n]``; returns the output ``[S, C_out, m]`` that is final."""
        self.frames_in += block.shape[-1]
        if self.selection is not None:
            block = block[self.selection]  # [C, n] -> [C_selected, n]
        if self.downmix:
            block = block.mean(axis=0, keepdims=True)  # [C, n] -> [1, n]
        if self.mix_back_gain:
            self._pending_input = np.concatenate([self._pending_input, block], axis=-1)  # [C', pending + n]
        model_output = self.runner.push(self._to_model.process(block))  # [S, C_out, k]
        return self._deliver(self._back(model_output, last=False), final=False)

    def finish(self) -> np.ndarray:
        """The rest of the output ``[S, C_out, m]``; the total equals the input length exactly."""
        pieces = [self.runner.push(self._to_model.flush()), self.runner.flush()]
        model_output = np.concatenate(pieces, axis=-1)  # [S, C_out, k]
        return self._deliver(self._back(model_output, last=True), final=True)

    def _back(self, model_output: np.ndarray, last: bool) -> np.ndarray:
        """Resample ``[S, C_out, k]`` at the model rate to ``[S, C_out, m]`` at the input rate."""
        sources, channels, _ = model_output.shape
        flat = model_output.reshape(sources * channels, -1)  # [S, C_out, k] -> [S*C_out, k]
        resampled = self._from_model.process(flat, last=last)  # [S*C_out, k] -> [S*C_out, m]
        return resampled.reshape(sources, channels, -1)  # [S*C_out, m] -> [S, C_out, m]

    def _deliver(self, output: np.ndarray, final: bool) -> np.ndarray:
        """Never deliver more frames than came in; on ``final`` pad or cut to the exact input length."""
        output = np.concatenate([self._carry, output], axis=-1)  # [S, C_out, m + carry]
        allowed = self.frames_in - self.frames_out
        if final and output.shape[-1] < allowed:
            output = np.pad(output, ((0, 0), (0, 0), (0, allowed - output.shape[-1])))  # [S, C_out, allowed]
        self._carry = output[..., allowed:]
        output = output[..., :allowed]
        if final:
            self._carry = self._carry[..., :0]
        self.frames_out += output.shape[-1]
        if self.mix_back_gain:
            delivered = output.shape[-1]
            matching = self._pending_input[: output.shape[1], :delivered]  # [C_out or 1 (reference mic), m]
            output = output + self.mix_back_gain * matching[None]  # [S=1, C_out, m]
            self._pending_input = self._pending_input[:, delivered:]
        return output


def mix_back_gain(model: SpeechModel, attenuation_limit_db: float | None) -> float:
    """The gain at which ``model``'s input is added back for an attenuation limit (0 without one).

    Raises:
        ConfigError: the limit is not a positive number, or the model has several output sources.
    """
    gain = attenuation_limit_gain(attenuation_limit_db)
    if gain and int(model.num_sources) != 1:
        raise ConfigError("an attenuation limit needs a model with one output source (enhancement)")
    return gain


def process_array(
    model: SpeechModel,
    audio: np.ndarray,
    sample_rate: int,
    channels: str = "separate",
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
    device: torch.device | str = "cpu",
    streaming: bool | None = None,
    attenuation_limit_db: float | None = None,
    mics: Sequence[int] | None = None,
) -> np.ndarray:
    """Run ``model`` on an in-memory ``[C, T]`` float32 array at any rate; returns ``[S, C_out, T]``."""
    pipeline = Pipeline(
        model, sample_rate, audio.shape[0], channels, chunk_seconds, overlap_seconds, device, streaming,
        attenuation_limit_db, mics,
    )
    head = pipeline.push(audio)
    return np.concatenate([head, pipeline.finish()], axis=-1)  # [S, C_out, T]


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
