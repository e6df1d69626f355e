"""``speechkit demo -o DIR``: enhance the bundled real example recording and draw a spectrogram.

Writes ``noisy_speech.wav`` (before), ``enhanced_speech.wav`` (after), ``clean_speech.wav`` (the
clean reference, when bundled) and ``spectrogram.png`` (before above after) into DIR.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import AudioError, OutputExistsError
from . import EXIT_OK

EXAMPLE_NAME = "noisy_speech.flac"
CLEAN_NAME = "clean_speech.flac"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command."""
    parser = subparsers.add_parser("demo", help="enhance the bundled example recording")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the demo files")
    parser.add_argument("--force", action="store_true", help="overwrite existing demo files")
    parser.add_argument("--model", default=None, metavar="NAME|PATH", help="model (default: the bundled default)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``speechkit demo``."""
    from ..api import load
    from ..audio import read_audio, write_audio
    from ..image import write_spectrogram_png
    from ..pretrained import EXAMPLES_DIR

    example = EXAMPLES_DIR / EXAMPLE_NAME
    if not example.is_file():
        raise AudioError(f"the bundled example {example} is missing from this copy of speechkit")
    directory = Path(args.output)
    if directory.exists() and not directory.is_dir():
        raise AudioError(f"{directory} is a file; the demo needs an output folder")
    names = ["noisy_speech.wav", "enhanced_speech.wav", "clean_speech.wav", "spectrogram.png"]
    existing = [name for name in names if (directory / name).exists()]
    if existing and not args.force:
        raise OutputExistsError(f"{directory / existing[0]} exists; pass --force to overwrite the demo files")
    processor = load(args.model, device=args.device)
    noisy, rate = read_audio(example)
    enhanced = processor.enhance(noisy, rate)  # [C, T]
    write_audio(directory / "noisy_speech.wav", noisy, rate, force=True)
    write_audio(directory / "enhanced_speech.wav", enhanced, rate, force=True)
    clean_path = EXAMPLES_DIR / CLEAN_NAME
    signals = [noisy, enhanced]
    if clean_path.is_file():
        clean, _ = read_audio(clean_path)
        write_audio(directory / "clean_speech.wav", clean, rate, force=True)
        signals.append(clean)
    write_spectrogram_png(directory / "spectrogram.png", signals, rate)
    panels = "noisy (top), enhanced" + (", clean reference (bottom)" if len(signals) == 3 else " (bottom)")
    print(f"speechkit demo: enhanced {example.name} with {processor.name}; wrote {directory}/ "
          f"(spectrogram.png: {panels})", file=sys.stderr)
    return EXIT_OK
