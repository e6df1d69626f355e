"""How far can a separator whose outputs sum to the mixture go on a fixed separation set?

Some separators are mixture-consistent by construction: TIGER shifts its complex masks so that they
sum to one over the talkers, so its estimates add up to the mixture, noise and late reverberation
included. Whatever the mixture holds beyond the targets (the residual ``r = y - sum_k s_k``) must
then end up in the outputs. The least-squares best consistent estimates are ``s_k + r / K`` (the
projection of the targets onto estimates that sum to ``y``; any mask network can express them), and
their SI-SDR is the ceiling this bench reports beside the input's: a model of that kind that stays
far below it is limited by training, not by the constraint. A separator without the constraint
(Conv-TasNet's masks on a learned basis are free) has no such ceiling.

Reads a fixed set (``index.json`` + ``items.jsonl`` with ``mixture`` and ``targets`` [K, 1, T]) as
``speechkit eval --test-set`` does:

    .venv/bin/python -m bench.separation_bounds --test-set data_cache/fixed/realworld_sep_16k_noisy_reverb/validation \\
        --limit 100 --out bench/results/separation_bounds_noisy_reverb.json
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.peers.report import finite_mean, format_cell, report_header, write_report
from speechkit.cli.eval import fixed_set_items, load_fixed_tensor
from speechkit.metrics import si_sdr

#: an item whose residual energy is below this fraction of its targets' has no ceiling (left out)
CLEAN_RATIO = 1e-8


def consistent_oracle(mixture: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The least-squares best estimates ``[K, T]`` of ``targets`` ``[K, T]`` that sum to ``mixture`` ``[T]``."""
    residual = mixture - targets.sum(axis=0)  # [T]: noise, late reverberation, anything not a target
    return targets + residual[None] / targets.shape[0]


def score_set(test_set: Path, limit: int | None = None) -> dict[str, Any]:
    """Per-talker SI-SDR of the mixture and of the consistent oracle over the first ``limit`` items."""
    items, _ = fixed_set_items(test_set)
    rows, clean = [], 0
    for entry in items[:limit]:
        mixture = load_fixed_tensor(test_set, entry["mixture"]).reshape(-1).astype(np.float64)  # [T]
        targets = load_fixed_tensor(test_set, entry["targets"]).astype(np.float64)  # [K, 1, T]
        targets = targets.reshape(targets.shape[0], -1)  # -> [K, T]
        oracle = consistent_oracle(mixture, targets)
        if np.sum((oracle - targets) ** 2) <= CLEAN_RATIO * np.sum(targets ** 2):  # nothing to share: no ceiling
            clean += 1
            continue
        for talker, target in enumerate(targets):
            rows.append({"name": entry["name"], "talker": talker,
                         "input_si_sdr": float(si_sdr(mixture, target)),
                         "oracle_si_sdr": float(si_sdr(oracle[talker], target)),
                         "reverb": entry["meta"].get("reverb", ""), "snr_db": entry["meta"].get("snr_db")})
    inputs = [row["input_si_sdr"] for row in rows]
    oracles = [row["oracle_si_sdr"] for row in rows]
    return {"items": len({row["name"] for row in rows}), "items_without_residual": clean, "rows": rows,
            "input_si_sdr": finite_mean(inputs), "oracle_si_sdr": finite_mean(oracles),
            "oracle_si_sdri": finite_mean([o - i for o, i in zip(oracles, inputs)])}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test-set", type=Path, nargs="+", required=True, help="fixed separation set folders")
    parser.add_argument("--limit", type=int, default=None, help="first N items of every set")
    parser.add_argument("--out", type=Path, required=True, help="JSON output (the Markdown goes next to it)")
    args = parser.parse_args(argv)
    missing = [str(path) for path in args.test_set if not (path / "items.jsonl").is_file()]
    if missing:
        print(f"error: not a fixed set (no items.jsonl): {', '.join(missing)}", file=sys.stderr)
        return 2
    sets = {str(path): score_set(path, args.limit) for path in args.test_set}
    report = {**report_header("separation_bounds", argv, ["numpy", "speechkit"]), "test_sets": sets}
    lines = [f"Mixture-consistent separation ceiling ({report['date']}): the least-squares best estimates that "
             "sum to the mixture (target + residual / K), per talker", "",
             "| set | items | input SI-SDR dB | ceiling SI-SDR dB | ceiling SI-SDRi dB | items without residual (left out) |",
             "|---|---:|---:|---:|---:|---:|"]
    for path, result in sets.items():
        lines.append(f"| `{path}` | {result['items']} | {format_cell(result['input_si_sdr'])} | "
                     f"{format_cell(result['oracle_si_sdr'])} | {format_cell(result['oracle_si_sdri'])} | "
                     f"{result['items_without_residual']} |")
    write_report(report, "\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
