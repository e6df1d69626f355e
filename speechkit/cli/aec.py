"""``speechkit aec``: acoustic echo cancellation (and noise suppression) of microphone recordings.

::

    speechkit aec --mic mic.wav --ref far_end.wav -o near_end.wav --model aec.safetensors
    speechkit aec --mic mics/ --ref refs/ -o out/          # pairs files by relative path

For every pair the far-end reference is aligned to the microphone by the bulk delay that
:func:`speechkit.delay.estimate_delay` finds (GCC-PHAT, up to ``--max-delay-ms``; ``--delay-ms``
imposes one), then the echo-cancellation model removes echo and noise. Both files must be mono;
their sample rates must match unless ``--resample`` is given (both are then resampled to the
model's rate and the output is written at the microphone's rate); their lengths may differ by at
most ``--max-length-difference`` seconds (the reference is cut or zero-padded to the microphone's
length after alignment). Each pair is processed independently: a failure prints one line and the
batch goes on; the exit code is 1 if any pair failed.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..audio import AUDIO_EXTENSIONS, WRITE_FORMATS
from ..errors import AudioError, CheckpointError, ConfigError, SpeechkitError
from . import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from ..delay import DelayEstimate
    from ..models.base import SpeechModel

#: bundled echo-cancellation model used when ``--model`` is not given
DEFAULT_AEC_MODEL = "complex_d3net_aec_16k"
#: default search range of the bulk delay, in milliseconds
DEFAULT_MAX_DELAY_MS = 500.0
#: default largest allowed length difference between microphone and reference, in seconds
DEFAULT_MAX_LENGTH_DIFFERENCE = 1.0
#: STFT frames the network processes at once (bounds memory on long files)
DEFAULT_CHUNK_FRAMES = 256


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``aec`` command."""
    parser = subparsers.add_parser(
        "aec",
        help="cancel acoustic echo (and noise) in microphone recordings",
        description=(
            "Remove the far-end echo and noise from microphone recordings, given the far-end (loudspeaker) "
            "reference. MIC and REF are two mono files, or two folders whose files are paired by relative path."
        ),
    )
    parser.add_argument("--mic", required=True, metavar="MIC", help="microphone file or folder")
    parser.add_argument("--ref", required=True, metavar="REF", help="far-end reference file or folder")
    parser.add_argument(
        "-o", "--output", required=True, metavar="OUT",
        help="output file (single pair with a .wav/.flac/.ogg name) or output folder",
    )
    parser.add_argument(
        "--model", default=None, metavar="NAME|PATH",
        help=f"bundled model name or complex_d3net_aec checkpoint path (default: {DEFAULT_AEC_MODEL})",
    )
    parser.add_argument(
        "--max-delay-ms", type=float, default=DEFAULT_MAX_DELAY_MS,
        help=f"search the bulk delay up to this value (default {DEFAULT_MAX_DELAY_MS:g} ms; 0 disables alignment)",
    )
    parser.add_argument(
        "--delay-ms", type=float, default=None,
        help="use this bulk delay (reference leading the microphone) instead of estimating it",
    )
    parser.add_argument(
        "--max-length-difference", type=float, default=DEFAULT_MAX_LENGTH_DIFFERENCE, metavar="SECONDS",
        help=f"refuse pairs whose lengths differ by more (default {DEFAULT_MAX_LENGTH_DIFFERENCE:g} s)",
    )
    parser.add_argument(
        "--resample", action="store_true",
        help="accept microphone and reference files with different sample rates (both are resampled)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    parser.add_argument(
        "--repair-nonfinite", action="store_true",
        help="replace NaN/Inf input samples by 0 instead of refusing the pair",
    )
    parser.set_defaults(func=run)


@dataclasses.dataclass
class PairResult:
    """What :func:`cancel_echo_files` did for one pair."""

    output: Path
    delay: "DelayEstimate"
    warnings: list[str]


