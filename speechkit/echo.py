"""The echo-cancellation API: load an echo canceller, estimate the echo delay, cancel arrays and files.

:class:`speechkit.api.Processor` exposes :func:`cancel_echo_array` and :func:`run_echo_file` as its
``cancel_echo`` and ``cancel_echo_file`` methods. Files go through the same
:func:`speechkit.files.run_file` as enhancement and separation, with the microphone as the primary
reader and the far end as the second (:class:`~speechkit.inference.EchoFeed` pairs them).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._arrays import check_rate, like_input, mono_array
from .audio import AtomicAudioWriter, SampleChecker, check_output_path, default_output_name, iter_blocks, open_audio
from .delay import DelayEstimate, TrackerOptions, delay_schedule, estimate_delay
from .errors import AudioError, CheckpointError
from .files import EchoFileResult, checked_blocks, report_file_warnings, run_file
from .inference import DEFAULT_CHUNK_SECONDS, DEFAULT_OVERLAP_SECONDS, EchoFeed, EchoPipeline
from .pretrained import DEFAULT_ECHO_CANCELLER

if TYPE_CHECKING:
    from .api import Processor

#: bundled echo-cancellation model used when no model is given (the network behind the linear stage)
DEFAULT_AEC_MODEL = DEFAULT_ECHO_CANCELLER
#: default search range of the echo's bulk delay, in seconds
DEFAULT_MAX_DELAY_SECONDS = 0.5
#: default largest allowed length difference between microphone and reference, in seconds
DEFAULT_MAX_LENGTH_DIFFERENCE = 1.0
#: block of the delay tracking, in samples
TRACKING_BLOCK_SAMPLES = 1024
#: block of the delay-tracking pass over files, in seconds
READ_SECONDS = 1.0


def load_echo_canceller(
    name_or_path: str | os.PathLike | None = None,
    device: str = "cpu",
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
    options: Mapping[str, Any] | None = None,
) -> "Processor":
    """Load an echo-cancellation checkpoint (bundled name or path); ``options`` as in :func:`load`.

    None loads the bundled :data:`DEFAULT_AEC_MODEL` (else the bundled linear stage
    ``linear_aec_16k``; a copy of speechkit with neither needs a checkpoint trained with
    ``recipes/echo_cancellation``).

    Raises:
        CheckpointError: no model given while none is bundled, or the file is not a checkpoint.
        ConfigError: the checkpoint holds a model that is not an echo canceller.
    """
    from .api import load
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
            f"(confidence {delay.confidence:.1f}); pass the delay (--delay-ms) if you know it; if the far end "
            "does not play into this microphone (a headset), do not cancel echo: that only distorts the near end"
        )
    return delay, messages


def cancel_echo_array(
    processor: "Processor",
    mic: np.ndarray | torch.Tensor,
    far_end: np.ndarray | torch.Tensor,
    sample_rate: int,
    far_end_rate: int | None = None,
    delay_seconds: float | None = None,
    max_delay_seconds: float = DEFAULT_MAX_DELAY_SECONDS,
    repair_nonfinite: bool = False,
    stacklevel: int = 4,
    track_delay: bool = True,
) -> np.ndarray | torch.Tensor:
    """Remove the far-end echo (and noise) from a microphone signal with ``processor``; returns ``[T]``
    (:meth:`speechkit.api.Processor.cancel_echo` is this function).

    Args:
        mic: microphone signal ``[T]`` (or ``[1, T]``) at ``sample_rate``.
        far_end: the loudspeaker (far-end) signal ``[T']`` at ``far_end_rate``.
        sample_rate: rate of ``mic`` (and of the result).
        far_end_rate: rate of ``far_end`` (default: ``sample_rate``).
        delay_seconds: the echo's bulk delay (reference leading the microphone); None estimates
            it with GCC-PHAT up to ``max_delay_seconds`` (0 disables the alignment).
        max_delay_seconds: search range of the estimate.
        repair_nonfinite: replace NaN/Inf input samples by 0 instead of refusing the input.
        track_delay: follow changes of the delay through the recording (:func:`echo_delay_schedule`);
            False keeps the first estimate throughout. No effect when ``delay_seconds`` is given.
        stacklevel: where input warnings point, counted from :func:`speechkit._arrays.check_samples`
            (4: the caller of this function).

    The reference is aligned, cut or zero-padded to the microphone's length and both run
    through the same bounded-memory machinery as files (see :class:`speechkit.inference.EchoPipeline`).
    """
    processor.check_action("cancel_echo")
    rate = check_rate(sample_rate, "sample_rate")
    reference_rate = rate if far_end_rate is None else check_rate(far_end_rate, "far_end_rate")
    mic_array = mono_array(mic, "mic", rate, repair_nonfinite, stacklevel)
    reference = mono_array(far_end, "far_end", reference_rate, repair_nonfinite, stacklevel)
    reference_at_mic_rate = _resample_excerpt(reference, reference_rate, rate)
    delay, _ = estimate_echo_delay(mic_array, reference_at_mic_rate, rate, delay_seconds, max_delay_seconds)
    schedule = [(0, delay.samples)]
    if track_delay and delay_seconds is None and max_delay_seconds > 0:
        pair = (mic_array, _padded(reference_at_mic_rate[: mic_array.shape[-1]], mic_array.shape[-1]))
        schedule = echo_delay_schedule([pair], rate, delay.samples, max_delay_seconds)
    pipeline = _echo_pipeline(processor, rate, reference_rate, schedule)
    output = np.concatenate([pipeline.push(mic_array, reference), pipeline.finish()])  # [T]
    return like_input(output, mic)


def run_echo_file(
    processor: "Processor",
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
    stacklevel: int = 3,
    track_delay: bool = True,
) -> EchoFileResult:
    """Cancel the echo of one microphone/far-end file pair into ``output`` with ``processor``
    (:meth:`speechkit.api.Processor.cancel_echo_file` is this function).

    See :func:`cancel_echo_file`; ``stacklevel`` of the warnings counts from
    :func:`speechkit.files.report_file_warnings` (3: the caller of this function).
    """
    from .delay import DEFAULT_ANALYSIS_SECONDS, check_pair_lengths

    processor.check_action("cancel_echo")
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
        schedule = [(0, delay.samples)]
        if track_delay and delay_seconds is None and max_delay_seconds > 0:
            schedule = echo_delay_schedule(
                _paired_file_blocks(mic_handle, reference_handle, rate), rate, delay.samples, max_delay_seconds
            )
        pipeline = _echo_pipeline(processor, rate, reference_rate, schedule)
        mic_checker = SampleChecker(rate, str(mic), repair_nonfinite)
        reference_checker = SampleChecker(reference_rate, str(far_end), repair_nonfinite)
        writer = AtomicAudioWriter(output, rate, 1, force=force)
        readers = [checked_blocks(mic_handle, mic_checker), checked_blocks(reference_handle, reference_checker)]
        run_file(readers, EchoFeed(pipeline), [writer], progress)
    messages = report_file_warnings(
        messages + mic_checker.warnings() + reference_checker.warnings(), mic, pipeline, [writer],
        stacklevel=stacklevel,
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
        delay_schedule=schedule,
    )


def echo_delay_schedule(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    sample_rate: int,
    initial_delay: int,
    max_delay_seconds: float = DEFAULT_MAX_DELAY_SECONDS,
) -> list[tuple[int, int]]:
    """The bulk delay through a recording, ``[(start_sample, delay_samples), ...]``, from ``initial_delay`` on.

    :func:`speechkit.delay.delay_schedule` over microphone/far-end block pairs (``[n]`` each at
    ``sample_rate``, any ``n``: they are cut into blocks of :data:`TRACKING_BLOCK_SAMPLES`, so a
    file read in blocks and the same signals in memory give one schedule): GCC-PHAT on the last 2 s
    (or four times the search range when longer) every 0.25 s once a whole window is buffered, a
    change adopted once three analyses agree. Real
    calls change their delay when an audio buffer is dropped or repeated; with one delay for the
    whole file, an echo that arrives earlier than the aligned reference can no longer be cancelled.
    """
    window = max(2.0, 4 * max_delay_seconds)
    # a delay is already known from the first minute: analyse only full windows and ask three agreeing
    # analyses before moving away from it (two, from half a window, moved it in 2 of 120 held-out
    # 4-second items, on a few words of double talk; three from full windows in none)
    options = TrackerOptions(max_delay_seconds=max_delay_seconds, window_seconds=window, min_history_seconds=window,
                             agreements=3)
    return delay_schedule(_rechunked(pairs, TRACKING_BLOCK_SAMPLES), sample_rate, initial_delay, options)


def _rechunked(pairs: Iterable[tuple[np.ndarray, np.ndarray]], size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Pairs of ``[n]`` blocks regrouped into pairs of ``size`` samples (a last partial block is dropped)."""
    pending: list[np.ndarray] = [np.zeros(0, np.float32), np.zeros(0, np.float32)]
    for mic, far in pairs:
        pending = [np.concatenate([pending[0], mic]), np.concatenate([pending[1], far])]
        whole = pending[0].shape[-1] // size * size
        for start in range(0, whole, size):
            yield pending[0][start : start + size], pending[1][start : start + size]
        pending = [pending[0][whole:], pending[1][whole:]]


def _echo_pipeline(
    processor: "Processor", rate: int, reference_rate: int, delay_samples: int | list[tuple[int, int]]
) -> EchoPipeline:
    """The echo pipeline of ``processor`` for one microphone/reference pair (one delay or a schedule).

    A model with a linear adaptive-filter stage declares a ``reference_lead`` (samples at its rate):
    the reference is aligned that much earlier than the bulk delay, so that an estimate a few
    milliseconds late does not cut the echo's direct path out of the filter's causal window.
    """
    model = processor.model
    lead = int(round(getattr(model, "reference_lead", 0) * rate / model.sample_rate))
    schedule = [(0, delay_samples)] if isinstance(delay_samples, int) else delay_samples
    return EchoPipeline(
        model, rate, reference_rate, [(start, delay - lead) for start, delay in schedule],
        processor.chunk_seconds, processor.overlap_seconds, processor.device, processor.streaming,
    )


def _padded(block: np.ndarray, length: int) -> np.ndarray:
    """``block [n]`` zero-padded to ``length`` samples."""
    return block if block.shape[-1] >= length else np.pad(block, (0, length - block.shape[-1]))


def _paired_file_blocks(mic_handle: Any, reference_handle: Any, rate: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Microphone and far-end blocks of equal length from the start of two open mono files (the far end
    resampled to ``rate``, zeros after its end; non-finite samples as 0); both files are rewound after."""
    from .audio import StreamResampler

    resampler = StreamResampler(int(reference_handle.samplerate), rate, 1)
    pending = np.zeros(0, dtype=np.float32)
    references = iter_blocks(reference_handle, max(1, int(READ_SECONDS * reference_handle.samplerate)))
    try:
        for mic_block in iter_blocks(mic_handle, max(1, int(READ_SECONDS * rate))):
            mic = np.nan_to_num(mic_block[0], nan=0.0, posinf=0.0, neginf=0.0)
            while pending.shape[-1] < mic.shape[-1]:
                reference_block = next(references, None)
                if reference_block is None:
                    pending = np.concatenate([pending, resampler.flush()[0]])
                    pending = _padded(pending, mic.shape[-1])
                    break
                pending = np.concatenate([pending, resampler.process(reference_block)[0]])
            reference, pending = pending[: mic.shape[-1]], pending[mic.shape[-1] :]
            yield mic, np.nan_to_num(reference, nan=0.0, posinf=0.0, neginf=0.0)
    finally:
        mic_handle.seek(0)
        reference_handle.seek(0)


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
    track_delay: bool = True,
) -> EchoFileResult:
    """Cancel the far-end echo (and noise) of the microphone file ``mic`` into ``output``, in bounded memory.

    Args:
        mic: mono microphone recording.
        far_end: mono far-end (loudspeaker) reference of the same call.
        output: destination file (``.wav``, ``.flac``, ``.ogg``) or an existing directory
            (``<dir>/<mic name>_aec.<ext>``); written at the microphone's rate and length.
        model: bundled model name, checkpoint path, a Processor from :func:`load_echo_canceller`,
            or None (the bundled :data:`DEFAULT_AEC_MODEL`).
        force: overwrite an existing output.
        delay_seconds: impose the echo's bulk delay instead of estimating it (GCC-PHAT on the
            first minute of both files, up to ``max_delay_seconds``; 0 disables the alignment).
        max_length_difference: refuse pairs whose lengths differ by more seconds than this (the
            reference is cut or zero-padded to the microphone's length after alignment).
        resample: accept a reference at another rate than the microphone (it is resampled).
        device, chunk_seconds, repair_nonfinite, progress: as in :func:`enhance_file`.
        track_delay: follow changes of the bulk delay through the recording (a first pass over both
            files, :func:`echo_delay_schedule`); False keeps the delay of the first minute. No effect
            when ``delay_seconds`` is given.

    Both files are read block by block; a streaming model (such as ``complex_d3net_aec``) runs
    its ``forward_step`` with the state carried through the whole recording, so the result equals
    one offline pass while memory does not grow with the length of the call.
    """
    from .api import Processor

    processor = model if isinstance(model, Processor) else load_echo_canceller(model, device, chunk_seconds)
    return run_echo_file(
        processor, mic, far_end, output, force, delay_seconds, max_delay_seconds, max_length_difference, resample,
        repair_nonfinite, progress, stacklevel=4, track_delay=track_delay,
    )
