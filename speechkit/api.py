"""The Python API: load a model once, then enhance or separate arrays and files.

Example::

    import speechkit
    processor = speechkit.load("conv_tasnet_enhance_16k")     # bundled name or checkpoint path
    clean = processor.enhance(noisy, sample_rate=44100)        # [T] or [C, T] -> [C, T]
    speechkit.enhance_file("noisy.flac", "clean.wav")          # bounded memory, atomic output
    speechkit.separate_file("mix.wav", "out/")                 # out/mix_s1.wav, out/mix_s2.wav

Arrays may be numpy arrays or torch tensors at any rate with any channel count; results come back
at the input's rate, as the same kind of array (tensors on the input's device). Files are read in
blocks, resampled and processed in overlapping chunks (see :mod:`speechkit.inference`), so memory
does not depend on the file's length. See :mod:`speechkit.audio` for the bad-input and output
format policies.
"""
from __future__ import annotations

import dataclasses
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .audio import (
    WRITE_FORMATS,
    AtomicAudioWriter,
    SampleChecker,
    check_output_path,
    iter_blocks,
    open_audio,
)
from .errors import AudioError, ConfigError
from .inference import DEFAULT_CHUNK_SECONDS, DEFAULT_OVERLAP_SECONDS, Pipeline, select_device
from .models.base import SpeechModel

#: seconds of input read per block when processing files
READ_BLOCK_SECONDS = 1.0
#: more channels than this in a [C, T] array is taken as a transposed [T, C] array
MAX_ARRAY_CHANNELS = 64


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


class Processor:
    """A loaded model ready to process arrays and files.

    Args:
        model: the model (moved to ``device`` and put in eval mode).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        chunk_seconds: chunk length for long inputs (memory grows with it, not with input length).
        overlap_seconds: cross-faded overlap between chunks.
        name: how to refer to the model in messages.
    """

    def __init__(
        self,
        model: SpeechModel,
        device: str | torch.device = "cpu",
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
        overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
        name: str | None = None,
    ) -> None:
        self.device = select_device(device)
        self.model = model.to(self.device).eval()
        if not chunk_seconds > 0 or not 0 <= overlap_seconds < chunk_seconds:
            raise ConfigError(
                f"need chunk_seconds > overlap_seconds >= 0 (got {chunk_seconds} and {overlap_seconds})"
            )
        self.chunk_seconds = float(chunk_seconds)
        self.overlap_seconds = float(overlap_seconds)
        self.name = name or model.name

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
        channels: str = "separate",
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
        channels: str = "separate",
        repair_nonfinite: bool = False,
    ) -> np.ndarray | torch.Tensor:
        """Separate ``audio`` (``[T]`` or ``[C, T]``); returns ``[S, C, T]`` at ``sample_rate``."""
        self.check_action("separate")
        return self._process_array(audio, sample_rate, channels, repair_nonfinite)

    def _process_array(
        self, audio: np.ndarray | torch.Tensor, sample_rate: int, channels: str, repair_nonfinite: bool
    ) -> np.ndarray | torch.Tensor:
        as_tensor = isinstance(audio, torch.Tensor)
        original_device = audio.device if as_tensor else None
        array = audio.detach().cpu().float().numpy() if as_tensor else np.asarray(audio, dtype=np.float32)
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
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise AudioError(f"sample_rate must be a positive integer, got {sample_rate!r}")
        checker = SampleChecker(int(sample_rate), "audio", repair_nonfinite)
        array = checker.check(np.ascontiguousarray(array))
        for message in checker.warnings():
            warnings.warn(message, AudioWarning, stacklevel=3)
        pipeline = self._pipeline(int(sample_rate), array.shape[0], channels)
        output = np.concatenate([pipeline.push(array), pipeline.finish()], axis=-1)  # [S, C_out, T]
        if as_tensor:
            return torch.from_numpy(output).to(original_device)
        return output

    # ------------------------------------------------------------------ files
    def enhance_file(
        self,
        input: str | os.PathLike,
        output: str | os.PathLike,
        force: bool = False,
        channels: str = "separate",
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
        channels: str = "separate",
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
        messages = checker.warnings()
        if pipeline.runner.nonfinite_outputs:
            messages.append(
                f"{input}: the model produced {pipeline.runner.nonfinite_outputs} non-finite sample(s), written as 0"
            )
        for writer in writers:
            messages.extend(writer.warnings())
        for message in messages:
            warnings.warn(message, AudioWarning, stacklevel=3)
        return FileResult(
            input=input,
            outputs=outputs,
            sample_rate=rate,
            channels=pipeline.output_channels,
            frames=frames,
            seconds_processed=time.perf_counter() - started,
            warnings=messages,
        )

    # ------------------------------------------------------------------ helpers
    def _pipeline(self, rate: int, num_channels: int, channels: str) -> Pipeline:
        return Pipeline(
            self.model, rate, num_channels, channels, self.chunk_seconds, self.overlap_seconds, self.device
        )

    def check_action(self, action: str) -> None:
        """Raise :class:`ConfigError` unless this model can ``"enhance"`` (1 source) or ``"separate"``."""
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


def default_output_name(input: Path, suffix: str = "") -> str:
    """``input``'s file name with a writable extension (its own if wav/flac/ogg, else ``.wav``)."""
    extension = input.suffix.lower() if input.suffix.lower() in WRITE_FORMATS else ".wav"
    return f"{input.stem}{suffix}{extension}"


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
) -> Processor:
    """Load a bundled model (by name) or a speechkit checkpoint (by path) into a :class:`Processor`.

    ``None`` loads the default bundled model. A bare architecture name such as ``"conv_tasnet"``
    raises :class:`~speechkit.errors.CheckpointError` (no weights, it would output noise).
    """
    from .checkpoint import load_checkpoint
    from .pretrained import resolve_model

    selected = select_device(device)
    path = resolve_model(name_or_path)
    model = load_checkpoint(path, map_location="cpu")
    name = path.stem if name_or_path is None or not Path(os.fspath(name_or_path)).is_file() else str(path)
    return Processor(model, selected, chunk_seconds, overlap_seconds, name=name)


def _processor(model: "str | os.PathLike | Processor | None", device: str, chunk_seconds: float) -> Processor:
    if isinstance(model, Processor):
        return model
    return load(model, device=device, chunk_seconds=chunk_seconds)


def enhance_file(
    input: str | os.PathLike,
    output: str | os.PathLike,
    model: "str | os.PathLike | Processor | None" = None,
    force: bool = False,
    channels: str = "separate",
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
    channels: str = "separate",
    device: str = "cpu",
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    repair_nonfinite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> FileResult:
    """Separate ``input`` into one file per source (``<dir>/<name>_s1.wav``... or a ``{source}`` pattern).

    Sources keep a consistent order across chunk boundaries (see :mod:`speechkit.inference`).
    Other arguments as in :func:`enhance_file`; ``model`` must be a separation model.
    """
    processor = _processor(model, device, chunk_seconds)
    return processor.separate_file(input, output_dir_or_pattern, force, channels, repair_nonfinite, progress)
