"""Release a run's best weights and its logs so that training can continue on another machine.

    python -m recipes.release runs/NAME [--to releases/NAME] [--force]

CPU training here outlives its machine: ``runs/`` is not kept, so at the end of every session the
best weights of an unfinished run are released (float16, a few MB, committed), and the next run
continues from them with ``init.checkpoint=releases/NAME/best.safetensors``. The release folder
holds:

* ``best.safetensors``: the run's exported best weights (EMA when the run keeps one), stored as
  float16, with the run's provenance, whose ``lineage`` lists the stages before it
  (``recipes.training.lineage``);
* ``train_log.csv`` and ``valid_log.csv``: the whole history in total steps and total training
  seconds: the earlier stages' rows up to the weights this run continued from (from the release
  folder itself, or, for a fine-tune released under a new name, from its initial weights' release
  folder), then this run's rows shifted by those totals; a column only some stages logged is empty
  in the others. ``bench.compare_separators --runs releases/NAME`` reads them like a run
  folder.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

from speechkit._files import publish, temporary_sibling
from speechkit.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from speechkit.errors import ConfigError

from recipes._cli import report
from recipes.training.lineage import stage_total

LOGS = ("train_log.csv", "valid_log.csv")


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    tmp_name = temporary_sibling(path)
    with open(tmp_name, "w", newline="") as handle:
        fields = list(dict.fromkeys(key for row in rows for key in row))  # stages may log other columns
        writer = csv.DictWriter(handle, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    publish(tmp_name, path)


def merged_log(earlier: list[dict[str, str]], current: list[dict[str, str]], offset_steps: int,
               offset_seconds: float) -> list[dict[str, str]]:
    """The earlier stages' rows up to ``offset_steps``, then ``current`` shifted by the offsets."""
    kept = [row for row in earlier if int(row["step"]) <= offset_steps]
    shifted = []
    for row in current:
        row = dict(row, step=str(int(row["step"]) + offset_steps))
        if "train_seconds" in row:
            row["train_seconds"] = f"{float(row['train_seconds']) + offset_seconds:.2f}"
        shifted.append(row)
    return kept + shifted


def earlier_rows(name: str, target: Path, provenance: dict[str, Any], offset_steps: int) -> list[dict[str, str]]:
    """The rows of log ``name`` of the stages before a continued run (steps up to ``offset_steps``):
    from the release folder itself (the run continued its own release), else from the folder of
    its initial weights when that holds released logs (a fine-tune released under a new name)."""
    folders = [target]
    if provenance.get("initial_weights"):
        folders.append(Path(str(provenance["initial_weights"])).parent)
    for folder in folders:
        rows = [row for row in _read_rows(folder / name) if int(row["step"]) <= offset_steps]
        if rows:
            return rows
    return []


def release_run(run_dir: Path, target: Path, force: bool = False) -> Path:
    """Write ``run_dir``'s best weights (float16) and its logs, in total steps and hours, to ``target``.

    Raises:
        ConfigError: the run has no exported best weights yet, the release exists and ``force`` is
            off, or an earlier stage's steps or hours are unknown.
    """
    best = run_dir / "best.safetensors"
    if not best.is_file():
        raise ConfigError(f"{run_dir} has no best.safetensors yet (the first validation writes it)")
    weights = target / "best.safetensors"
    if weights.exists() and not force:
        raise ConfigError(f"{weights} exists; pass --force to replace the release")
    provenance = read_metadata(best).get("provenance") or {}
    lineage = list(provenance.get("lineage") or [])
    steps, hours = stage_total(lineage, "steps_trained"), stage_total(lineage, "train_hours")
    if steps is None or hours is None:
        raise ConfigError(f"{best}: an earlier training stage has unknown steps or hours; its logs cannot be merged")
    if not lineage and any((target / name).exists() for name in LOGS) and not force:
        raise ConfigError(f"{run_dir} started from scratch, and {target} holds another history; pass --force")
    offset_steps, offset_seconds = int(steps), float(hours) * 3600.0
    target.mkdir(parents=True, exist_ok=True)
    for name in LOGS:
        earlier = earlier_rows(name, target, provenance, offset_steps) if lineage else []
        rows = merged_log(earlier, _read_rows(run_dir / name), offset_steps, offset_seconds)
        if rows:
            _write_rows(target / name, rows)
    return save_checkpoint(load_checkpoint(best), weights, provenance=provenance, overwrite=True,
                           storage_dtype="float16")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a training run folder (runs/NAME)")
    parser.add_argument("--to", type=Path, default=None, help="the release folder (default: releases/NAME)")
    parser.add_argument("--force", action="store_true", help="replace an existing release")
    args = parser.parse_args(argv)
    target = args.to if args.to is not None else Path("releases") / args.run_dir.name

    def release() -> str:
        path = release_run(args.run_dir, target, args.force)
        return f"released {path} ({path.stat().st_size / 2**20:.1f} MiB) with the run's logs in {target}"

    return report("release", release)


if __name__ == "__main__":
    sys.exit(main())
