"""Echo cancellation when the recording's timing is not ideal: long delays, clock drift, delay jumps (issue 18).

Real calls differ from the held-out scenarios of ``bench.compare_aec`` in their timing: the bulk
delay between the far end and its echo can approach the search range, the loudspeaker's and the
microphone's clocks can drift apart, and a dropped or repeated audio buffer makes the delay jump
mid-call (an echo that suddenly arrives earlier than the aligned far end cannot be cancelled by a
causal filter until the alignment follows). This benchmark builds 30-second far-end single-talk
recordings from the corpus cache's *test* split (read sentences with their pauses, a measured room
response, real noise 35 dB below the echo) under each timing condition and reports the ERLE of
every system in three windows: before the change (5-15 s), right after it (15-20 s) and later
(20-30 s).

Systems: ``speechkit aec`` as shipped (the bundled network; the delay measured on the first minute
and followed through the recording), the same with ``--fixed-delay`` (one delay for the whole
file), optionally the realtime engine (``--realtime ONNX``: the delay tracked live from past
samples), and WebRTC AEC3 with and without its noise suppressor (which finds the delay itself).

    .venv/bin/python -m bench.aec_delay_changes --corpus-root CORPUS [--clips 2] [--realtime aec.onnx] [--conditions ...]

Writes ``bench/results/aec_delay_changes.json`` and the table beside it (``.md``).
"""
from __future__ import annotations

import bench.one_thread  # noqa: F401 - one thread per system, set before torch loads

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from bench.peers.report import finish_report, format_cell, skipped_and_notes_lines, title_lines  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "aec_delay_changes.json"
SAMPLE_RATE = 16000
CLIP_SECONDS = 30.0
CHANGE_SECONDS = 15.0
NOISE_BELOW_ECHO_DB = 35.0
#: ERLE windows (seconds): before the change, right after it, later
WINDOWS = {"5-15 s": (5.0, 15.0), "15-20 s": (15.0, 20.0), "20-30 s": (20.0, 30.0)}
#: timing conditions: bulk delay (ms), clock drift of the loudspeaker (ppm), delay jump at 15 s (ms)
CONDITIONS: dict[str, dict[str, float]] = {
    "steady 120 ms": {"delay_ms": 120.0},
    "steady 400 ms": {"delay_ms": 400.0},
    "drift +100 ppm": {"delay_ms": 120.0, "drift_ppm": 100.0},
    "drift -100 ppm": {"delay_ms": 120.0, "drift_ppm": -100.0},
    "jump +30 ms": {"delay_ms": 120.0, "jump_ms": 30.0},
    "jump -30 ms": {"delay_ms": 120.0, "jump_ms": -30.0},
    "jump -100 ms": {"delay_ms": 200.0, "jump_ms": -100.0},
}
PACKAGES = ("speechkit", "torch", "numpy", "onnxruntime", "pywebrtc-audio")


def _read(path: Path) -> np.ndarray:
    """A corpus file as mono float32 at :data:`SAMPLE_RATE`."""
    import soundfile
    import soxr

    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    audio = audio[:, 0]
    return audio if rate == SAMPLE_RATE else soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)


