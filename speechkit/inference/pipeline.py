"""The file/array pipeline: channel selection, resampling, a runner, exact output length, attenuation limit."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..audio import StreamResampler, attenuation_limit_gain
from ..channels import select_channels
from ..errors import AudioError, ConfigError
from ..models.base import SpeechModel
from .runners import make_runner

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


def process_array(model: SpeechModel, audio: np.ndarray, sample_rate: int, **options: Any) -> np.ndarray:
    """Run ``model`` on an in-memory ``[C, T]`` float32 array at any rate; returns ``[S, C_out, T]``.

    ``options`` are the keyword arguments of :class:`Pipeline` after ``input_channels``
    (``channels``, ``chunk_seconds``, ``overlap_seconds``, ``device``, ``streaming``,
    ``attenuation_limit_db``, ``mics``).
    """
    pipeline = Pipeline(model, sample_rate, audio.shape[0], **options)
    head = pipeline.push(audio)
    return np.concatenate([head, pipeline.finish()], axis=-1)  # [S, C_out, T]


