"""``speechkit enhance`` and ``speechkit separate``: batch processing of files, folders and globs.

Every input is processed independently: a failure prints one line (no traceback) and the batch
continues (streaming models run step by step with their state carried through each file, see
:mod:`speechkit.inference`); a summary ends the run and the exit code is non-zero if anything failed.
"""
from __future__ import annotations

import argparse
import glob
import logging
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ..audio import audio_files_under, default_output_name, names_an_audio_file
from ..errors import OutputExistsError, SpeechkitError
from ..inference import (
    CHANNEL_MODES,
    DEFAULT_CHUNK_SECONDS,
    DEFAULT_OVERLAP_SECONDS,
    ENHANCE_CHANNELS,
    SEPARATE_CHANNELS,
)
from . import EXIT_FAILED, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from ..api import FileResult, Processor

GLOB_CHARACTERS = "*?["
#: --plot draws at most this many seconds of each file
PLOT_SECONDS = 120.0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``enhance`` and ``separate`` commands."""
    enhance = subparsers.add_parser(
        "enhance",
        help="enhance speech in audio files",
        description="Enhance audio files, folders (recursively) or glob patterns in bounded memory.",
    )
    enhance.add_argument("inputs", nargs="+", metavar="IN", help="audio files, folders or glob patterns")
    enhance.add_argument(
        "-o", "--output", metavar="OUT",
        help="output file (single input with a .wav/.flac/.ogg name) or output folder; "
        "default: <name>_enhanced.<ext> next to each input",
    )
    enhance.add_argument(
        "--channels", choices=CHANNEL_MODES, default=ENHANCE_CHANNELS,
        help=f"process each channel on its own (separate) or average them to mono first (mix); "
        f"default: {ENHANCE_CHANNELS}, as the Python API",
    )
    enhance.add_argument(
        "--attenuation-limit", type=float, default=None, metavar="DB",
        help="add the input back DB dB down, so noise is never attenuated by more than about DB dB "
        "(masks artefacts, e.g. 20; default: no limit)",
    )
    enhance.add_argument(
        "--mics", default=None, metavar="0,1,2,3",
        help="input channels to use: a microphone-array model's microphones in array order (default: "
        "the first M), or the channels a one-channel model enhances (default: all)",
    )
    _add_common(enhance)
    enhance.set_defaults(func=run_enhance)

    separate = subparsers.add_parser(
        "separate",
        help="separate the speakers of audio files",
        description="Write one file per source: OUTDIR/<name>_s1.wav, OUTDIR/<name>_s2.wav, ...",
    )
    separate.add_argument("inputs", nargs="+", metavar="IN", help="audio files, folders or glob patterns")
    separate.add_argument(
        "-o", "--output", metavar="OUTDIR",
        help="output folder, or a pattern with {name} and {source} such as 'out/{name}_spk{source}.flac'; "
        "default: <name>_s1.wav, ... next to each input",
    )
    separate.add_argument(
        "--channels", choices=CHANNEL_MODES, default=SEPARATE_CHANNELS,
        help=f"average the channels to mono first (mix) or separate each channel on its own, each with "
        f"its own source order (separate); default: {SEPARATE_CHANNELS}, as the Python API",
    )
    _add_common(separate)
    separate.set_defaults(func=run_separate)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None, metavar="NAME|PATH",
        help="bundled model name or checkpoint path (default: the bundled enhancer, or the bundled 2-speaker "
        "separator for separate)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    parser.add_argument(
        "--chunk-seconds", type=float, default=None,
        help=(
            "audio per model call for long files (default: the chunk the model declares, else "
            f"{DEFAULT_CHUNK_SECONDS:g} s); streaming (causal) models carry their state across calls, so their "
            "result equals one pass over the whole file"
        ),
    )
    parser.add_argument(
        "--overlap-seconds", type=float, default=None,
        help=(
            "cross-faded overlap between chunks of non-streaming models (default: the model's declared overlap, "
            f"else {DEFAULT_OVERLAP_SECONDS:g} s)"
        ),
    )
    parser.add_argument(
        "--repair-nonfinite", action="store_true",
        help="replace NaN/Inf input samples by 0 instead of refusing the file",
    )
    parser.add_argument(
        "--plot", action="store_true",
        help="also draw the input's and output's spectrograms into a PNG beside the output(s) "
        f"(<output>.png, or <name>_separated.png; first {PLOT_SECONDS:g} s; needs speechkit[plot])",
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    add_option_argument(parser)


def add_option_argument(parser: argparse.ArgumentParser) -> None:
    """Add the repeatable ``--option KEY=VALUE`` (model options, validated against the model's schema)."""
    parser.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE",
        help="model option (repeatable), e.g. --option steps=30; `speechkit models --json` lists each model's options",
    )


