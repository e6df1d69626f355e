"""Break per-file evaluation scores down by a property of the fixed test set's items.

``speechkit eval --model M --test-set DIR --csv scores.csv`` writes one row per item; the fixed
set's ``items.jsonl`` holds how each item was made (noise file, SNR, reverberation, overlap, ...).
This joins the two and prints the mean of each metric per group::

    python -m recipes.breakdown DIR scores.csv --by noise_id --pattern "noise/([a-z]+)/"
    python -m recipes.breakdown DIR scores.csv --by reverb --pattern "rt60=([0-9.]+)" --bins 0.2 0.4 0.7
    python -m recipes.breakdown DIR scores.csv --by snr_db --bins -5 5 15

``--pattern`` takes the first group of a regular expression from a text field (items that do not
match form the group of their whole value); ``--bins`` puts numbers into ``[edge_i, edge_i+1)``.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from speechkit.errors import ConfigError, SpeechkitError


def group_key(value: Any, pattern: str | None = None, bins: list[float] | None = None) -> str:
    """The group of one item's ``value``: the regex capture of ``pattern`` and/or the bin in ``bins``."""
    if pattern is not None:
        match = re.search(pattern, str(value))
        if match is None:
            return str(value) or "(none)"
        value = match.group(1) if match.groups() else match.group(0)
    if bins is None:
        return str(value) or "(none)"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value) or "(none)"
    if math.isinf(number) or math.isnan(number):
        return f"{number}"
    for low, high in zip(bins[:-1], bins[1:]):
        if low <= number < high:
            return f"[{low:g}, {high:g})"
    return f"< {bins[0]:g}" if number < bins[0] else f">= {bins[-1]:g}"


def breakdown(
    test_set: Path, scores_csv: Path, field: str, pattern: str | None = None, bins: list[float] | None = None
) -> dict[str, dict[str, float]]:
    """``{group: {"files": n, metric: mean, ...}}`` over the rows of ``scores_csv`` (sorted by group)."""
    items_path = Path(test_set) / "items.jsonl"
    if not items_path.is_file():
        raise ConfigError(f"{test_set} is not a fixed set (no items.jsonl)")
    meta = {}
    for line in items_path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        meta[item["name"]] = item.get("meta", {})
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    with open(scores_csv, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            name = row.pop("name")
            if name not in meta:
                raise ConfigError(f"{scores_csv}: item {name!r} is not in {test_set}")
            if field not in meta[name]:
                raise ConfigError(f"items of {test_set} have no field {field!r} (they have {', '.join(sorted(meta[name]))})")
            scores = {key: float(value) for key, value in row.items() if value not in ("", None)}
            groups[group_key(meta[name][field], pattern, bins)].append(scores)
    if not groups:
        raise ConfigError(f"{scores_csv} holds no rows")
    summary = {}
    for key in sorted(groups):
        rows = groups[key]
        metrics = sorted({metric for row in rows for metric in row})
        summary[key] = {"files": float(len(rows))}
        for metric in metrics:
            values = [row[metric] for row in rows if metric in row and math.isfinite(row[metric])]
            summary[key][metric] = sum(values) / len(values) if values else float("nan")
    return summary


def format_table(summary: dict[str, dict[str, float]], field: str) -> str:
    """A Markdown table: one row per group, one column per metric."""
    metrics = sorted({metric for scores in summary.values() for metric in scores if metric != "files"})
    lines = [f"| {field} | files | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 2) + "|"]
    for key, scores in summary.items():
        values = " | ".join(f"{scores.get(metric, float('nan')):.3f}" for metric in metrics)
        lines.append(f"| {key} | {int(scores['files'])} | {values} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("test_set", type=Path, help="fixed-set folder (items.jsonl)")
    parser.add_argument("scores", type=Path, help="per-file CSV written by speechkit eval --csv")
    parser.add_argument("--by", required=True, help="item metadata field to group by")
    parser.add_argument("--pattern", help="regular expression; its first group is the group key")
    parser.add_argument("--bins", type=float, nargs="+", help="bin edges for numeric keys")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        summary = breakdown(args.test_set, args.scores, args.by, args.pattern, args.bins)
    except (SpeechkitError, OSError, re.error) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2) if args.json else format_table(summary, args.by))
    return 0


if __name__ == "__main__":
    sys.exit(main())
