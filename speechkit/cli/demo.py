"""``speechkit demo -o DIR``: enhance the bundled real example recording and draw a spectrogram.

Writes ``noisy_speech.wav`` (before), ``enhanced_speech.wav`` (after), ``clean_speech.wav`` (the
clean reference, when bundled) and ``spectrogram.png`` (noisy, enhanced and clean reference
panels, see :mod:`speechkit.plot`) into DIR. Where the bundled two-speaker separator and its
example are installed, it also separates ``two_speakers_mix.wav`` (the bundled 16 kHz sentence
example ``two_speakers_16k_mix.flac``) into ``two_speakers_s1.wav`` and ``two_speakers_s2.wav``
and draws ``separation_spectrogram.png`` (mixture, speaker 1, speaker 2), with the SI-SDR of each.
Where an echo canceller and the echo example are bundled, it also cancels the echo of
``echo_mic.flac`` (3.5 s of a far-end talker's echo alone, then a near-end talker too) given
``echo_far_end.flac``: ``echo_mic.wav``, ``echo_far_end.wav``, ``echo_cancelled.wav`` and
``echo_spectrogram.png``, with the echo removed while the far end talks alone and the near end's
SI-SDR in double talk. The figures need matplotlib (``speechkit[plot]``); without it the audio is still written and one
line says how to get the figures.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..errors import AudioError, OutputExistsError
from ..plot import ENHANCEMENT_TITLES
from . import EXIT_OK

EXAMPLE_NAME = "noisy_speech.flac"
CLEAN_NAME = "clean_speech.flac"
MIXTURE_NAME = "two_speakers_16k_mix.flac"
REFERENCE_NAMES = ("two_speakers_16k_s1.flac", "two_speakers_16k_s2.flac")
SEPARATION_OUTPUTS = ("two_speakers_mix.wav", "two_speakers_s1.wav", "two_speakers_s2.wav", "separation_spectrogram.png")
#: the bundled echo example: microphone, far end (loudspeaker reference), clean near end
ECHO_NAMES = ("echo_mic.flac", "echo_far_end.flac", "echo_near_end.flac")
ECHO_OUTPUTS = ("echo_mic.wav", "echo_far_end.wav", "echo_cancelled.wav", "echo_spectrogram.png")
#: the echo example's near-end talker starts here: before, far-end single talk
ECHO_NEAR_END_ONSET_SECONDS = 3.5


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
    from ..pretrained import EXAMPLES_DIR

    example = EXAMPLES_DIR / EXAMPLE_NAME
    if not example.is_file():
        raise AudioError(f"the bundled example {example} is missing from this copy of speechkit")
    directory = Path(args.output)
    if directory.exists() and not directory.is_dir():
        raise AudioError(f"{directory} is a file; the demo needs an output folder")
    names = ["noisy_speech.wav", "enhanced_speech.wav", "clean_speech.wav", "spectrogram.png", *SEPARATION_OUTPUTS,
             *ECHO_OUTPUTS]
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
    drawn = _draw(directory / "spectrogram.png", signals, rate, ENHANCEMENT_TITLES[: len(signals)], example.name)
    panels = f" (spectrogram.png: {', '.join(ENHANCEMENT_TITLES[: len(signals)])})" if drawn else ""
    print(f"speechkit demo: enhanced {example.name} with {processor.name}; wrote {directory}/{panels}",
          file=sys.stderr)
    separated = _separate_example(directory, args.device)
    if separated:
        print(f"speechkit demo: {separated}", file=sys.stderr)
    cancelled = _cancel_echo_example(directory, args.device)
    if cancelled:
        print(f"speechkit demo: {cancelled}", file=sys.stderr)
    return EXIT_OK


def _draw(path: Path, signals: list, rate: int, titles: "list[str] | tuple[str, ...]", heading: str) -> bool:
    """Draw a figure; without matplotlib print one line saying how to get it and return False."""
    from ..errors import MissingDependencyError
    from ..plot import write_spectrogram_figure

    try:
        write_spectrogram_figure(path, signals, rate, list(titles), force=True, heading=heading)
    except MissingDependencyError as error:
        print(f"speechkit demo: {path.name} not drawn: {error}", file=sys.stderr)
        return False
    return True


def _separate_example(directory: Path, device: str) -> str | None:
    """Separate the bundled two-speaker example with the bundled separator; a summary, or None if not bundled."""
    import torch

    from ..api import load
    from ..audio import read_audio, write_audio
    from ..losses import si_sdr
    from ..plot import separation_titles
    from ..pretrained import DEFAULT_SEPARATOR, EXAMPLES_DIR, bundled_model_names

    mixture_path = EXAMPLES_DIR / MIXTURE_NAME
    if DEFAULT_SEPARATOR not in bundled_model_names() or not mixture_path.is_file():
        return None
    processor = load(DEFAULT_SEPARATOR, device=device)
    mixture, rate = read_audio(mixture_path)  # [1, T]
    estimates = processor.separate(mixture, rate)  # [S, C, T]
    write_audio(directory / SEPARATION_OUTPUTS[0], mixture, rate, force=True)
    for index, name in enumerate(SEPARATION_OUTPUTS[1:3]):
        write_audio(directory / name, estimates[index], rate, force=True)
    drawn = _draw(directory / SEPARATION_OUTPUTS[3], [mixture, *estimates[:2]], rate, separation_titles(2),
                  mixture_path.name)
    figure = ", separation_spectrogram.png" if drawn else ""
    references = [read_audio(EXAMPLES_DIR / name)[0] for name in REFERENCE_NAMES if (EXAMPLES_DIR / name).is_file()]
    if len(references) != 2:
        return f"separated {mixture_path.name} with {processor.name} into {directory}/two_speakers_s1.wav, _s2.wav"
    reference = torch.from_numpy(np.stack(references)[:, 0])  # [2, T]
    estimate = torch.from_numpy(np.asarray(estimates)[:2, 0])  # [2, T]
    straight = si_sdr(estimate, reference).mean().item()
    swapped = si_sdr(estimate.flip(0), reference).mean().item()
    before = si_sdr(torch.from_numpy(mixture).expand(2, -1), reference).mean().item()
    return (f"separated {mixture_path.name} with {processor.name}: SI-SDR {before:.1f} -> {max(straight, swapped):.1f} dB "
            f"(mean of both speakers); wrote two_speakers_s1.wav, two_speakers_s2.wav{figure}")


def _cancel_echo_example(directory: Path, device: str) -> str | None:
    """Cancel the echo of the bundled echo example with the bundled echo canceller; a summary, or None
    if either is not installed."""
    import torch

    from ..api import load_echo_canceller
    from ..audio import read_audio, write_audio
    from ..losses import si_sdr
    from ..metrics import erle
    from ..pretrained import EXAMPLES_DIR, bundled_echo_canceller

    paths = [EXAMPLES_DIR / name for name in ECHO_NAMES]
    model = bundled_echo_canceller()
    if model is None or not all(path.is_file() for path in paths):
        return None
    processor = load_echo_canceller(model, device=device)
    (mic, rate), (far_end, _), (near_end, _) = (read_audio(path) for path in paths)  # [1, T] each
    output = np.asarray(processor.cancel_echo(mic[0], far_end[0], rate), dtype=np.float32)[None]  # [T] -> [1, T]
    for name, audio in zip(ECHO_OUTPUTS[:3], (mic, far_end, output)):
        write_audio(directory / name, audio, rate, force=True)
    titles = ("microphone (echo, then echo + near-end talker)", "far end (loudspeaker)", f"echo cancelled ({model.stem})")
    drawn = _draw(directory / ECHO_OUTPUTS[3], [mic, far_end, output], rate, titles, paths[0].name)
    onset = int(ECHO_NEAR_END_ONSET_SECONDS * rate)
    single_talk = slice(rate // 2, onset)  # far end alone (after the first half second)
    removed = erle(mic[0, single_talk], output[0, single_talk])
    talk = slice(onset, None)  # double talk: score the near end
    reference = torch.from_numpy(near_end[:, talk])
    before = si_sdr(torch.from_numpy(mic[:, talk]), reference).item()
    after = si_sdr(torch.from_numpy(output[:, talk]), reference).item()
    figure = ", echo_spectrogram.png" if drawn else ""
    return (f"cancelled the echo of {paths[0].name} with {model.stem}: {removed:.1f} dB of echo removed while the "
            f"far end talks alone, near-end SI-SDR {before:.1f} -> {after:.1f} dB in double talk; wrote "
            f"echo_cancelled.wav{figure}")