def expand_inputs(patterns: list[str]) -> list[tuple[Path, Path | None, str | None]]:
    """Files to process: ``(file, base folder for relative output names, error)``.

    Folders are searched recursively for :data:`~speechkit.audio.AUDIO_EXTENSIONS`; glob patterns
    are expanded (``**`` recursive). A pattern or path that matches nothing yields an error entry.
    """
    found: list[tuple[Path, Path | None, str | None]] = []
    seen: set[Path] = set()

    def add(path: Path, base: Path | None) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append((path, base, None))

    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            files = audio_files_under(path)
            if not files:
                found.append((path, None, f"{path}: the folder contains no audio files"))
            for candidate in files:
                add(candidate, path)
        elif path.exists():
            add(path, None)
        elif any(character in pattern for character in GLOB_CHARACTERS):
            matches = sorted(Path(match) for match in glob.glob(pattern, recursive=True))
            files = [match for match in matches if match.is_file()]
            if not files:
                found.append((path, None, f"{pattern}: no file matches this pattern"))
            for match in files:
                add(match, None)
        else:
            found.append((path, None, f"{path}: does not exist"))
    return found


def _enhance_output(source: Path, base: Path | None, output: Path | None, single: bool) -> Path:
    if output is None:  # next to the input, never the input itself
        return source.with_name(default_output_name(source, ENHANCED_SUFFIX))
    if single and output.suffix and not output.is_dir():  # a file name (its extension is checked later)
        return output
    relative = source.relative_to(base).parent if base is not None else Path()
    return output / relative / default_output_name(source)


#: suffix of enhanced files written next to their input when no ``-o`` is given
ENHANCED_SUFFIX = "_enhanced"


def run_enhance(args: argparse.Namespace) -> int:
    """Run ``speechkit enhance``."""
    return _run_batch(args, "enhance")


def run_separate(args: argparse.Namespace) -> int:
    """Run ``speechkit separate``."""
    return _run_batch(args, "separate")


