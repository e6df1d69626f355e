"""The run directory's CSV logs (``train_log.csv``, ``valid_log.csv``) and optional TensorBoard."""
from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


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
