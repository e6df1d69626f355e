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

import dataclasses
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .audio import (
    AtomicAudioWriter,
    SampleChecker,
    check_output_path,
    default_output_name,
    iter_blocks,
    open_audio,
)
from .delay import DelayEstimate, estimate_delay
from .errors import AudioError, CheckpointError, ConfigError
from .inference import (
    DEFAULT_CHUNK_SECONDS,
    DEFAULT_OVERLAP_SECONDS,
    ENHANCE_CHANNELS,
    SEPARATE_CHANNELS,
    EchoPipeline,
    Pipeline,
    mix_back_gain,
    select_device,
)
from .models.base import SpeechModel
from .pretrained import DEFAULT_ECHO_CANCELLER

#: seconds of input read per block when processing files
READ_BLOCK_SECONDS = 1.0
#: more channels than this in a [C, T] array is taken as a transposed [T, C] array
MAX_ARRAY_CHANNELS = 64
#: bundled echo-cancellation model used when no model is given, once it is bundled (not yet)
DEFAULT_AEC_MODEL = DEFAULT_ECHO_CANCELLER
#: default search range of the echo's bulk delay, in seconds
DEFAULT_MAX_DELAY_SECONDS = 0.5
#: default largest allowed length difference between microphone and reference, in seconds
DEFAULT_MAX_LENGTH_DIFFERENCE = 1.0


class AudioWarning(UserWarning):
    """Input or output problems that did not stop processing (clipping, repaired samples)."""


@dataclasses.dataclass
class FileResult:
    """What :func:`enhance_file` / :func:`separate_file` did."""

    input: Path
    outputs: list[Path]
    sample_rate: int
    channels: int
    frames: int
    seconds_processed: float
    warnings: list[str]

    @property
    def duration(self) -> float:
        """Input duration in seconds."""
        return self.frames / self.sample_rate

    @property
    def real_time_factor(self) -> float:
        """Processing time divided by audio duration."""
        return self.seconds_processed / max(self.duration, 1e-9)


@dataclasses.dataclass
class EchoFileResult(FileResult):
    """What :func:`cancel_echo_file` did: a :class:`FileResult` plus the reference and the delay used."""

    far_end: Path = Path()
    delay: DelayEstimate | None = None


