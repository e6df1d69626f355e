"""The run directory's CSV logs (``train_log.csv``, ``valid_log.csv``) and optional TensorBoard."""
from __future__ import annotations

import csv
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: what a training run writes into its run directory, besides its export (named by the config)
RUN_FILES = ("train_log.csv", "valid_log.csv", "last.pt", "best_model.pt", "config.json", "tensorboard")
RUN_FILE_PATTERNS = ("step_*.pt",)


def set_aside_earlier_run(run_dir: Path, export_name: str) -> Path | None:
    """Move the files of an earlier run out of ``run_dir`` into ``run_dir/earlier/<UTC time>/``.

    For a run that starts from step 0 (no ``--resume``) in a folder that holds another run, e.g. a
    new stage from ``init.checkpoint``: it would otherwise append its rows, whose steps start again
    at 1, to that run's logs (and a later ``--resume`` truncation would drop the earlier rows past
    its step), and leave the earlier best weights in place until its own first validation. Nothing
    is deleted. ``export_name``: the export's file name in ``run_dir`` ("" for none there). Returns
    the folder the files went to, or None when there were none.
    """
    run_dir = Path(run_dir)
    names = (*RUN_FILES, export_name) if export_name else RUN_FILES
    found = [run_dir / name for name in names if (run_dir / name).exists()]
    found += [path for pattern in RUN_FILE_PATTERNS for path in sorted(run_dir.glob(pattern))]
    if not found:
        return None
    target = run_dir / "earlier" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    suffix = 1
    while target.exists():  # two fresh starts within one second
        target = target.with_name(f"{target.name.split('.')[0]}.{suffix}")
        suffix += 1
    target.mkdir(parents=True)
    for path in dict.fromkeys(found):  # the export may be named like a run file
        os.replace(path, target / path.name)
    return target


class RunLog:
    """Appends rows to CSV files in ``run_dir`` (on the main process only), mirrored to TensorBoard
    when :meth:`open_tensorboard` found the package."""

    def __init__(self, run_dir: Path, is_main: bool) -> None:
        self.run_dir = Path(run_dir)
        self.is_main = is_main
        self.tensorboard: Any = None

    def row(self, name: str, row: Mapping[str, Any]) -> None:
        """Append ``row`` to ``run_dir/name`` (header written with the first row)."""
        if not self.is_main:
            return
        path = self.run_dir / name
        new = not path.exists()
        fields = list(row)
        if not new:  # a resume may log other columns: new ones join the header, missing ones stay empty
            with path.open(newline="") as handle:
                header = next(csv.reader(handle), [])
            fields = [*header, *(key for key in row if key not in header)]
            if fields != header:
                self._rewrite_with_columns(path, fields)
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, restval="")
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(f"{name.split('_')[0]}/{key}", value, row["step"])

    @staticmethod
    def _rewrite_with_columns(path: Path, fields: list[str]) -> None:
        """Rewrite ``path`` under the header ``fields`` (earlier rows leave new columns empty)."""
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        partial = path.with_name(path.name + ".partial")
        with partial.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, restval="")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(partial, path)  # a crash leaves the old log whole

    def truncate(self, step: int, names: tuple[str, ...] = ("train_log.csv", "valid_log.csv")) -> None:
        """Drop rows logged after ``step`` (a resumed run produces them again)."""
        if not self.is_main:
            return
        for name in names:
            path = self.run_dir / name
            if not path.exists():
                continue
            with path.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
            if not rows:
                continue
            kept = [row for row in rows if int(row["step"]) <= step]
            with path.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(kept)

    def open_tensorboard(self) -> None:
        """Start mirroring rows to ``run_dir/tensorboard`` when TensorBoard is installed."""
        if not self.is_main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.tensorboard = SummaryWriter(str(self.run_dir / "tensorboard"))

    def close(self) -> None:
        """Close TensorBoard's writer."""
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
