"""The Python API: load a model once, then enhance or separate arrays and files.

Example::

    import speechkit
    processor = speechkit.load("conv_tasnet_enhance_16k")     # bundled name or checkpoint path
    clean = processor.enhance(noisy, sample_rate=44100)        # [T] or [C, T] -> [C, T]
    speechkit.enhance_file("noisy.flac", "clean.wav")          # bounded memory, atomic output
    speechkit.separate_file("mix.wav", "out/")                 # out/mix_s1.wav, out/mix_s2.wav
    aec = speechkit.load_echo_canceller("aec.safetensors")     # microphone + far-end model
    near_end = aec.cancel_echo(mic, far_end, sample_rate=16000)
    speechkit.cancel_echo_file("mic.wav", "far_end.wav", "near_end.wav", model=aec)

Arrays may be numpy arrays or torch tensors at any rate with any channel count; results come back
at the input's rate, as the same kind of array (tensors on the input's device). Files are read in
blocks, resampled and processed in bounded memory (see :mod:`speechkit.inference`): streaming
models run their ``forward_step`` with the state carried through the whole file (the result equals
one offline pass), other models run in overlapping cross-faded chunks. See :mod:`speechkit.audio` for the bad-input and output
format policies.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._arrays import check_rate, check_samples, float_array, like_input
from .audio import AtomicAudioWriter, SampleChecker, check_output_path, default_output_name, open_audio
from .echo import (  # noqa: F401 (the echo-cancellation API, re-exported)
    DEFAULT_AEC_MODEL,
    DEFAULT_MAX_DELAY_SECONDS,
    DEFAULT_MAX_LENGTH_DIFFERENCE,
    cancel_echo_array,
    cancel_echo_file,
    estimate_echo_delay,
    load_echo_canceller,
    run_echo_file,
)
from .errors import AudioError, ConfigError
from .files import (  # noqa: F401 (file results, warnings and output names, re-exported)
    READ_BLOCK_SECONDS,
    AudioWarning,
    EchoFileResult,
    FileResult,
    checked_blocks,
    report_file_warnings,
    run_file,
    separation_outputs,
)
from .inference import DEFAULT_CHUNK_SECONDS, DEFAULT_OVERLAP_SECONDS, ENHANCE_CHANNELS, SEPARATE_CHANNELS
from .inference import Pipeline, mix_back_gain, select_device
from .models.base import SpeechModel

#: more channels than this in a [C, T] array is taken as a transposed [T, C] array
MAX_ARRAY_CHANNELS = 64


def declared_chunking(
    model: SpeechModel, chunk_seconds: float | None = None, overlap_seconds: float | None = None
) -> tuple[float, float]:
    """Chunk and overlap lengths for ``model``: the given ones, else what the model declares, else the defaults.

    A chunk-mode model's ``inference_spec`` states the chunk its memory and attention were sized for
    (e.g. 6 s for a model attending over every frame); streaming models take ``chunk_seconds`` as
    input per step. An overlap that would not fit a user-chosen chunk is shrunk to half of it.
    """
    spec = model.inference_spec
    chunk = float(chunk_seconds if chunk_seconds is not None else spec.chunk_seconds or DEFAULT_CHUNK_SECONDS)
    if overlap_seconds is not None:
        return chunk, float(overlap_seconds)
    overlap = float(spec.overlap_seconds if spec.overlap_seconds is not None else DEFAULT_OVERLAP_SECONDS)
    return chunk, overlap if overlap < chunk else chunk / 2


class Processor:
    """A loaded model ready to process arrays and files.

    Args:
        model: the model (moved to ``device`` and put in eval mode).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        chunk_seconds: chunk length for long inputs (memory grows with it, not with input length);
            None: the length the model declares (``inference_spec.chunk_seconds``), else 10 s.
        overlap_seconds: cross-faded overlap between chunks; None: the model's declared overlap, else 1 s.
        name: how to refer to the model in messages.
        streaming: None (default) runs streaming models step by step with their state carried
            through the whole input (equal to one offline pass) and other models in cross-faded
            chunks; False forces the chunks; True requires a streaming model.
        attenuation_limit_db: enhancement only: add the input back this many dB down, so noise
            is never attenuated by more than about that much (masks artefacts; None: no limit).
        options: model options (``{"steps": 30}``, string values are parsed), validated against the
            model's ``inference_spec.options``; the model reads them from ``model.options``.
        mics: input channels to use (see :func:`speechkit.channels.select_channels`): a
            microphone-array model's M microphones in array order, or the channels a one-channel
            model processes (default: the first M, or all).
    """

    def __init__(
        self,
        model: SpeechModel,
        device: str | torch.device = "cpu",
        chunk_seconds: float | None = None,
        overlap_seconds: float | None = None,
        name: str | None = None,
        streaming: bool | None = None,
        attenuation_limit_db: float | None = None,
        options: Mapping[str, Any] | None = None,
        mics: Sequence[int] | None = None,
    ) -> None:
        mix_back_gain(model, attenuation_limit_db)  # refuse a bad limit before any file is touched
        if options is not None:
            model.set_options(options)
        self.mics = None if mics is None else [int(channel) for channel in mics]
        self.attenuation_limit_db = attenuation_limit_db
        self.device = select_device(device)
        self.model = model.to(self.device).eval()
        chunk_seconds, overlap_seconds = declared_chunking(model, chunk_seconds, overlap_seconds)
        if not chunk_seconds > 0 or not 0 <= overlap_seconds < chunk_seconds:
            raise ConfigError(
                f"need chunk_seconds > overlap_seconds >= 0 (got {chunk_seconds} and {overlap_seconds})"
            )
        self.chunk_seconds = float(chunk_seconds)
        self.overlap_seconds = float(overlap_seconds)
        self.name = name or model.name
        if streaming and not model.supports_streaming:
            raise ConfigError(f"{self.name} does not support streaming; use streaming=None or False")
        self.streaming = streaming

    @property
    def sample_rate(self) -> int:
        """The model's sample rate (inputs at other rates are resampled automatically)."""
        return self.model.sample_rate

    @property
    def num_sources(self) -> int:
        """Sources the model outputs (1 for enhancement)."""
        return self.model.num_sources

    @property
    def task(self) -> str:
        """The model's task (``"enhancement"``, ``"separation"``, ...)."""
        return self.model.task

    def describe(self) -> dict[str, Any]:
        """Model summary plus checkpoint metadata when loaded from a file."""
        summary = {"model": self.name, **self.model.describe(), "device": str(self.device)}
        metadata = getattr(self.model, "checkpoint_metadata", None)
        if metadata:
            summary["provenance"] = metadata.get("provenance", {})
        return summary

    # ------------------------------------------------------------------ arrays
    def enhance(
        self,
        audio: np.ndarray | torch.Tensor,
        sample_rate: int,
        channels: str = ENHANCE_CHANNELS,
        repair_nonfinite: bool = False,
    ) -> np.ndarray | torch.Tensor:
        """Enhance ``audio`` (``[T]`` or ``[C, T]``) at ``sample_rate``; returns ``[C, T]`` at that rate.

        ``channels="separate"`` processes every channel independently; ``"mix"`` averages them
        first and returns one channel.
        """
        self.check_action("enhance")
        return self._process_array(audio, sample_rate, channels, repair_nonfinite)[0]  # [S=1, C, T] -> [C, T]

    def separate(
        self,
        audio: np.ndarray | torch.Tensor,
        sample_rate: int,
        channels: str = SEPARATE_CHANNELS,
        repair_nonfinite: bool = False,
    ) -> np.ndarray | torch.Tensor:
        """Separate ``audio`` (``[T]`` or ``[C, T]``); returns ``[S, C, T]`` at ``sample_rate``.

        ``channels="mix"`` (default, as ``speechkit separate``) averages the channels first and
        returns one channel per source; ``"separate"`` separates every channel on its own (each
        channel then has its own source order).
        """
        self.check_action("separate")
        return self._process_array(audio, sample_rate, channels, repair_nonfinite)

    def _process_array(
        self, audio: np.ndarray | torch.Tensor, sample_rate: int, channels: str, repair_nonfinite: bool
    ) -> np.ndarray | torch.Tensor:
        array = float_array(audio)
        if array.ndim == 1:
            array = array[None]  # [T] -> [1, T]
        if array.ndim != 2:
            raise AudioError(f"expected audio of shape [T] or [C, T], got {tuple(array.shape)}")
        if array.shape[0] > MAX_ARRAY_CHANNELS and array.shape[0] > array.shape[1]:
            raise AudioError(
                f"audio of shape {tuple(array.shape)} looks like [T, C]; pass [C, T] (transpose it)"
            )
        if array.shape[-1] == 0:
            raise AudioError("audio contains no samples (zero length)")
        rate = check_rate(sample_rate, "sample_rate")
        array = check_samples(array, rate, "audio", repair_nonfinite, stacklevel=4)
        pipeline = self._pipeline(rate, array.shape[0], channels)
        output = np.concatenate([pipeline.push(array), pipeline.finish()], axis=-1)  # [S, C_out, T]
        return like_input(output, audio)

    # ------------------------------------------------------------------ files
    def enhance_file(
        self,
        input: str | os.PathLike,
        output: str | os.PathLike,
        force: bool = False,
        channels: str = ENHANCE_CHANNELS,
        repair_nonfinite: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> FileResult:
        """Enhance one file into ``output`` (a file, or an existing directory); see :func:`enhance_file`."""
        self.check_action("enhance")
        input = Path(input)
        output = Path(output)
        if output.is_dir():
            output = output / default_output_name(input)
        return self._process_file(input, [output], force, channels, repair_nonfinite, progress)

    def separate_file(
        self,
        input: str | os.PathLike,
        output_dir_or_pattern: str | os.PathLike,
        force: bool = False,
        channels: str = SEPARATE_CHANNELS,
        repair_nonfinite: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> FileResult:
        """Separate one file into one file per source; see :func:`separate_file`."""
        self.check_action("separate")
        input = Path(input)
        outputs = separation_outputs(input, output_dir_or_pattern, self.num_sources)
        return self._process_file(input, outputs, force, channels, repair_nonfinite, progress)

    def _process_file(
        self,
        input: Path,
        outputs: list[Path],
        force: bool,
        channels: str,
        repair_nonfinite: bool,
        progress: Callable[[int], None] | None,
    ) -> FileResult:
        started = time.perf_counter()
        if len({path.resolve() for path in outputs}) != len(outputs):
            raise AudioError(f"output names for {input} collide: {', '.join(map(str, outputs))}")
        for path in outputs:
            check_output_path(path, inputs=(input,), force=force)
        with open_audio(input) as handle:
            rate, num_channels, frames = int(handle.samplerate), int(handle.channels), int(handle.frames)
            pipeline = self._pipeline(rate, num_channels, channels)
            checker = SampleChecker(rate, str(input), repair_nonfinite)
            writers = [AtomicAudioWriter(path, rate, pipeline.output_channels, force=force) for path in outputs]
            run_file([checked_blocks(handle, checker)], pipeline, writers, progress)
        messages = report_file_warnings(checker.warnings(), input, pipeline, writers, stacklevel=4)
        return FileResult(
            input=input,
            outputs=outputs,
            sample_rate=rate,
            channels=pipeline.output_channels,
            frames=frames,
            seconds_processed=time.perf_counter() - started,
            warnings=messages,
        )

    # ------------------------------------------------------------------ echo cancellation
    #: remove the far-end echo (and noise) from a microphone signal; returns the near end ``[T]``
    #: (arguments as in :func:`speechkit.echo.cancel_echo_array`, this processor first)
    cancel_echo = cancel_echo_array
    #: cancel the echo of one microphone/far-end file pair into ``output`` (arguments as in
    #: :func:`speechkit.echo.run_echo_file`; see :func:`cancel_echo_file`)
    cancel_echo_file = run_echo_file

    # ------------------------------------------------------------------ helpers
    def _pipeline(self, rate: int, num_channels: int, channels: str) -> Pipeline:
        return Pipeline(
            self.model, rate, num_channels, channels, self.chunk_seconds, self.overlap_seconds, self.device,
            self.streaming, self.attenuation_limit_db, self.mics,
        )

    def check_action(self, action: str) -> None:
        """Raise :class:`ConfigError` unless this model can ``"enhance"`` (1 source), ``"separate"`` or ``"cancel_echo"``."""
        is_echo_canceller = self.model.input_layout.far_end_channel is not None
        if action == "cancel_echo":
            if not is_echo_canceller:
                raise ConfigError(
                    f"{self.name} holds a {self.model.name} {self.task} model, not an echo canceller "
                    "(microphone + reference input)"
                )
            return
        if is_echo_canceller:
            raise ConfigError(f"{self.name} is an echo canceller; use cancel_echo with a far-end reference")
        if action == "separate":
            if self.num_sources < 2:
                raise ConfigError(
                    f"{self.name} is a {self.task or 'single-output'} model; use enhance instead of separate"
                )
            return
        if self.num_sources != 1:
            raise ConfigError(
                f"{self.name} separates {self.num_sources} sources; use separate instead of {action}"
            )


def load(
    name_or_path: str | os.PathLike | None = None,
    device: str = "cpu",
    chunk_seconds: float | None = None,
    overlap_seconds: float | None = None,
    streaming: bool | None = None,
    attenuation_limit_db: float | None = None,
    options: Mapping[str, Any] | None = None,
    mics: Sequence[int] | None = None,
) -> Processor:
    """Load a bundled model (by name) or a speechkit checkpoint (by path) into a :class:`Processor`.

    ``None`` loads the default bundled model. A bare architecture name such as ``"conv_tasnet"``
    raises :class:`~speechkit.errors.CheckpointError` (no weights, it would output noise).
    ``streaming``, ``attenuation_limit_db``, ``options`` (validated against the model's
    ``inference_spec.options``) and ``mics`` as in :class:`Processor`.
    """
    from .checkpoint import load_checkpoint
    from .pretrained import resolve_model

    selected = select_device(device)
    path = resolve_model(name_or_path)
    model = load_checkpoint(path, map_location="cpu")
    name = path.stem if name_or_path is None or not Path(os.fspath(name_or_path)).is_file() else str(path)
    return Processor(
        model, selected, chunk_seconds, overlap_seconds, name=name, streaming=streaming,
        attenuation_limit_db=attenuation_limit_db, options=options, mics=mics,
    )


def _processor(model: "str | os.PathLike | Processor | None", device: str, chunk_seconds: float | None) -> Processor:
    if isinstance(model, Processor):
        return model
    return load(model, device=device, chunk_seconds=chunk_seconds)


def enhance_file(
    input: str | os.PathLike,
    output: str | os.PathLike,
    model: "str | os.PathLike | Processor | None" = None,
    force: bool = False,
    channels: str = ENHANCE_CHANNELS,
    device: str = "cpu",
    chunk_seconds: float | None = None,
    repair_nonfinite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> FileResult:
    """Enhance the audio file ``input`` into ``output`` in bounded memory.

    Args:
        input: any libsndfile-readable file (never modified).
        output: destination file (``.wav`` float, ``.flac``, ``.ogg``) or an existing directory.
        model: bundled model name, checkpoint path, a loaded :class:`Processor`, or None (default model).
        force: overwrite an existing output.
        channels: ``"separate"`` (each channel on its own) or ``"mix"`` (average to mono first).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        chunk_seconds: chunk length for long files (None: the model's declared chunk, else 10 s).
        repair_nonfinite: replace NaN/Inf input samples by 0 instead of refusing the file.
        progress: called with the number of input frames after each block.

    Raises:
        AudioError: bad input or output (message says which and why); OutputExistsError without ``force``.
    """
    processor = _processor(model, device, chunk_seconds)
    return processor.enhance_file(input, output, force, channels, repair_nonfinite, progress)


def separate_file(
    input: str | os.PathLike,
    output_dir_or_pattern: str | os.PathLike,
    model: "str | os.PathLike | Processor | None" = None,
    force: bool = False,
    channels: str = SEPARATE_CHANNELS,
    device: str = "cpu",
    chunk_seconds: float | None = None,
    repair_nonfinite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> FileResult:
    """Separate ``input`` into one file per source (``<dir>/<name>_s1.wav``... or a ``{source}`` pattern).

    Sources keep a consistent order across chunk boundaries (see :mod:`speechkit.inference`).
    ``channels`` defaults to ``"mix"`` (as ``speechkit separate``): a multichannel file is averaged to
    mono first and every output has one channel; ``"separate"`` separates each channel on its own.
    Other arguments as in :func:`enhance_file`; ``model`` must be a separation model (None: the bundled
    two-speaker separator, :data:`speechkit.pretrained.DEFAULT_SEPARATOR`).
    """
    if model is None:
        from .pretrained import DEFAULT_SEPARATOR

        model = DEFAULT_SEPARATOR
    processor = _processor(model, device, chunk_seconds)
    return processor.separate_file(input, output_dir_or_pattern, force, channels, repair_nonfinite, progress)


