"""Build the bundled example recording speechkit/assets/examples/{noisy,clean}_speech.flac.

Real speech: Speech Commands v0.02 words of speaker c22d3f18 (a test-split speaker), trimmed to
their active part, level-matched and concatenated; real noise: a segment of
``noise/speech_commands_background/doing_the_dishes.flac`` (also reserved for the test split),
mixed at 5 dB SNR. Deterministic; needs ../shared/data; not used at runtime.

    .venv/bin/python bench/make_example.py [--data ../shared/data] [--force]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "speechkit" / "assets" / "examples"
SPEAKER = "c22d3f18"
WORDS = ("go", "left", "stop", "right", "down", "yes")  # one take each, in this order
NOISE = "noise/speech_commands_background/doing_the_dishes.flac"
NOISE_OFFSET_SECONDS = 20.0
SNR_DB = 5.0
RATE = 16000
GAP_SECONDS = 0.12
MARGIN_SECONDS = 0.06
PEAK = 10 ** (-1.0 / 20)  # -1 dBFS


def active_part(word: np.ndarray) -> np.ndarray:
    """The word without its leading and trailing silence (20 ms frames above -20 dB of the loudest)."""
    frame = RATE // 50
    frames = len(word) // frame
    energy = np.array([np.mean(word[i * frame : (i + 1) * frame] ** 2) for i in range(frames)]) + 1e-12
    active = np.flatnonzero(10 * np.log10(energy / energy.max()) > -20)
    margin = int(MARGIN_SECONDS * RATE)
    start = max(0, active[0] * frame - margin)
    end = min(len(word), (active[-1] + 1) * frame + margin)
    return word[start:end]


def build(data: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Clean speech, noisy mixture and the source files used."""
    pieces, used = [], []
    gap = np.zeros(int(GAP_SECONDS * RATE), dtype=np.float64)
    for word in WORDS:
        path = sorted((data / "speech_commands" / word).glob(f"{SPEAKER}_nohash_*.flac"))[0]
        audio, rate = soundfile.read(path, dtype="float64")
        assert rate == RATE, f"{path} is {rate} Hz"
        audio = active_part(audio)
        audio = audio / (np.sqrt(np.mean(audio**2)) + 1e-12) * 0.05  # equal loudness per word
        pieces += [gap, audio]
        used.append(str(path.relative_to(data)))
    clean = np.concatenate(pieces + [gap])
    noise_file = soundfile.SoundFile(data / NOISE)
    noise_file.seek(int(NOISE_OFFSET_SECONDS * RATE))
    noise = noise_file.read(len(clean), dtype="float64")
    noise_file.close()
    used.append(f"{NOISE} (from {NOISE_OFFSET_SECONDS:g} s)")
    noise = noise * np.sqrt(np.mean(clean**2) / np.mean(noise**2) / 10 ** (SNR_DB / 10))
    noisy = clean + noise
    gain = PEAK / max(np.abs(noisy).max(), np.abs(clean).max())
    return clean * gain, noisy * gain, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    targets = [OUT_DIR / "noisy_speech.flac", OUT_DIR / "clean_speech.flac", OUT_DIR / "ATTRIBUTION.md"]
    if any(target.exists() for target in targets) and not args.force:
        raise SystemExit(f"{OUT_DIR} already holds the example; pass --force to rebuild it")
    clean, noisy, used = build(args.data)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    soundfile.write(targets[0], noisy, RATE, subtype="PCM_16")
    soundfile.write(targets[1], clean, RATE, subtype="PCM_16")
    files = "\n".join(f"- `{name}`" for name in used)
    targets[2].write_text(
        "# Example recording\n\n"
        "`noisy_speech.flac` (16 kHz mono, "
        f"{len(noisy) / RATE:.2f} s) is `clean_speech.flac` mixed with real kitchen noise at {SNR_DB:g} dB SNR, "
        "built by `bench/make_example.py`.\n\n"
        "Speech and noise come from the Speech Commands dataset v0.02: P. Warden, *Speech Commands: A Dataset "
        "for Limited-Vocabulary Speech Recognition*, arXiv:1804.03209, 2018, licensed CC-BY-4.0 "
        "(https://creativecommons.org/licenses/by/4.0/). Words were trimmed of silence, level-matched and "
        "concatenated; the noise segment was scaled. Speaker `c22d3f18` and the noise file are reserved for "
        "the test split of speechkit's recipes (never used for training).\n\n"
        f"Files used:\n\n{files}\n"
    )
    for target in targets:
        print(f"{target.relative_to(ROOT)}: {target.stat().st_size / 1024:.1f} KB")


if __name__ == "__main__":
    main()
