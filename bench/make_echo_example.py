"""Build the bundled echo example speechkit/assets/examples/echo_{mic,far_end,near_end}.flac.

An 8-second call from the corpus cache's *test* split (talkers never used in training): the far-end
talker plays through a loudspeaker into a measured room (a response of the split's measured rooms,
80 ms bulk delay, linear loudspeaker, no added noise), and the near-end talker starts speaking at
3.5 s: 3.5 s of far-end single talk, then double talk. ``echo_mic.flac`` is what the microphone
records, ``echo_far_end.flac`` the loudspeaker signal (the reference ``speechkit aec --ref`` takes),
``echo_near_end.flac`` the clean near end (to score the output). The attribution goes into
``ATTRIBUTION.md``. Deterministic; needs the corpus cache; not used at runtime.

    .venv/bin/python -m bench.make_echo_example --corpus-root data_cache/corpora \
        --floor-cache data_cache/speech_floor.json [--force]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile

from bench.make_separation_example import OUT_DIR, describe_source, replace_section, sources_of

NAMES = ("echo_mic.flac", "echo_far_end.flac", "echo_near_end.flac")
SECTION = "# Echo example (16 kHz)"
SAMPLE_RATE = 16000
SECONDS = 8.0
#: the near-end talker starts here (before: far-end single talk)
NEAR_END_ONSET_SECONDS = 3.5
#: the first draw of the test split whose two sentences fill their segments
SEED = 7


def echo_scenario(corpus_root: Path, floor_cache: Path, seed: int) -> dict:
    """One noise-free double-talk draw of 8 s from the test split (measured room, linear loudspeaker)."""
    import recipes.train

    dataset = recipes.train.realworld_echo(
        str(corpus_root), "test", SAMPLE_RATE, SECONDS, length=1, seed=seed, floor_cache=str(floor_cache),
        echo_options={
            "scenario_weights": {"double_talk": 1.0}, "noise_probability": 0.0, "rir_source": "measured",
            "nonlinearity_probability": 0.0, "echo_path_change_probability": 0.0, "delay_range_ms": [80.0, 80.0],
            "ser_range_db": [-3.0, -3.0], "level_range_db": [-24.0, -24.0], "far_end_level_range_db": [-22.0, -22.0],
        },
    )
    return dataset[0]


def speech_onset(signal: np.ndarray, frame: int = 320, below_peak_db: float = 35.0) -> int:
    """First sample of the first 20 ms frame within ``below_peak_db`` of the loudest frame."""
    frames = signal[: signal.size // frame * frame].reshape(-1, frame)  # [N, frame]
    energy = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)  # [N]
    return int(np.argmax(energy > energy.max() - below_peak_db)) * frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-root", type=Path, default=Path("data_cache/corpora"))
    parser.add_argument("--floor-cache", type=Path, default=Path("data_cache/speech_floor.json"))
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    existing = [OUT_DIR / name for name in NAMES if (OUT_DIR / name).exists()]
    if existing and not args.force:
        raise SystemExit(f"{existing[0]} exists (use --force)")
    item = echo_scenario(args.corpus_root, args.floor_cache, args.seed)
    onset = int(NEAR_END_ONSET_SECONDS * SAMPLE_RATE)
    talker = item["near_end"][0].numpy()  # [T]
    start = speech_onset(talker)
    near = np.zeros_like(talker)
    count = min(near.size - onset, talker.size - start)
    near[onset : onset + count] = talker[start : start + count]  # the sentence's first word now starts at 3.5 s
    mic = item["echo"][0].numpy() + near  # [T]
    far = item["far_end"][0].numpy()  # [T]
    peak = max(float(np.abs(mic).max()), float(np.abs(far).max()))
    scale = 0.9 / peak if peak > 0.9 else 1.0  # keep FLAC's 16-bit range; one gain for all three
    for name, audio in zip(NAMES, (mic, far, near)):
        soundfile.write(OUT_DIR / name, scale * audio, SAMPLE_RATE, subtype="PCM_16")
    entries = sources_of(args.corpus_root / "manifest.jsonl", [item["far_id"], item["near_id"]])
    lines = [
        SECTION,
        "",
        f"`{NAMES[0]}` (16 kHz mono, {SECONDS:g} s) is what a microphone records in a call: the echo of "
        f"`{NAMES[1]}` (the far end, played through a loudspeaker) plus `{NAMES[2]}` (the near-end talker, who starts "
        f"at {NEAR_END_ONSET_SECONDS:g} s; the sentence's leading silence removed), built by `bench/make_echo_example.py` from speechkit's test split (talkers "
        f"never used for training): a measured room response ({item['rir']}, IoSR-Surrey RealRoomBRIRs, license MIT), "
        f"{item['delay_ms']:.0f} ms bulk delay, a linear loudspeaker, signal-to-echo ratio {item['ser_db']:.0f} dB "
        "in double talk, no added noise.",
        "",
        f"- far end: {describe_source(entries.get(item['far_id'], {}), item['far_id'], SAMPLE_RATE)}",
        f"- near end: {describe_source(entries.get(item['near_id'], {}), item['near_id'], SAMPLE_RATE)}",
    ]
    attribution = OUT_DIR / "ATTRIBUTION.md"
    attribution.write_text(replace_section(attribution.read_text(encoding="utf-8"), SECTION, lines), encoding="utf-8")
    print(f"wrote {', '.join(NAMES)} ({item['far_id']} -> {item['near_id']}, {item['rir']}) to {OUT_DIR}")


if __name__ == "__main__":
    main()
