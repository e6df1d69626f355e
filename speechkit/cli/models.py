"""``speechkit models``: list the registered architectures and presets."""
from __future__ import annotations

import argparse
import json

from .. import models


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list model architectures and presets")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = models.describe_presets()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    name_width = max([len("model"), *(len(row["name"]) for row in rows)])
    preset_width = max([len("preset"), *(len(row["preset"]) for row in rows)])
    task_width = max([len("task"), *(len(str(row["task"])) for row in rows)])
    header = (
        f"{'model':<{name_width}} {'preset':<{preset_width}} {'task':<{task_width}} {'rate':>6} "
        f"{'params':>10} {'latency':>10} causal"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        latency = row["algorithmic_latency_ms"]
        latency_text = "offline" if latency is None else f"{latency:.2f} ms"
        print(
            f"{row['name']:<{name_width}} {row['preset']:<{preset_width}} {str(row['task']):<{task_width}} {row['sample_rate']:>6} "
            f"{row['parameters'] / 1e6:>9.3f}M {latency_text:>10} {'yes' if row['causal'] else 'no'}"
        )
    return 0