def _run_batch(args: argparse.Namespace, action: str) -> int:
    from ..api import load, separation_outputs
    from ..channels import parse_mics
    from ..models.spec import parse_option_strings
    from ..pretrained import default_model

    if args.plot:  # refuse before anything is processed
        from .._optional import require

        require("matplotlib", "plot", "--plot")
    inputs = expand_inputs(args.inputs)
    output = Path(args.output) if args.output else None
    runnable = [entry for entry in inputs if entry[2] is None]
    is_pattern = action == "separate" and output is not None and "{" in args.output
    looks_like_file = output is not None and names_an_audio_file(output)
    if looks_like_file and not is_pattern and (len(runnable) > 1 or action == "separate"):
        needs = f"{len(runnable)} inputs need" if action == "enhance" else "separate needs"
        print(
            f"speechkit {action}: error: {needs} an output folder (or a {{name}}_{{source}}.wav pattern), "
            f"not the file name {output}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    processor = load(args.model or default_model(action), device=args.device, chunk_seconds=args.chunk_seconds,
                     overlap_seconds=args.overlap_seconds,
                     attenuation_limit_db=getattr(args, "attenuation_limit", None),
                     options=parse_option_strings(args.option), mics=parse_mics(getattr(args, "mics", None)))
    processor.check_action(action)
    show_progress = not args.no_progress
    failed: list[str] = []
    done = 0
    planned: set[Path] = set()
    for source, base, problem in inputs:
        if problem is not None:
            _report(f"speechkit {action}: FAILED {problem}", show_progress)
            failed.append(str(source))
            continue
        try:
            if action == "enhance":
                target = _enhance_output(source, base, output, single=len(runnable) == 1)
                destinations = [target]
            elif is_pattern:
                target = args.output
                destinations = separation_outputs(source, target, processor.num_sources)
            else:
                if output is None:
                    target = source.parent
                elif base is not None:
                    target = output / source.relative_to(base).parent
                else:
                    target = output
                destinations = separation_outputs(source, target, processor.num_sources)
            figure = _figure_path(action, source, destinations) if args.plot else None
            if figure is not None:
                if figure.exists() and not args.force:
                    raise OutputExistsError(f"{figure} exists; pass --force to overwrite it")
                destinations = [*destinations, figure]
            clash = [path for path in destinations if path.resolve() in planned]
            if clash:
                raise SpeechkitError(f"output {clash[0]} would also be written by an earlier input of this batch")
            planned.update(path.resolve() for path in destinations)
            result = _process_one(processor, action, source, target, args, show_progress)
            if figure is not None:
                _draw_figure(figure, action, source, result.outputs)
                result.outputs.append(figure)
        except SpeechkitError as error:
            text = str(error)
            line = text if text.startswith(str(source)) else f"{source}: {text}"
            _report(f"speechkit {action}: FAILED {line}", show_progress)
            failed.append(str(source))
            continue
        except Exception as error:  # noqa: BLE001 - one line per file, the batch goes on
            logging.getLogger("speechkit").info("traceback of the failure below (-v)", exc_info=True)
            _report(f"speechkit {action}: FAILED {source}: unexpected {type(error).__name__}: {error}", show_progress)
            failed.append(str(source))
            continue
        done += 1
        for message in result.warnings:
            _report(f"speechkit {action}: warning: {message}", show_progress)
        _report(
            f"speechkit {action}: {source} -> {', '.join(str(path) for path in result.outputs)}",
            show_progress,
        )
    summary = f"speechkit {action}: {done} file(s) done, {len(failed)} failed"
    print(summary, file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _process_one(
    processor: "Processor", action: str, source: Path, target: "Path | str", args: argparse.Namespace,
    show_progress: bool,
) -> "FileResult":
    """Process one file with a progress bar; library warnings are collected in the result, not printed."""
    from tqdm import tqdm

    from ..audio import audio_info

    info = audio_info(source)
    with tqdm(
        total=round(info.duration, 2), unit="s", desc=source.name, file=sys.stderr, leave=False,
        disable=not show_progress, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s audio [{elapsed}<{remaining}]",
    ) as bar, warnings.catch_warnings():
        warnings.simplefilter("ignore")

        def advance(frames: int) -> None:
            bar.update(frames / info.sample_rate)

        options = dict(
            force=args.force, channels=args.channels, repair_nonfinite=args.repair_nonfinite, progress=advance
        )
        if action == "enhance":
            return processor.enhance_file(source, target, **options)
        return processor.separate_file(source, target, **options)


def _figure_path(action: str, source: Path, destinations: list[Path]) -> Path:
    """Where ``--plot`` draws: ``<output>.png`` for enhance, ``<dir of s1>/<name>_separated.png`` for separate."""
    if action == "enhance":
        return destinations[0].with_suffix(".png")
    return destinations[0].parent / f"{source.stem}_separated.png"


def _draw_figure(figure: Path, action: str, source: Path, outputs: list[Path]) -> None:
    """The spectrograms of the input and its outputs (first :data:`PLOT_SECONDS`) into ``figure``."""
    from ..plot import ENHANCEMENT_TITLES, separation_titles, write_files_figure

    titles = ENHANCEMENT_TITLES[:2] if action == "enhance" else separation_titles(len(outputs))
    write_files_figure(figure, [source, *outputs], list(titles), PLOT_SECONDS, heading=source.name)


def _report(message: str, show_progress: bool) -> None:
    if show_progress:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr)
