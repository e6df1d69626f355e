"""``speechkit aec``: acoustic echo cancellation (and noise suppression) of microphone recordings.

::

    speechkit aec --mic mic.wav --ref far_end.wav -o near_end.wav --model aec.safetensors
    speechkit aec --mic mics/ --ref refs/ -o out/          # pairs files by relative path
    speechkit aec --mic mic.wav --ref far_end.wav -o out.wav --linear-only   # the linear stage, no network
    speechkit aec --mic mic.wav --ref far_end.wav -o out.wav --plot   # + out.png: microphone, far end, output

For every pair the far-end reference is aligned to the microphone by the bulk delay that
:func:`speechkit.delay.estimate_delay` finds (GCC-PHAT, up to ``--max-delay-ms``; ``--delay-ms``
imposes one) and followed through the recording when it changes (a dropped or repeated audio buffer;
``--fixed-delay`` keeps the first estimate), then the echo-cancellation model removes echo and noise (a model with a linear stage
runs its adaptive filter first, on the aligned pair; ``--linear-only`` runs the bundled linear stage
``linear_aec_16k`` alone, no network: the adaptive filter and a residual-echo suppressor). Both files must be mono;
their sample rates must match unless ``--resample`` is given (the reference is then resampled to
the microphone's rate; the model runs at its own rate and the output is written at the
microphone's rate); their lengths may differ by at
most ``--max-length-difference`` seconds (the reference is cut or zero-padded to the microphone's
length after alignment). Each pair is processed independently: a failure prints one line and the
batch goes on; the exit code is 1 if any pair failed. The processing itself (streaming, bounded
memory) lives in :meth:`speechkit.api.Processor.cancel_echo_file`; this module only pairs files.
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ..audio import AUDIO_EXTENSIONS, audio_files_under, default_output_name, names_an_audio_file
from ..errors import AudioError, OutputExistsError, SpeechkitError
from ..pretrained import DEFAULT_ECHO_CANCELLER as DEFAULT_AEC_MODEL
from ..pretrained import LINEAR_ECHO_CANCELLER, NO_BUNDLED_ECHO_CANCELLER, bundled_echo_canceller
from . import EXIT_FAILED, EXIT_OK
from .enhance import PLOT_SECONDS, add_option_argument

if TYPE_CHECKING:
    from ..files import EchoFileResult

#: panel titles of ``aec --plot``, top to bottom
FIGURE_TITLES = ("microphone", "far end (loudspeaker reference, as given)", "echo cancelled")

#: default search range of the bulk delay, in milliseconds
DEFAULT_MAX_DELAY_MS = 500.0
#: default largest allowed length difference between microphone and reference, in seconds
DEFAULT_MAX_LENGTH_DIFFERENCE = 1.0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``aec`` command."""
    bundled = bundled_echo_canceller()
    model_note = NO_BUNDLED_ECHO_CANCELLER if bundled is None else f"default model: {bundled.stem}" + (
        " (adaptive filter + residual-echo suppressor, no network: the trained network is not installed)"
        if bundled.stem == LINEAR_ECHO_CANCELLER
        else " (the linear stage, then a trained network; 32 ms latency)"
    )
    parser = subparsers.add_parser(
        "aec",
        help="cancel acoustic echo (and noise) in microphone recordings",
        description=(
            "Remove the far-end echo and noise from microphone recordings, given the far-end (loudspeaker) "
            "reference. MIC and REF are two mono files, or two folders whose files are paired by relative path. "
            f"Note: {model_note}."
        ),
    )
    parser.add_argument("--mic", required=True, metavar="MIC", help="microphone file or folder")
    parser.add_argument("--ref", required=True, metavar="REF", help="far-end reference file or folder")
    parser.add_argument(
        "-o", "--output", required=True, metavar="OUT",
        help="output file (single pair with a .wav/.flac/.ogg name) or output folder",
    )
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--linear-only", action="store_true",
        help=f"cancel the echo with the linear stage alone, no network (bundled {LINEAR_ECHO_CANCELLER}: "
        "partitioned-block frequency-domain Kalman filter, 320 ms echo tail after delay alignment, then a "
        "residual-echo suppressor; 24 ms latency; leaves background noise)",
    )
    choice.add_argument(
        "--model", default=None, metavar="NAME|PATH",
        help=f"bundled model name or complex_d3net_aec checkpoint path (default: {DEFAULT_AEC_MODEL}, "
        f"else {LINEAR_ECHO_CANCELLER} where the network is not installed)"
        if bundled else "complex_d3net_aec checkpoint path (needed: no echo canceller is installed; "
        "train one with recipes/echo_cancellation)",
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
        "--fixed-delay", action="store_true",
        help="keep the delay measured on the first minute for the whole recording instead of following its changes",
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
    parser.add_argument(
        "--plot", action="store_true",
        help=f"also draw the spectrograms of microphone, far end and output to <output>.png (first "
        f"{PLOT_SECONDS:g} s; needs speechkit[plot])",
    )
    add_option_argument(parser)
    parser.set_defaults(func=run)


def find_pairs(mic: Path, ref: Path, output: Path) -> list[tuple[Path, Path | None, Path, str | None]]:
    """``(mic file, ref file, output file, problem)`` for two files or two folders.

    Folders pair files by relative path; a reference with the same relative stem but another audio
    extension also matches. A microphone file without a reference yields a problem entry.
    """
    if mic.is_file() and ref.is_file():
        target = output if names_an_audio_file(output) else output / default_output_name(mic, "_aec")
        return [(mic, ref, target, None)]
    if mic.is_dir() and ref.is_dir():
        if output.exists() and not output.is_dir():
            raise AudioError(f"{output} is a file; folders of pairs need an output folder")
        pairs: list[tuple[Path, Path | None, Path, str | None]] = []
        mic_files = audio_files_under(mic)
        if not mic_files:
            raise AudioError(f"{mic}: the folder contains no audio files")
        for mic_file in mic_files:
            relative = mic_file.relative_to(mic)
            target = output / relative.parent / default_output_name(mic_file, "_aec")
            reference = _matching_reference(ref, relative)
            problem = None if reference is not None else f"{mic_file}: no reference {ref / relative} in {ref}"
            pairs.append((mic_file, reference, target, problem))
        return pairs
    for path, name in ((mic, "--mic"), (ref, "--ref")):
        if not path.exists():
            raise AudioError(f"{name} {path} does not exist")
    raise AudioError(f"--mic {mic} and --ref {ref} must both be files or both be folders")


def describe_delay(result: "EchoFileResult") -> str:
    """``delay 120.0 ms``, or with changes ``delay 120.0 ms, then 90.0 ms from 14.62 s``."""
    rate = result.sample_rate
    delay_ms = 1000 * result.delay.seconds if result.delay is not None else 0.0
    changes = [f"{1000 * delay / rate:.1f} ms from {start / rate:.2f} s" for start, delay in result.delay_schedule[1:]]
    return f"delay {delay_ms:.1f} ms" + "".join(f", then {change}" for change in changes)


def _matching_reference(ref_dir: Path, relative: Path) -> Path | None:
    exact = ref_dir / relative
    if exact.is_file():
        return exact
    for extension in AUDIO_EXTENSIONS:
        candidate = (ref_dir / relative).with_suffix(extension)
        if candidate.is_file():
            return candidate
    return None


def run(args: argparse.Namespace) -> int:
    """Run ``speechkit aec``: the work is done by :meth:`speechkit.api.Processor.cancel_echo_file`."""
    from ..api import load_echo_canceller
    from ..models.spec import parse_option_strings

    if args.plot:  # refuse before anything is processed
        from .._optional import require

        require("matplotlib", "plot", "--plot")
    pairs = find_pairs(Path(args.mic), Path(args.ref), Path(args.output))
    model = LINEAR_ECHO_CANCELLER if args.linear_only else args.model
    processor = load_echo_canceller(model, device=args.device, options=parse_option_strings(args.option))
    failed = 0
    done = 0
    for mic_file, ref_file, target, problem in pairs:
        if problem is not None or ref_file is None:
            print(f"speechkit aec: FAILED {problem}", file=sys.stderr)
            failed += 1
            continue
        figure = target.with_suffix(".png") if args.plot else None
        try:
            if figure is not None and figure.exists() and not args.force:
                raise OutputExistsError(f"{figure} exists; pass --force to overwrite it")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # collected in result.warnings and printed below
                result = processor.cancel_echo_file(
                    mic_file, ref_file, target, force=args.force,
                    delay_seconds=None if args.delay_ms is None else args.delay_ms / 1000.0,
                    max_delay_seconds=args.max_delay_ms / 1000.0,
                    max_length_difference=args.max_length_difference,
                    resample=args.resample, repair_nonfinite=args.repair_nonfinite,
                    track_delay=not args.fixed_delay,
                )
            if figure is not None:
                from ..plot import write_files_figure

                write_files_figure(figure, [mic_file, ref_file, result.outputs[0]], FIGURE_TITLES, PLOT_SECONDS,
                                   heading=mic_file.name)
                result.outputs.append(figure)
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
            f"speechkit aec: {mic_file} + {ref_file} -> {', '.join(map(str, result.outputs))} ({describe_delay(result)})",
            file=sys.stderr,
        )
    print(f"speechkit aec: {done} pair(s) done, {failed} failed", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK
