"""Run the benchmarks in one go: ``python -m bench.run_all`` (what ``make bench`` calls).

By default every benchmark runs its cheap path (a tiny or single model, a few seconds of audio, a
few items) and writes its JSON under ``bench/results/quick/``, so the committed full results under
``bench/results/`` are never overwritten by a quick run; the whole default run takes a few minutes
on a 2-core machine. ``--full`` runs each benchmark with its own defaults and writes the committed
result files (hours: the comparisons score hundreds of items).

Benchmarks that need data this machine lacks (``../shared/data`` for the mini corpus, the corpus
cache ``data_cache/corpora`` or a fixed test set under ``data_cache/``) are skipped with the reason. Each benchmark runs in its own
subprocess (one failure does not stop the others); the summary table lists what ran, what was
skipped and what failed, and the exit code is 1 if anything failed.

    .venv/bin/python -m bench.run_all [--full] [--only NAME ...] [--list] [--dry-run]
"""
from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK_RESULTS = ROOT / "bench" / "results" / "quick"
SHARED_DATA = ROOT.parent / "shared" / "data"
ENHANCEMENT_TEST_SET = ROOT / "data_cache" / "fixed" / "enhancement_16k" / "test"
CORPUS_CACHE = ROOT / "data_cache" / "corpora"
SEPARATION_TESTS = "data_cache/fixed/realworld_sep_16k"  # relative: the benchmarks run from ROOT


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """One benchmark module with its quick and full command-line arguments."""

    name: str
    quick: tuple[str, ...]
    full: tuple[str, ...] = ()
    needs: Path | None = None  # a folder that must exist, else the benchmark is skipped

    def arguments(self, full: bool, out_dir: Path) -> list[str]:
        """Arguments of ``python -m bench.<name>``; quick outputs go to ``out_dir``."""
        if full:
            return list(self.full)
        return [argument.replace("{out}", str(out_dir)) for argument in self.quick]

    def missing(self) -> str | None:
        """Why the benchmark cannot run here, or None."""
        if self.needs is not None and not self.needs.exists():
            return f"needs {self.needs} (not on this machine)"
        return None


BENCHMARKS = (
    Benchmark(
        "long_file",
        ("--minutes", "0.25", "--preset", "tiny", "--results", "{out}/long_file.json"),
    ),
    Benchmark(
        "realtime_bench",
        ("--models", "conv_tasnet:enhance_causal_16k", "--seconds", "2", "--torch-steps", "100", "--repeats", "1",
         "--out", "{out}/realtime.json"),
    ),
    Benchmark(
        "aec_train_step",
        ("--preset", "tiny", "--batch-size", "1", "--seconds", "0.5", "--steps", "2", "--warmup", "1",
         "--out", "{out}/aec_train_step.json"),
    ),
    Benchmark("oracle_masks", ("--out", "{out}/oracle_masks.json"), needs=ENHANCEMENT_TEST_SET),
    Benchmark(
        "compare_enhancers",
        ("--items", "5", "--real", "0", "--no-dnsmos", "--out", "{out}/compare_enhancers.json"),
        needs=SHARED_DATA,
    ),
    Benchmark(
        "compare_realworld",
        ("--items", "6", "--real", "0", "--out", "{out}/compare_realworld.json"),
        needs=CORPUS_CACHE,
    ),
    Benchmark("transparency", ("--items", "2", "--seconds", "2", "--out", "{out}/transparency.json"), needs=CORPUS_CACHE),
    Benchmark(
        "compare_separators",
        ("--test-set", f"{SEPARATION_TESTS}/test", "--limit", "2", "--rss-seconds", "5",
         "--out", "{out}/compare_separators.json"),
        ("--test-set", f"{SEPARATION_TESTS}/test", f"{SEPARATION_TESTS}/test_telephone",
         f"{SEPARATION_TESTS}/test_highpass300"),
        needs=ROOT / SEPARATION_TESTS / "test",
    ),
    Benchmark(
        "aec_headroom",
        ("--corpus-root", "data_cache/corpora", "--items", "1", "--cache-root", "{out}/cache",
         "--out", "{out}/aec_headroom.json"),
        ("--corpus-root", "data_cache/corpora", "--floor-cache", "data_cache/speech_floor.json"),
        needs=CORPUS_CACHE,
    ),
    Benchmark(
        "aec_delay_changes",
        ("--corpus-root", "data_cache/corpora", "--clips", "1", "--conditions", "jump -30 ms",
         "--out", "{out}/aec_delay_changes.json"),
        ("--corpus-root", "data_cache/corpora", "--clips", "2"),
        needs=CORPUS_CACHE,
    ),
    Benchmark(
        "compare_aec",
        ("--model", "untrained:tiny", "--items", "2", "--no-aecmos", "--out", "{out}/compare_aec.json"),
        needs=SHARED_DATA,
    ),
)


def command(benchmark: Benchmark, full: bool, out_dir: Path) -> list[str]:
    """The subprocess command line of ``benchmark``."""
    return [sys.executable, "-m", f"bench.{benchmark.name}", *benchmark.arguments(full, out_dir)]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected benchmarks; returns 1 if any failed."""
    names = [benchmark.name for benchmark in BENCHMARKS]
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true",
                        help="each benchmark's own defaults; overwrites the committed results (hours)")
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME", help=f"run only these: {', '.join(names)}")
    parser.add_argument("--out-dir", type=Path, default=QUICK_RESULTS, help="where quick runs write their JSON")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    args = parser.parse_args(argv)
    selected = [benchmark for benchmark in BENCHMARKS if not args.only or benchmark.name in args.only]
    if args.list:
        for benchmark in selected:
            print(benchmark.name)
        return 0
    rows = []
    for benchmark in selected:
        line = command(benchmark, args.full, args.out_dir)
        reason = benchmark.missing()
        if args.dry_run:
            print(" ".join(line) + (f"  # skipped: {reason}" if reason else ""))
            continue
        if reason:
            rows.append((benchmark.name, "skipped", 0.0, reason))
            continue
        print(f"## {benchmark.name}\n", flush=True)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        code = subprocess.run(line, cwd=ROOT).returncode
        rows.append((benchmark.name, "ok" if code == 0 else "FAILED", time.perf_counter() - started,
                     "" if code == 0 else f"exit code {code}"))
        print(flush=True)
    if args.dry_run:
        return 0
    print("| benchmark | result | wall (s) | note |\n|---|---|---:|---|")
    for name, result, seconds, note in rows:
        print(f"| {name} | {result} | {seconds:.1f} | {note} |")
    return 1 if any(result == "FAILED" for _, result, _, _ in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