def corpus_material(corpus_root: Path, clip: int) -> dict[str, Any]:
    """Far-end speech (test speakers' sentences with pauses), a measured response and a noise of the test split."""
    splits = json.loads((corpus_root / "splits.json").read_text())
    rng = np.random.default_rng(1000 + clip)
    speakers = sorted(splits["speech"]["librispeech"]["test"])
    pieces, length = [], 0
    for speaker in rng.permutation(speakers):
        for path in sorted((corpus_root / "speech" / "librispeech" / speaker).glob("*.flac")):
            pieces += [_read(path), np.zeros(int(SAMPLE_RATE * rng.uniform(0.3, 1.0)), np.float32)]
            length += pieces[-2].shape[-1] + pieces[-1].shape[-1]
        if length >= CLIP_SECONDS * SAMPLE_RATE:
            break
    far = np.concatenate(pieces)[: int(CLIP_SECONDS * SAMPLE_RATE)]
    rirs = sorted(splits["rirs"]["iosr_room_a"]["test"])
    response = _read(corpus_root / rirs[clip % len(rirs)])
    response = response[max(0, int(np.argmax(np.abs(response))) - 20) :][: int(0.3 * SAMPLE_RATE)]
    noises = sorted(path for corpus in splits["noise"].values() for path in corpus["test"])
    noise = np.resize(_read(corpus_root / noises[clip % len(noises)]), far.shape[-1])
    far = far * min(0.05 / np.sqrt(np.mean(far**2)), 0.9 / np.max(np.abs(far)))  # -26 dBFS, no clipping
    return {"far": far.astype(np.float32), "response": response, "noise": noise,
            "rir": rirs[clip % len(rirs)], "noise_file": noises[clip % len(noises)]}


def microphone(material: dict[str, Any], delay_ms: float, drift_ppm: float = 0.0, jump_ms: float = 0.0) -> np.ndarray:
    """The far end played (with clock drift), delayed (with a jump at :data:`CHANGE_SECONDS`), through the room, plus noise."""
    import soxr
    from scipy.signal import fftconvolve

    far = material["far"]
    played = soxr.resample(far, SAMPLE_RATE, SAMPLE_RATE * (1 + drift_ppm * 1e-6)).astype(np.float32) if drift_ppm else far
    delayed = np.concatenate([np.zeros(int(delay_ms * SAMPLE_RATE / 1000), np.float32), played])
    if jump_ms:
        at, shift = int(CHANGE_SECONDS * SAMPLE_RATE), int(abs(jump_ms) * SAMPLE_RATE / 1000)
        gap = np.zeros(shift, np.float32)
        delayed = np.concatenate([delayed[:at], gap, delayed[at:]]) if jump_ms > 0 else np.concatenate(
            [delayed[:at], delayed[at + shift :]])
    echo = fftconvolve(delayed, material["response"])[: far.shape[-1]]
    echo = np.pad(echo, (0, far.shape[-1] - echo.shape[-1]))
    noise = material["noise"] * np.sqrt(np.mean(echo**2) / np.mean(material["noise"] ** 2))
    mic = echo + noise * 10 ** (-NOISE_BELOW_ECHO_DB / 20)
    return (mic * min(1.0, 0.9 / np.max(np.abs(mic)))).astype(np.float32)  # never clipped


def window_erle(mic: np.ndarray, output: np.ndarray) -> dict[str, float]:
    """ERLE (dB) of ``output`` against ``mic`` in each of :data:`WINDOWS`."""
    from speechkit.metrics import erle

    return {name: erle(mic[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)],
                       output[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]) for name, (start, end) in WINDOWS.items()}


def systems(realtime: str | None) -> tuple[dict[str, Any], dict[str, str]]:
    """The systems by label (each ``(mic, far) -> output [T]`` aligned with the input) and the skipped ones."""
    from bench.aec_peers.webrtc_aec3 import WebRTCAEC3, WebRTCAEC3NoiseSuppression
    from speechkit.api import load_echo_canceller

    processor = load_echo_canceller(None)
    found: dict[str, Any] = {
        "speechkit aec (delay followed)": lambda mic, far: processor.cancel_echo(mic, far, SAMPLE_RATE),
        "speechkit aec --fixed-delay": lambda mic, far: processor.cancel_echo(mic, far, SAMPLE_RATE, track_delay=False),
    }
    skipped: dict[str, str] = {}
    if realtime:
        from bench.aec_peers.speechkit_realtime import RealtimeEchoCanceller

        engine = RealtimeEchoCanceller(realtime)
        found["speechkit realtime (delay tracked live)"] = lambda mic, far: engine.process(
            np.stack([mic, far]), SAMPLE_RATE)[: mic.shape[-1]]
    for peer in (WebRTCAEC3(), WebRTCAEC3NoiseSuppression()):
        availability = peer.availability()
        if not availability.available:
            skipped[peer.name] = availability.reason
            continue
        found[peer.name] = lambda mic, far, peer=peer: peer.process(np.stack([mic, far]), SAMPLE_RATE)[
            peer.stream_delay : peer.stream_delay + mic.shape[-1]]
    return found, skipped


