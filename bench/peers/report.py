"""Report plumbing shared by the comparison benchmarks (``bench/compare_*.py``, ``bench/transparency.py``).

Means that skip missing values, table cells, the machine / package-version / command header of the
JSON report, the facts every system row carries, the Markdown footer (skipped systems and notes)
and writing ``<out>`` (JSON) next to ``<out>.md`` (Markdown).
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from .base import Enhancer


def finite_mean(values: Sequence[float | None]) -> float:
    """Mean of the finite values (NaN if none)."""
    array = np.asarray([value for value in values if value is not None], dtype=np.float64)
    array = array[np.isfinite(array)]
    return float(array.mean()) if array.size else float("nan")


def format_cell(value: Any, digits: int = 2) -> str:
    """A table cell: ``value`` with ``digits`` decimals, ``"n/a"`` for None and ``"-"`` for NaN/inf."""
    if value is None:
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def process_cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (difference two calls to time a step)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies inside it (reports stay machine-neutral)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def machine_info() -> dict[str, Any]:
    """CPU model, core count and platform."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def package_versions(packages: Sequence[str]) -> dict[str, str | None]:
    """Installed versions of ``packages`` (None: not installed)."""
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions


def system_facts(system: Enhancer) -> dict[str, Any]:
    """Native rate, block size and providing package (with its version) of one system under test."""
    return {
        "native_rate": system.native_rate,
        "block_size": system.block_size,
        "package": system.package,
        "package_version": system.version(),
    }


def report_header(benchmark: str, argv: Sequence[str] | None, packages: Sequence[str]) -> dict[str, Any]:
    """The first keys of a benchmark's JSON report: name, UTC date, command, machine, threads, versions."""
    import torch

    return {
        "benchmark": benchmark,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([f"python -m bench.{benchmark}", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(),
        "threads": torch.get_num_threads(),
        "versions": package_versions(packages),
    }


TRAINING_HOURS_NOTE = (
    "Training hours: the trainer's wall clock (`train_seconds`), including data loading and validation; runs "
    "that shared the machine with other jobs are slower per step than alone."
)


def training_facts(provenance: dict[str, Any]) -> dict[str, Any]:
    """Steps and hours behind a checkpoint's weights: every stage's (``total_*``) when it continued
    earlier training (a fine-tune or a resumed release), else its own run's."""
    return {"steps_trained": provenance.get("total_steps", provenance.get("steps_trained")),
            "train_hours": provenance.get("total_train_hours", provenance.get("train_hours"))}


def title_lines(report: dict[str, Any], title: str) -> list[str]:
    """Markdown header lines: ``# title (date)``, a blank line and the machine line."""
    machine = report["machine"]
    return [
        f"# {title} ({report['date']})",
        "",
        f"Machine: {machine['cpu']} ({machine['cores']} cores), {machine['platform']}; one thread per system.",
    ]


def skipped_and_notes_lines(report: dict[str, Any]) -> list[str]:
    """Markdown footer lines: the skipped systems (with reasons), if any, then one line per note."""
    lines: list[str] = []
    if report["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"{name}: {reason}" for name, reason in report["skipped"].items())]
    lines += ["", *[f"Note: {note}" for note in report["notes"]]]
    return lines


def finish_report(
    benchmark: str,
    argv: Sequence[str] | None,
    packages: Sequence[str],
    started: float,
    markdown_report: Callable[[dict[str, Any]], str],
    out: Path,
    **sections: Any,
) -> int:
    """Assemble a benchmark's report (header, ``sections`` in order, ``elapsed_seconds`` since
    ``started``), write it with :func:`write_report` and return the exit code 0."""
    report = {
        **report_header(benchmark, argv, packages),
        **sections,
        "elapsed_seconds": time.perf_counter() - started,
    }
    write_report(report, markdown_report(report), out)
    return 0


def write_report(report: dict[str, Any], markdown: str, out: Path) -> None:
    """Write ``report`` as JSON to ``out`` and ``markdown`` next to it (``.md``), then print the table."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=float), encoding="utf-8")
    out.with_suffix(".md").write_text(markdown, encoding="utf-8")
    print(markdown)
    print(f"wrote {out} and {out.with_suffix('.md')}")


__all__ = [
    "display_path",
    "finish_report",
    "finite_mean",
    "format_cell",
    "machine_info",
    "package_versions",
    "process_cpu_seconds",
    "report_header",
    "skipped_and_notes_lines",
    "system_facts",
    "title_lines",
    "write_report",
]
