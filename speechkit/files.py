"""The one file path: open readers, a pipeline and atomic writers, driven by :func:`run_file`.

Enhancement, separation and echo cancellation all process files through :func:`run_file`: blocks
of :data:`READ_BLOCK_SECONDS` are read from one or more inputs (checked by a
:class:`~speechkit.audio.SampleChecker` on the way), pushed through a pipeline in bounded memory
(:class:`speechkit.inference.Pipeline`, or :class:`speechkit.inference.EchoFeed` for a microphone
and its far end), and every output source is written to its own
:class:`~speechkit.audio.AtomicAudioWriter`, all published only when the whole file succeeded.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .audio import AtomicAudioWriter, SampleChecker, default_output_name, iter_blocks
from .delay import DelayEstimate
from .errors import AudioError, ConfigError

#: seconds of input read per block when processing files
READ_BLOCK_SECONDS = 1.0


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
    #: the alignment used, ``[(start_sample, delay_samples), ...]`` at the microphone's rate (the
    #: bulk delay without the model's reference lead; more than one entry when the delay changed)
    delay_schedule: list[tuple[int, int]] = dataclasses.field(default_factory=list)

class FilePipeline(Protocol):
    """What :func:`run_file` drives: ``push(block, *other_blocks) -> [S, C_out, m]`` and ``finish()``.

    ``runner.nonfinite_outputs`` counts model outputs replaced by zeros (reported as a warning).
    """

    output_channels: int
    runner: Any

    def push(self, block: np.ndarray, *others: np.ndarray | None) -> np.ndarray: ...

    def finish(self) -> np.ndarray: ...


def checked_blocks(handle: Any, checker: SampleChecker, seconds: float = READ_BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """The blocks ``[C, n]`` of an open file, ``seconds`` long, each through ``checker``."""
    for block in iter_blocks(handle, max(1, int(seconds * handle.samplerate))):
        yield checker.check(block)


def run_file(
    readers: Sequence[Iterator[np.ndarray]],
    pipeline: FilePipeline,
    writers: Sequence[AtomicAudioWriter],
    progress: Callable[[int], None] | None = None,
) -> None:
    """Process whole files: read, push through ``pipeline``, write every source, commit atomically.

    The first reader sets the pace: with each of its blocks, the next block of every other reader
    (``None`` once that reader has ended) is pushed as ``pipeline.push(block, *others)``; the
    output ``[S, C_out, m]`` goes source by source to ``writers`` (one per source), then
    ``pipeline.finish()``'s. The writers are opened first and committed only when everything
    succeeded; on any error (or interruption) every writer is discarded and the error re-raised.

    Args:
        readers: block iterators ``[C, n]`` (e.g. :func:`checked_blocks`), the first one primary.
        pipeline: the bounded-memory pipeline (see :class:`FilePipeline`).
        writers: one atomic writer per output source.
        progress: called with the frames of each primary block once it has been processed.
    """
    primary, *others = readers
    try:
        for writer in writers:
            writer.open()
        for block in primary:
            produced = pipeline.push(block, *(next(other, None) for other in others))  # [S, C_out, m]
            for source, writer in enumerate(writers):
                writer.write(produced[source])
            if progress is not None:
                progress(block.shape[-1])
        produced = pipeline.finish()  # [S, C_out, m]
        for source, writer in enumerate(writers):
            writer.write(produced[source])
        for writer in writers:
            writer.commit()
    except BaseException:
        for writer in writers:
            writer._discard()
        raise


def report_file_warnings(
    messages: list[str], source: Path, pipeline: FilePipeline, writers: list[AtomicAudioWriter],
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