def markdown_report(report: dict[str, Any]) -> str:
    """One row per condition and system: mean ERLE over the clips in each window."""
    lines = title_lines(report, "Echo cancellation under real-call timing: ERLE (dB) before, right after and long after a change")
    lines += ["| Condition | System | " + " | ".join(WINDOWS) + " |", "|---|---|" + "---|" * len(WINDOWS)]
    for condition, by_system in report["results"].items():
        for label, rows in by_system.items():
            means = [format_cell(float(np.mean([row[name] for row in rows])), 1) for name in WINDOWS]
            lines.append(f"| {condition} | {label} | " + " | ".join(means) + " |")
    return "\n".join(lines + skipped_and_notes_lines(report)) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus-root", type=Path, required=True, help="corpus cache (recipes/README.md)")
    parser.add_argument("--clips", type=int, default=2, help="recordings per condition (talkers, room, noise differ)")
    parser.add_argument("--conditions", nargs="+", choices=list(CONDITIONS), default=list(CONDITIONS),
                        metavar="NAME", help=f"run only these conditions (default all: {', '.join(CONDITIONS)})")
    parser.add_argument("--realtime", default=None, help="also run this streaming ONNX export in the realtime engine")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output (the Markdown goes next to it)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    materials = [corpus_material(args.corpus_root, clip) for clip in range(args.clips)]
    found, skipped = systems(args.realtime)
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for condition in args.conditions:
        timing = CONDITIONS[condition]
        results[condition] = {label: [] for label in found}
        for material in materials:
            mic = microphone(material, **timing)
            for label, system in found.items():
                results[condition][label].append(window_erle(mic, system(mic, material["far"])))
    notes = [
        f"{args.clips} far-end single-talk recordings of {CLIP_SECONDS:g} s per condition (test-split read "
        "sentences with pauses, a measured IoSR room response, a test-split real noise "
        f"{NOISE_BELOW_ECHO_DB:g} dB below the echo; linear loudspeaker). Changes happen at "
        f"{CHANGE_SECONDS:g} s; drift resamples the played far end by 1 + ppm 1e-6 (3 ms over 30 s at 100 ppm).",
        "ERLE = 10 log10(sum mic^2 / sum output^2) in each window (speechkit.metrics.erle); it also counts "
        "removed noise, which the noise suppressor of webrtc_aec3_ns removes most aggressively.",
        "speechkit aec follows the delay with speechkit.delay.delay_schedule: a change is confirmed by three "
        "GCC-PHAT analyses of full 2 s windows, 0.25 s apart, located within 0.5 s windows and applied 0.25 s on "
        "the side that keeps the echo causal (a shorter delay before the change, a longer one after it); "
        "--fixed-delay keeps the delay GCC-PHAT finds on the first minute (here: the whole clip, so with a jump "
        "it may be either delay).",
    ]
    if args.realtime:
        notes.append(f"speechkit realtime: the streaming ONNX export {args.realtime} in the realtime engine "
                     "(realtime.echo_delay), which sees past samples only: a change is applied when confirmed, "
                     "about 1-2 s after it happened, and the model restarts on the new alignment.")
    return finish_report("aec_delay_changes", argv, PACKAGES, started, markdown_report, args.out,
                         clips=args.clips, conditions={name: CONDITIONS[name] for name in args.conditions}, materials=[
                             {key: material[key] for key in ("rir", "noise_file")} for material in materials],
                         results=results, skipped=skipped, notes=notes)


if __name__ == "__main__":
    raise SystemExit(main())
