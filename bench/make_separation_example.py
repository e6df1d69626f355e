"""Build a bundled two-speaker example speechkit/assets/examples/<prefix>_{mix,s1,s2}.flac.

The first mixture of a held-out separation test set whose overlap ratio is at least 0.9 (with
``--clean``: and without added noise or room): real speech of two test-split speakers, never seen
in training. The references are written next to the mixture so tests and users can score a
separator on real audio. The attribution goes into ``ATTRIBUTION.md`` (one section per example).
Deterministic; needs the fixed set and its manifest; not used at runtime.

    # 8 kHz isolated words (recipes.prepare_data fixed --task separation --split test --sample-rate 8000)
    .venv/bin/python -m bench.make_separation_example [--force]
    # 16 kHz read sentences (recipes.train:fixed_realworld_separation, split test)
    .venv/bin/python -m bench.make_separation_example --fixed data_cache/fixed/realworld_sep_16k/test \
        --manifest data_cache/corpora/manifest.jsonl --prefix two_speakers_16k --clean
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
#: attribution section title of each example (by file prefix)
SECTIONS = {"two_speakers": "# Two-speaker example", "two_speakers_16k": "# Two-speaker sentence example (16 kHz)"}


def pick(fixed: Path, clean: bool = False) -> dict:
    """The first item of the fixed set with an overlap ratio of at least :data:`MIN_OVERLAP`.

    ``clean``: also without added noise and without a room (the device channel may be coloured).
    """
    with open(fixed / "items.jsonl", encoding="utf-8") as handle:
        for line in handle:
            item = json.loads(line)
            meta = item["meta"]
            if meta["source_count"] != 2 or meta["overlap_ratio"] < MIN_OVERLAP:
                continue
            if clean and (meta.get("noise_id") or meta.get("reverb")):
                continue
            return item
    raise SystemExit(f"no item with overlap >= {MIN_OVERLAP} in {fixed}")


def sources_of(manifest: Path, speech_ids: list[str]) -> dict[str, dict]:
    """Manifest entries (license, provenance, source files) of the utterances in the mixture.

    Reads the mini-corpus manifest (``id``) and the corpus-cache manifest (``path``) alike.
    """
    found = {}
    with open(manifest, encoding="utf-8") as handle:
        for line in handle:
            entry = json.loads(line)
            key = entry.get("id", entry.get("path"))
            if key in speech_ids:
                found[key] = entry
    return found


def describe_source(entry: dict, speech_id: str, rate: int) -> str:
    """One attribution line for an utterance of either manifest."""
    if "sources" in entry:  # mini corpus: words concatenated from Speech Commands files
        files = ", ".join(f"`{Path(source).relative_to(Path(source).parents[2])}`" for source in entry["sources"])
        return (f"{entry.get('provenance', speech_id)}, license {entry.get('license', 'unknown')}; "
                f"words concatenated and resampled to {rate // 1000} kHz: {files}")
    if "source_path" in entry:  # corpus cache: one read sentence
        return (f"{entry['corpus']} speaker {entry.get('speaker', '?')} (`{entry['source_path']}` of "
                f"{entry['source']}), license {entry['license']}; one read sentence, cut to the mixture's length")
    return f"{speech_id} (license unknown)"


def replace_section(text: str, section: str, lines: list[str]) -> str:
    """``text`` (a Markdown file of ``# `` sections) with ``section`` replaced by ``lines`` (or appended)."""
    blocks, current = [], []
    for line in text.splitlines():
        if line.startswith("# ") and current:
            blocks.append(current)
            current = []
        current.append(line)
    if current:
        blocks.append(current)
    kept = ["\n".join(block).rstrip() for block in blocks if block[0] != section]
    return "\n\n".join(kept + ["\n".join(lines)]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixed", type=Path, default=ROOT / "data_cache" / "fixed" / "separation_8k" / "test")
    parser.add_argument("--manifest", type=Path, default=ROOT / "data_cache" / "minicorpus" / "manifest_8k.jsonl")
    parser.add_argument("--prefix", default="two_speakers", choices=sorted(SECTIONS), help="file name prefix")
    parser.add_argument("--clean", action="store_true", help="pick an item without added noise or room")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    names = tuple(f"{args.prefix}_{part}.flac" for part in ("mix", "s1", "s2"))
    targets_exist = [OUT_DIR / name for name in names if (OUT_DIR / name).exists()]
    if targets_exist and not args.force:
        raise SystemExit(f"{targets_exist[0]} exists (use --force)")
    item = pick(args.fixed, args.clean)
    mixture, rate = soundfile.read(args.fixed / item["tensors"]["mixture"]["file"], dtype="float32", always_2d=True)
    targets, _ = soundfile.read(args.fixed / item["tensors"]["targets"]["file"], dtype="float32", always_2d=True)
    mixture = mixture[:, 0]  # [T]
    peak = max(float(np.abs(mixture).max()), float(np.abs(targets).max()))
    scale = 0.9 / peak if peak > 0.9 else 1.0  # keep FLAC's 16-bit range; same gain for all three
    for name, audio in zip(names, (mixture, targets[:, 0], targets[:, 1])):
        soundfile.write(OUT_DIR / name, scale * audio, rate, subtype="PCM_16")
    speech_ids = item["meta"]["speech_ids"].split("|")
    entries = sources_of(args.manifest, speech_ids)
    lines = [
        SECTIONS[args.prefix],
        "",
        f"`{names[0]}` ({rate // 1000} kHz mono, {mixture.shape[0] / rate:.2f} s) is the sum of "
        f"`{names[1]}` and `{names[2]}`: item "
        f"{item['name']} of speechkit's held-out separation test set (overlap {item['meta']['overlap_ratio']:.2f}), "
        "built by `bench/make_separation_example.py`. Both speakers belong to the test split (never used for training).",
        "",
    ]
    for index, speech_id in enumerate(speech_ids, start=1):
        lines.append(f"- s{index}: {describe_source(entries.get(speech_id, {}), speech_id, rate)}")
    attribution = OUT_DIR / "ATTRIBUTION.md"
    attribution.write_text(replace_section(attribution.read_text(encoding="utf-8"), SECTIONS[args.prefix], lines),
                           encoding="utf-8")
    print(f"wrote {', '.join(names)} from item {item['name']} to {OUT_DIR}")


if __name__ == "__main__":
    main()