def find_pairs(mic: Path, ref: Path, output: Path) -> list[tuple[Path, Path | None, Path, str | None]]:
    """``(mic file, ref file, output file, problem)`` for two files or two folders.

    Folders pair files by relative path; a reference with the same relative stem but another audio
    extension also matches. A microphone file without a reference yields a problem entry.
    """
    if mic.is_file() and ref.is_file():
        looks_like_file = output.suffix.lower() in (*WRITE_FORMATS, *AUDIO_EXTENSIONS) and not output.is_dir()
        target = output if looks_like_file else output / _output_name(mic)
        return [(mic, ref, target, None)]
    if mic.is_dir() and ref.is_dir():
        if output.exists() and not output.is_dir():
            raise AudioError(f"{output} is a file; folders of pairs need an output folder")
        pairs: list[tuple[Path, Path | None, Path, str | None]] = []
        mic_files = sorted(
            path for path in mic.rglob("*") if path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS
        )
        if not mic_files:
            raise AudioError(f"{mic}: the folder contains no audio files")
        for mic_file in mic_files:
            relative = mic_file.relative_to(mic)
            target = output / relative.parent / _output_name(mic_file)
            reference = _matching_reference(ref, relative)
            problem = None if reference is not None else f"{mic_file}: no reference {ref / relative} in {ref}"
            pairs.append((mic_file, reference, target, problem))
        return pairs
    for path, name in ((mic, "--mic"), (ref, "--ref")):
        if not path.exists():
            raise AudioError(f"{name} {path} does not exist")
    raise AudioError(f"--mic {mic} and --ref {ref} must both be files or both be folders")


def _output_name(mic_file: Path) -> str:
    extension = mic_file.suffix.lower() if mic_file.suffix.lower() in WRITE_FORMATS else ".wav"
    return f"{mic_file.stem}_aec{extension}"


def _matching_reference(ref_dir: Path, relative: Path) -> Path | None:
    exact = ref_dir / relative
    if exact.is_file():
        return exact
    for extension in AUDIO_EXTENSIONS:
        candidate = (ref_dir / relative).with_suffix(extension)
        if candidate.is_file():
            return candidate
    return None


def load_aec_model(name_or_path: str | None) -> "SpeechModel":
    """Load an echo-cancellation checkpoint (bundled name or path), in eval mode."""
    from ..checkpoint import load_checkpoint
    from ..pretrained import MODELS_DIR, resolve_model

    if name_or_path is None and not (MODELS_DIR / f"{DEFAULT_AEC_MODEL}.safetensors").is_file():
        raise CheckpointError(
            f"the default echo-cancellation model {DEFAULT_AEC_MODEL!r} is not installed in this copy of "
            "speechkit; pass --model PATH to a trained complex_d3net_aec checkpoint"
        )
    path = resolve_model(name_or_path if name_or_path is not None else DEFAULT_AEC_MODEL)
    model = load_checkpoint(path, map_location="cpu")
    if model.task != "aec" or model.num_input_channels != 2:
        raise ConfigError(
            f"{path} holds a {model.name} {model.task} model, not an echo canceller (microphone + reference input)"
        )
    return model


def _read_mono(path: Path, repair_nonfinite: bool) -> tuple[np.ndarray, int, list[str]]:
    from ..audio import SampleChecker, read_audio

    audio, rate = read_audio(path)  # [C, T]
    if audio.shape[0] != 1:
        raise AudioError(f"{path} has {audio.shape[0]} channels; echo cancellation needs mono files")
    checker = SampleChecker(rate, str(path), repair_nonfinite=repair_nonfinite)
    audio = checker.check(audio)
    return audio[0], rate, checker.warnings()


