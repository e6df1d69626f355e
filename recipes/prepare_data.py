"""Build the offline mini corpus: fetch asterisk voices, write manifests, write fixed sets.

Examples (from the project root)::

    python -m recipes.prepare_data asterisk                 # apt-get download + dpkg-deb -x into data_cache/
    python -m recipes.prepare_data manifest                 # data_cache/minicorpus/manifest_{8k,16k}.jsonl
    python -m recipes.prepare_data manifest --materialize   # also write every utterance as WAV per rate
    python -m recipes.prepare_data fixed --task enhancement --split validation --count 200
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from recipes.data.fixedset import DEFAULT_SPLIT_SEEDS, TASKS, build_fixed_set
from recipes.data.minicorpus import (
    MiniCorpus,
    asterisk_root,
    default_cache_root,
    materialize_speech,
    split_summary,
    write_manifest,
)
from speechkit.errors import ConfigError, SpeechkitError

ASTERISK_PACKAGES = (
    "asterisk-core-sounds-en-wav", "asterisk-core-sounds-es-wav", "asterisk-core-sounds-fr-wav",
    "asterisk-core-sounds-it-wav", "asterisk-core-sounds-ru-wav", "asterisk-prompt-it-menardi-wav",
)


def fetch_asterisk(cache_root: Path) -> Path:
    """Download the asterisk voice packages with apt-get and extract them under ``cache_root/asterisk``."""
    target = asterisk_root(cache_root)
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise ConfigError("apt-get and dpkg-deb are needed to fetch the asterisk voices (Debian/Ubuntu only).")
    with tempfile.TemporaryDirectory() as download_dir:
        result = subprocess.run(["apt-get", "download", *ASTERISK_PACKAGES], cwd=download_dir,
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise ConfigError(f"apt-get download failed (try `apt-get update` first): {result.stderr.strip()}")
        for deb in sorted(Path(download_dir).glob("*.deb")):
            destination = target / deb.name.split("_")[0]
            destination.mkdir(parents=True, exist_ok=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(destination)], check=True)
    return target


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=None, help="shared data folder (default ../shared/data)")
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (default data_cache/)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("asterisk", help="download and extract the asterisk voice packages")
    manifest = commands.add_parser("manifest", help="write 8 kHz and 16 kHz manifests")
    manifest.add_argument("--out", type=Path, default=None, help="output folder (default <cache>/minicorpus)")
    manifest.add_argument("--materialize", action="store_true", help="also write utterances as WAV per rate")
    manifest.add_argument("--no-asterisk", action="store_true", help="leave the asterisk voices out")
    fixed = commands.add_parser("fixed", help="write a fixed validation or test set")
    fixed.add_argument("--task", choices=TASKS, required=True)
    fixed.add_argument("--split", choices=tuple(DEFAULT_SPLIT_SEEDS), required=True)
    fixed.add_argument("--count", type=int, default=200)
    fixed.add_argument("--seed", type=int, default=None, help="default: a constant per split")
    fixed.add_argument("--sample-rate", type=int, default=16000)
    fixed.add_argument("--segment-seconds", type=float, default=4.0)
    fixed.add_argument("--speakers", type=int, nargs="+", default=[2], help="speaker counts (separation)")
    fixed.add_argument("--manifest", type=Path, default=None, help="use this manifest instead of scanning")
    fixed.add_argument("--out", type=Path, default=None, help="default <cache>/fixed/<task>_<rate>/<split>")
    fixed.add_argument("--force", action="store_true", help="replace an existing fixed set")
    fixed.add_argument("--uniform-noise", action="store_true",
                       help="draw every noise file equally often (default: by duration)")
    args = parser.parse_args(argv)
    cache = args.cache or default_cache_root()
    try:
        if args.command == "asterisk":
            print(f"asterisk voices extracted under {fetch_asterisk(cache)}")
            return 0
        if args.command == "manifest":
            corpus = MiniCorpus.scan(args.data_root, cache, include_asterisk=not args.no_asterisk)
            for message in corpus.missing:
                print(f"missing: {message}", file=sys.stderr)
            out = args.out or cache / "minicorpus"
            for rate in (8000, 16000):
                entries = corpus.manifest(rate)
                if args.materialize:
                    entries = materialize_speech(entries, out / f"{rate // 1000}k")
                path = out / f"manifest_{rate // 1000}k.jsonl"
                write_manifest(entries, path)
                print(f"wrote {path} ({len(entries)} entries)")
            print(json.dumps(split_summary(corpus.entries), indent=2, sort_keys=True))
            return 0
        corpus = MiniCorpus.from_manifest(args.manifest) if args.manifest else MiniCorpus.scan(args.data_root, cache)
        out = args.out or cache / "fixed" / f"{args.task}_{args.sample_rate // 1000}k" / args.split
        path = build_fixed_set(args.task, args.split, out, args.count, corpus, args.seed, args.sample_rate,
                               args.segment_seconds, tuple(args.speakers), args.force, args.uniform_noise)
        print(f"wrote {args.count} {args.task} items to {path}")
        return 0
    except SpeechkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