class Processor:
    """A loaded model ready to process arrays and files.

    Args:
        model: the model (moved to ``device`` and put in eval mode).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        chunk_seconds: chunk length for long inputs (memory grows with it, not with input length).
        overlap_seconds: cross-faded overlap between chunks.
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
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
        overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
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
        array = _float_array(audio)
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
        rate = _check_rate(sample_rate, "sample_rate")
        array = _check_samples(array, rate, "audio", repair_nonfinite, stacklevel=4)
        pipeline = self._pipeline(rate, array.shape[0], channels)
        output = np.concatenate([pipeline.push(array), pipeline.finish()], axis=-1)  # [S, C_out, T]
        return _like_input(output, audio)

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
            try:
                for writer in writers:
                    writer.open()
                block_frames = max(1, int(READ_BLOCK_SECONDS * rate))
                for block in iter_blocks(handle, block_frames):
                    produced = pipeline.push(checker.check(block))  # [S, C_out, m]
                    for source, writer in enumerate(writers):
                        writer.write(produced[source])
                    if progress is not None:
                        progress(block.shape[-1])
                produced = pipeline.finish()
                for source, writer in enumerate(writers):
                    writer.write(produced[source])
                for writer in writers:
                    writer.commit()
            except BaseException:
                for writer in writers:
                    writer._discard()
                raise
        messages = _report_file_warnings(checker.warnings(), input, pipeline, writers, stacklevel=4)
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
    def cancel_echo(
        self,
        mic: np.ndarray | torch.Tensor,
        far_end: np.ndarray | torch.Tensor,
        sample_rate: int,
        far_end_rate: int | None = None,
        delay_seconds: float | None = None,
        max_delay_seconds: float = DEFAULT_MAX_DELAY_SECONDS,
        repair_nonfinite: bool = False,
    ) -> np.ndarray | torch.Tensor:
        """Remove the far-end echo (and noise) from a microphone signal; returns the near end ``[T]``.

        Args:
            mic: microphone signal ``[T]`` (or ``[1, T]``) at ``sample_rate``.
            far_end: the loudspeaker (far-end) signal ``[T']`` at ``far_end_rate``.
            sample_rate: rate of ``mic`` (and of the result).
            far_end_rate: rate of ``far_end`` (default: ``sample_rate``).
            delay_seconds: the echo's bulk delay (reference leading the microphone); None estimates
                it with GCC-PHAT up to ``max_delay_seconds`` (0 disables the alignment).
            max_delay_seconds: search range of the estimate.
            repair_nonfinite: replace NaN/Inf input samples by 0 instead of refusing the input.

        The reference is aligned, cut or zero-padded to the microphone's length and both run
        through the same bounded-memory machinery as files (see :class:`speechkit.inference.EchoPipeline`).
        """
        self.check_action("cancel_echo")
        rate = _check_rate(sample_rate, "sample_rate")
        reference_rate = rate if far_end_rate is None else _check_rate(far_end_rate, "far_end_rate")
        mic_array = _mono_array(mic, "mic", rate, repair_nonfinite)
        reference = _mono_array(far_end, "far_end", reference_rate, repair_nonfinite)
        reference_at_mic_rate = _resample_excerpt(reference, reference_rate, rate)
        delay, _ = estimate_echo_delay(mic_array, reference_at_mic_rate, rate, delay_seconds, max_delay_seconds)
        pipeline = self._echo_pipeline(rate, reference_rate, delay.samples)
        output = np.concatenate([pipeline.push(mic_array, reference), pipeline.finish()])  # [T]
        return _like_input(output, mic)

    def cancel_echo_file(
        self,
        mic: str | os.PathLike,
        far_end: str | os.PathLike,
        output: str | os.PathLike,
        force: bool = False,
        delay_seconds: float | None = None,
        max_delay_seconds: float = DEFAULT_MAX_DELAY_SECONDS,
        max_length_difference: float = DEFAULT_MAX_LENGTH_DIFFERENCE,
        resample: bool = False,
        repair_nonfinite: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> "EchoFileResult":
        """Cancel the echo of one microphone/far-end file pair into ``output``; see :func:`cancel_echo_file`."""
        from .delay import DEFAULT_ANALYSIS_SECONDS, check_pair_lengths

        self.check_action("cancel_echo")
        started = time.perf_counter()
        mic, far_end, output = Path(mic), Path(far_end), Path(output)
        if output.is_dir():
            output = output / default_output_name(mic, "_aec")
        check_output_path(output, inputs=(mic, far_end), force=force)
        with open_audio(mic) as mic_handle, open_audio(far_end) as reference_handle:
            for path, handle in ((mic, mic_handle), (far_end, reference_handle)):
                if handle.channels != 1:
                    raise AudioError(f"{path} has {handle.channels} channels; echo cancellation needs mono files")
            rate, reference_rate = int(mic_handle.samplerate), int(reference_handle.samplerate)
            frames, reference_frames = int(mic_handle.frames), int(reference_handle.frames)
            if rate != reference_rate and not resample:
                raise AudioError(
                    f"{mic} is at {rate} Hz but {far_end} is at {reference_rate} Hz; pass resample=True / "
                    "--resample to resample the reference"
                )
            check_pair_lengths(frames, round(reference_frames * rate / reference_rate), rate, max_length_difference)
            # the delay is estimated on the start of both files, then both are read again from the start
            mic_excerpt = _read_excerpt(mic_handle, DEFAULT_ANALYSIS_SECONDS)
            reference_excerpt = _resample_excerpt(
                _read_excerpt(reference_handle, DEFAULT_ANALYSIS_SECONDS), reference_rate, rate
            )
            delay, messages = estimate_echo_delay(
                mic_excerpt, reference_excerpt, rate, delay_seconds, max_delay_seconds, str(mic)
            )
            del mic_excerpt, reference_excerpt
            pipeline = self._echo_pipeline(rate, reference_rate, delay.samples)
            mic_checker = SampleChecker(rate, str(mic), repair_nonfinite)
            reference_checker = SampleChecker(reference_rate, str(far_end), repair_nonfinite)
            writer = AtomicAudioWriter(output, rate, 1, force=force)
            try:
                writer.open()
                mic_blocks = iter_blocks(mic_handle, max(1, int(READ_BLOCK_SECONDS * rate)))
                reference_blocks = iter_blocks(reference_handle, max(1, int(READ_BLOCK_SECONDS * reference_rate)))
                for mic_block in mic_blocks:
                    reference_block = next(reference_blocks, None)
                    if reference_block is None:
                        pipeline.end_reference()
                    else:
                        reference_block = reference_checker.check(reference_block)[0]
                    produced = pipeline.push(mic_checker.check(mic_block)[0], reference_block)  # [m]
                    writer.write(produced[None])
                    if progress is not None:
                        progress(mic_block.shape[-1])
                writer.write(pipeline.finish()[None])
                writer.commit()
            except BaseException:
                writer._discard()
                raise
        messages = _report_file_warnings(
            messages + mic_checker.warnings() + reference_checker.warnings(), mic, pipeline, [writer], stacklevel=4
        )
        return EchoFileResult(
            input=mic,
            outputs=[output],
            sample_rate=rate,
            channels=1,
            frames=frames,
            seconds_processed=time.perf_counter() - started,
            warnings=messages,
            far_end=far_end,
            delay=delay,
        )

    def _echo_pipeline(self, rate: int, reference_rate: int, delay_samples: int) -> EchoPipeline:
        return EchoPipeline(
            self.model, rate, reference_rate, delay_samples, self.chunk_seconds, self.overlap_seconds,
            self.device, self.streaming,
        )

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


def separation_outputs(input: Path, output_dir_or_pattern: str | os.PathLike, num_sources: int) -> list[Path]:
    """Output paths of the sources of ``input``.

    A pattern contains ``{name}`` (input stem) and/or ``{source}`` (1-based index), e.g.
    ``"out/{name}_spk{source}.flac"``; anything else is a directory that receives
    ``<name>_s1.<ext>``, ``<name>_s2.<ext>``, ...
    """
    text = os.fspath(output_dir_or_pattern)
    if "{" in text:
        if "{source" not in text:
            raise ConfigError(f"output pattern {text!r} must contain {{source}} so the sources get different names")
        try:
            return [Path(text.format(name=input.stem, source=index + 1)) for index in range(num_sources)]
        except (KeyError, IndexError, ValueError) as error:
            raise ConfigError(f"invalid output pattern {text!r} (use {{name}} and {{source}}): {error}") from error
    directory = Path(text)
    if directory.exists() and not directory.is_dir():
        raise AudioError(f"{directory} is a file; separation needs an output directory or a pattern")
    return [directory / default_output_name(input, f"_s{index + 1}") for index in range(num_sources)]


def load(
    name_or_path: str | os.PathLike | None = None,
    device: str = "cpu",
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
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


def _processor(model: "str | os.PathLike | Processor | None", device: str, chunk_seconds: float) -> Processor:
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
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
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
        chunk_seconds: chunk length for long files.
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
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
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


# ---------------------------------------------------------------------- echo cancellation
def load_echo_canceller(
    name_or_path: str | os.PathLike | None = None,
    device: str = "cpu",
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
    options: Mapping[str, Any] | None = None,
) -> Processor:
    """Load an echo-cancellation checkpoint (bundled name or path); ``options`` as in :func:`load`.

    None loads the bundled :data:`DEFAULT_AEC_MODEL` once one is bundled; no echo canceller is
    bundled yet, so for now pass a checkpoint trained with ``recipes/echo_cancellation``.

    Raises:
        CheckpointError: no model given while none is bundled, or the file is not a checkpoint.
        ConfigError: the checkpoint holds a model that is not an echo canceller.
    """
    from .pretrained import NO_BUNDLED_ECHO_CANCELLER, bundled_echo_canceller

    if name_or_path is None:
        name_or_path = bundled_echo_canceller()
        if name_or_path is None:
            raise CheckpointError(NO_BUNDLED_ECHO_CANCELLER)
    processor = load(name_or_path, device, chunk_seconds, overlap_seconds, options=options)
    processor.check_action("cancel_echo")
    return processor


def estimate_echo_delay(
    mic: np.ndarray,
    reference: np.ndarray,
    sample_rate: int,
    delay_seconds: float | None = None,
    max_delay_seconds: float = DEFAULT_MAX_DELAY_SECONDS,
    source: str = "microphone",
) -> tuple[DelayEstimate, list[str]]:
    """The bulk delay to align ``reference`` to ``mic`` (both ``[T]`` at ``sample_rate``) and warnings.

    ``delay_seconds`` imposes the delay; otherwise GCC-PHAT searches up to ``max_delay_seconds``
    (0: no alignment). A silent input or an unreliable estimate adds a warning naming ``source``.
    """
    if delay_seconds is not None:
        return DelayEstimate(int(round(delay_seconds * sample_rate)), sample_rate, float("inf")), []
    if max_delay_seconds <= 0:
        return DelayEstimate(0, sample_rate, 0.0), []
    delay = estimate_delay(mic, reference, sample_rate, max_delay_seconds=max_delay_seconds)
    messages = []
    if delay.confidence == 0.0:
        messages.append(f"{source}: the microphone or reference is silent; no delay alignment")
    elif not delay.reliable:
        messages.append(
            f"{source}: uncertain bulk-delay estimate {1000 * delay.seconds:.1f} ms "
            f"(confidence {delay.confidence:.1f}); pass the delay (--delay-ms) if you know it"
        )
    return delay, messages


def _check_rate(sample_rate: Any, name: str) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioError(f"{name} must be a positive integer, got {sample_rate!r}")
    return int(sample_rate)


def _float_array(audio: np.ndarray | torch.Tensor) -> np.ndarray:
    """An array or tensor (any device) as a float32 numpy array of the same shape."""
    if isinstance(audio, torch.Tensor):
        return audio.detach().cpu().float().numpy()
    return np.asarray(audio, dtype=np.float32)


def _like_input(output: np.ndarray, audio: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """``output`` as the same kind of array as the input ``audio`` (a tensor on its device, or numpy)."""
    if isinstance(audio, torch.Tensor):
        return torch.from_numpy(output).to(audio.device)
    return output


def _check_samples(
    array: np.ndarray, sample_rate: int, name: str, repair_nonfinite: bool, stacklevel: int
) -> np.ndarray:
    """``array [C, T]`` through a :class:`SampleChecker`; its warnings are issued at ``stacklevel`` (from here)."""
    checker = SampleChecker(sample_rate, name, repair_nonfinite)
    array = checker.check(np.ascontiguousarray(array))
    for message in checker.warnings():
        warnings.warn(message, AudioWarning, stacklevel=stacklevel)
    return array


def _report_file_warnings(
    messages: list[str], source: Path, pipeline: Pipeline | EchoPipeline, writers: list[AtomicAudioWriter],
    stacklevel: int,
) -> list[str]:
    """``messages`` plus the pipeline's non-finite outputs and the writers' warnings, all issued as warnings."""
    if pipeline.runner.nonfinite_outputs:
        messages.append(
            f"{source}: the model produced {pipeline.runner.nonfinite_outputs} non-finite sample(s), written as 0"
        )
    for writer in writers:
        messages.extend(writer.warnings())
    for message in messages:
        warnings.warn(message, AudioWarning, stacklevel=stacklevel)
    return messages


def _mono_array(audio: np.ndarray | torch.Tensor, name: str, sample_rate: int, repair_nonfinite: bool) -> np.ndarray:
    """A ``[T]`` or ``[1, T]`` array or tensor as a checked float32 ``[T]`` numpy array."""
    array = _float_array(audio)
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]  # [1, T] -> [T]
    if array.ndim != 1:
        raise AudioError(f"{name} must be mono audio of shape [T], got {tuple(array.shape)}")
    if array.shape[-1] == 0:
        raise AudioError(f"{name} contains no samples (zero length)")
    return _check_samples(array[None], sample_rate, name, repair_nonfinite, stacklevel=5)[0]  # [1, T] -> [T]


def _resample_excerpt(signal: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Resample a whole in-memory ``[T]`` signal (identity when the rates match)."""
    if rate == target_rate or signal.shape[-1] == 0:
        return signal
    import soxr

    return soxr.resample(signal, rate, target_rate).astype(np.float32)


def _read_excerpt(handle: Any, seconds: float) -> np.ndarray:
    """The first ``seconds`` of an open mono file as ``[T]`` (non-finite samples as 0); rewinds the file."""
    frames = int(seconds * handle.samplerate)
    excerpt = next(iter_blocks(handle, max(1, frames)), np.zeros((1, 0), np.float32))[0]  # [1, T] -> [T]
    handle.seek(0)
    return np.nan_to_num(excerpt, nan=0.0, posinf=0.0, neginf=0.0)


def cancel_echo_file(
    mic: str | os.PathLike,
    far_end: str | os.PathLike,
    output: str | os.PathLike,
    model: "str | os.PathLike | Processor | None" = None,
    force: bool = False,
    delay_seconds: float | None = None,
    max_delay_seconds: float = DEFAULT_MAX_DELAY_SECONDS,
    max_length_difference: float = DEFAULT_MAX_LENGTH_DIFFERENCE,
    resample: bool = False,
    device: str = "cpu",
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    repair_nonfinite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> EchoFileResult:
    """Cancel the far-end echo (and noise) of the microphone file ``mic`` into ``output``, in bounded memory.

    Args:
        mic: mono microphone recording.
        far_end: mono far-end (loudspeaker) reference of the same call.
        output: destination file (``.wav``, ``.flac``, ``.ogg``) or an existing directory
            (``<dir>/<mic name>_aec.<ext>``); written at the microphone's rate and length.
        model: bundled model name, checkpoint path, a Processor from :func:`load_echo_canceller`,
            or None (the bundled :data:`DEFAULT_AEC_MODEL`; none is bundled yet).
        force: overwrite an existing output.
        delay_seconds: impose the echo's bulk delay instead of estimating it (GCC-PHAT on the
            first minute of both files, up to ``max_delay_seconds``; 0 disables the alignment).
        max_length_difference: refuse pairs whose lengths differ by more seconds than this (the
            reference is cut or zero-padded to the microphone's length after alignment).
        resample: accept a reference at another rate than the microphone (it is resampled).
        device, chunk_seconds, repair_nonfinite, progress: as in :func:`enhance_file`.

    Both files are read block by block; a streaming model (such as ``complex_d3net_aec``) runs
    its ``forward_step`` with the state carried through the whole recording, so the result equals
    one offline pass while memory does not grow with the length of the call.
    """
    processor = model if isinstance(model, Processor) else load_echo_canceller(model, device, chunk_seconds)
    return processor.cancel_echo_file(
        mic, far_end, output, force, delay_seconds, max_delay_seconds, max_length_difference, resample,
        repair_nonfinite, progress,
    )