def _resample(signal: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    if rate == target_rate:
        return signal
    import soxr

    return soxr.resample(signal, rate, target_rate).astype(np.float32)


def cancel_echo_array(
    model: "SpeechModel", mic: np.ndarray, aligned_reference: np.ndarray, device: str = "cpu",
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
) -> np.ndarray:
    """Run ``model`` on a microphone signal and its aligned reference (``[T]`` each, model rate) -> ``[T]``."""
    import torch

    x = torch.from_numpy(np.stack([mic, aligned_reference]).astype(np.float32))[None].to(device)  # [1, 2, T]
    with torch.inference_mode():
        if hasattr(model, "forward_chunked"):
            y = model.forward_chunked(x, chunk_frames)  # [1, 1, 1, T]
        else:
            y = model(x)  # [1, 1, 1, T]
    return y[0, 0, 0].cpu().numpy()


def cancel_echo_files(
    model: "SpeechModel", mic_path: Path, ref_path: Path, output: Path, args: argparse.Namespace
) -> PairResult:
    """Align, cancel the echo of, and write one microphone/reference pair."""
    from ..audio import check_output_path, write_audio
    from ..delay import DelayEstimate, align_reference, check_pair_lengths, estimate_delay
    from ..inference import select_device

    check_output_path(output, (mic_path, ref_path), force=args.force)
    mic, mic_rate, warnings = _read_mono(mic_path, args.repair_nonfinite)
    reference, ref_rate, ref_warnings = _read_mono(ref_path, args.repair_nonfinite)
    warnings += ref_warnings
    if mic_rate != ref_rate and not args.resample:
        raise AudioError(
            f"{mic_path} is at {mic_rate} Hz but {ref_path} is at {ref_rate} Hz; pass --resample to resample both "
            f"to the model's {model.sample_rate} Hz"
        )
    rate = model.sample_rate
    mic_model = _resample(mic, mic_rate, rate)
    reference = _resample(reference, ref_rate, rate)
    check_pair_lengths(len(mic_model), len(reference), rate, args.max_length_difference)
    if args.delay_ms is not None:
        delay = DelayEstimate(int(round(args.delay_ms * rate / 1000.0)), rate, float("inf"))
    elif args.max_delay_ms > 0:
        delay = estimate_delay(mic_model, reference, rate, max_delay_seconds=args.max_delay_ms / 1000.0)
        if delay.confidence == 0.0:
            warnings.append(f"{mic_path}: the microphone or reference is silent; no delay alignment")
        elif not delay.reliable:
            warnings.append(
                f"{mic_path}: uncertain bulk-delay estimate {1000 * delay.seconds:.1f} ms "
                f"(confidence {delay.confidence:.1f}); pass --delay-ms if you know it"
            )
    else:
        delay = DelayEstimate(0, rate, 0.0)
    aligned = align_reference(reference, delay.samples, len(mic_model))
    cleaned = cancel_echo_array(model, mic_model, aligned, str(select_device(args.device)))
    cleaned = _resample(cleaned, rate, mic_rate)[: len(mic)]
    if len(cleaned) < len(mic):
        cleaned = np.pad(cleaned, (0, len(mic) - len(cleaned)))
    output.parent.mkdir(parents=True, exist_ok=True)
    warnings += write_audio(output, cleaned, mic_rate, force=args.force)
    return PairResult(output=output, delay=delay, warnings=warnings)


def run(args: argparse.Namespace) -> int:
    """Run ``speechkit aec``."""
    from ..inference import select_device

    pairs = find_pairs(Path(args.mic), Path(args.ref), Path(args.output))
    model = load_aec_model(args.model).to(select_device(args.device))
    failed = 0
    done = 0
    for mic_file, ref_file, target, problem in pairs:
        if problem is not None or ref_file is None:
            print(f"speechkit aec: FAILED {problem}", file=sys.stderr)
            failed += 1
            continue
        try:
            result = cancel_echo_files(model, mic_file, ref_file, target, args)
        except SpeechkitError as error:
            text = str(error)
            print(f"speechkit aec: FAILED {text if text.startswith(str(mic_file)) else f'{mic_file}: {text}'}",
                  file=sys.stderr)
            failed += 1
            continue
        except Exception as error:  # noqa: BLE001 - one line per pair, the batch goes on
            logging.getLogger("speechkit").debug("unexpected failure", exc_info=True)
            print(f"speechkit aec: FAILED {mic_file}: unexpected {type(error).__name__}: {error}", file=sys.stderr)
            failed += 1
            continue
        done += 1
        for message in result.warnings:
            print(f"speechkit aec: warning: {message}", file=sys.stderr)
        print(
            f"speechkit aec: {mic_file} + {ref_file} -> {result.output} "
            f"(delay {1000 * result.delay.seconds:.1f} ms)",
            file=sys.stderr,
        )
    print(f"speechkit aec: {done} pair(s) done, {failed} failed", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK
