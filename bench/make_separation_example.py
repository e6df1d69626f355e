"""Build the bundled two-speaker example speechkit/assets/examples/two_speakers_{mix,s1,s2}.flac.

The first mixture of the held-out separation test set (``recipes.prepare_data fixed --task
separation --split test --sample-rate 8000``) whose overlap ratio is at least 0.9: real speech of two
test-split speakers, 8 kHz, never seen in training. The references are written next to the mixture
so tests and users can score a separator on real audio. The attribution is appended to
``ATTRIBUTION.md``. Deterministic; needs the fixed set and its manifest; not used at runtime.

    .venv/bin/python -m bench.make_separation_example [--fixed data_cache/fixed/separation_8k/test] [--force]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "speechkit" / "assets" / "examples"
MIN_OVERLAP = 0.9
NAMES = ("two_speakers_mix.flac", "two_speakers_s1.flac", "two_speakers_s2.flac")
SECTION = "# Two-speaker example"


def pick(fixed: Path) -> dict:
    """The first item of the fixed set with an overlap ratio of at least :data:`MIN_OVERLAP`."""
    with open(fixed / "items.jsonl", encoding="utf-8") as handle:
        for line in handle:
            item = json.loads(line)
            if item["meta"]["source_count"] == 2 and item["meta"]["overlap_ratio"] >= MIN_OVERLAP:
                return item
    raise SystemExit(f"no item with overlap >= {MIN_OVERLAP} in {fixed}")


def sources_of(manifest: Path, speech_ids: list[str]) -> dict[str, dict]:
    """Manifest entries (license, provenance, source files) of the utterances in the mixture."""
    found = {}
    with open(manifest, encoding="utf-8") as handle:
        for line in handle:
            entry = json.loads(line)
            if entry["id"] in speech_ids:
                found[entry["id"]] = entry
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixed", type=Path, default=ROOT / "data_cache" / "fixed" / "separation_8k" / "test")
    parser.add_argument("--manifest", type=Path, default=ROOT / "data_cache" / "minicorpus" / "manifest_8k.jsonl")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    targets_exist = [OUT_DIR / name for name in NAMES if (OUT_DIR / name).exists()]
    if targets_exist and not args.force:
        raise SystemExit(f"{targets_exist[0]} exists (use --force)")
    item = pick(args.fixed)
    mixture, rate = soundfile.read(args.fixed / item["tensors"]["mixture"]["file"], dtype="float32", always_2d=True)
    targets, _ = soundfile.read(args.fixed / item["tensors"]["targets"]["file"], dtype="float32", always_2d=True)
    mixture = mixture[:, 0]  # [T]
    peak = max(float(np.abs(mixture).max()), float(np.abs(targets).max()))
    scale = 0.9 / peak if peak > 0.9 else 1.0  # keep FLAC's 16-bit range; same gain for all three
    for name, audio in zip(NAMES, (mixture, targets[:, 0], targets[:, 1])):
        soundfile.write(OUT_DIR / name, scale * audio, rate, subtype="PCM_16")
    speech_ids = item["meta"]["speech_ids"].split("|")
    entries = sources_of(args.manifest, speech_ids)
    lines = [
        SECTION,
        "",
        f"`two_speakers_mix.flac` ({rate // 1000} kHz mono, {mixture.shape[0] / rate:.2f} s) is the sum of "
        "`two_speakers_s1.flac` and `two_speakers_s2.flac`: item "
        f"{item['name']} of speechkit's held-out separation test set (overlap {item['meta']['overlap_ratio']:.2f}), "
        "built by `bench/make_separation_example.py`. Both speakers belong to the test split (never used for training).",
        "",
    ]
    for index, speech_id in enumerate(speech_ids, start=1):
        entry = entries.get(speech_id, {})
        files = ", ".join(f"`{Path(source).relative_to(Path(source).parents[2])}`" for source in entry.get("sources", []))
        lines.append(
            f"- s{index}: {entry.get('provenance', speech_id)}, license {entry.get('license', 'unknown')}; "
            f"words concatenated and resampled to 8 kHz: {files}"
        )
    attribution = OUT_DIR / "ATTRIBUTION.md"
    text = attribution.read_text(encoding="utf-8").split(SECTION)[0].rstrip() + "\n\n" + "\n".join(lines) + "\n"
    attribution.write_text(text, encoding="utf-8")
    print(f"wrote {', '.join(NAMES)} from item {item['name']} to {OUT_DIR}")


if __name__ == "__main__":
    main()
