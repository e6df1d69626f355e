"""Separators side by side: held-out quality, cost, and validation at equal training wall-clock.

For each model (a bundled name or a checkpoint path, optionally with inference options after ``#``,
e.g. ``tiger.safetensors#iterations=2``; default: the bundled 16 kHz separator):

* held-out quality on each ``--test-set`` (fixed-set folders: ``index.json`` + ``items.jsonl``):
  SI-SDRi, SDRi, PESQ-WB and STOI with the best speaker permutation per item, as ``speechkit eval``
  scores them, through the file pipeline (the model's declared chunking);
* cost: parameters, multiply-accumulates per second of audio (``bench.long_file.count_macs`` on
  ``--mac-seconds`` of audio), the real-time factor of the first test set's inference on the
  benchmark's threads (wall and process CPU seconds per audio second), and the peak RSS of
  ``speechkit separate`` on a ``--rss-seconds`` synthetic file in a fresh subprocess;
* training: steps and hours recorded in the checkpoint's provenance.

``--runs DIR...`` adds a table of validation SI-SDRi against training wall-clock from the run
folders' ``valid_log.csv`` and ``train_log.csv`` (the trainer's ``train_seconds`` includes data
loading and validation), at every ``--hours`` mark the best value reached so far: the comparison
at equal training time on the same validation set. With ``--from-recipe-start`` a run that
continues other training (a fine-tune on other data) is counted from where its own recipe began:
hours and validations of the leading lineage stages trained with another recipe (read from the
provenance of the folder's ``best.safetensors``) are left out, so that fine-tunes from different
starting points compare on the time each spent on the new data.

    .venv/bin/python -m bench.compare_separators --models conv_tasnet_separate_2spk_16k runs/X/best.safetensors \\
        --test-set data_cache/fixed/realworld_sep_16k/test --runs runs/separate_stft_16k_real runs/X

Prints a Markdown table and writes ``bench/results/compare_separators.{json,md}`` (``--out``).
``--reuse OLD.json [MORE.json ...]`` copies every model row of earlier reports whose inputs are the same (the test
sets' item lists, ``--limit``, ``--mac-seconds``, ``--rss-seconds``, the metric list, and the SHA-256
of the model's weights file and its options) instead of scoring it again (``bench.reuse``); a copied
row whose peak RSS was measured the earlier way (``ru_maxrss``, see :mod:`bench.peak_memory`) gets
that one column measured again.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread unless the caller says otherwise, before torch loads

import argparse  # noqa: E402
import bisect  # noqa: E402
import csv  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from bench.peers.report import (  # noqa: E402
    TRAINING_HOURS_NOTE,
    display_path,
    finish_report,
    finite_mean,
    format_cell,
    process_cpu_seconds,
    title_lines,
    training_facts,
)
from bench import reuse  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ["si_sdr", "si_sdri", "sdr", "pesq_wb", "stoi"]


def score_test_set(processor: Any, test_set: Path, limit: int | None) -> dict[str, Any]:
    """Mean metrics of ``processor`` on one fixed test set, the input's SDR/PESQ/STOI, and the inference time."""
    from speechkit.cli.eval import fixed_set_items, load_fixed_tensor, score_item
    from speechkit.inference import process_array

    items, rate = fixed_set_items(test_set)
    rows, input_rows = [], []
    wall = cpu = audio_seconds = 0.0
    for item in items[:limit]:
        mixture = load_fixed_tensor(item["root"], item["mixture"])  # [C, T]
        reference = load_fixed_tensor(item["root"], item["targets"])  # [S, C, T]
        started, cpu_started = time.perf_counter(), process_cpu_seconds()
        estimate = process_array(processor.model, mixture.astype(np.float32), rate, device=processor.device)  # [S, C, T]
        wall += time.perf_counter() - started
        cpu += process_cpu_seconds() - cpu_started
        audio_seconds += mixture.shape[-1] / rate
        rows.append(score_item(estimate, reference, rate, mixture, METRICS, False))
        unprocessed = np.repeat(mixture[None], reference.shape[0], axis=0)  # the input as every speaker's estimate
        input_rows.append(score_item(unprocessed, reference, rate, None, ["sdr", "pesq_wb", "stoi"], False))
    summary = {name: finite_mean([row.get(name) for row in rows]) for name in METRICS}
    inputs = {name: finite_mean([row.get(name) for row in input_rows]) for name in ("sdr", "pesq_wb", "stoi")}
    summary["sdri"] = summary["sdr"] - inputs["sdr"]
    return {
        "test_set": str(test_set), "items": len(rows), "summary": summary, "input": inputs,
        "worse_than_input": int(sum(row["si_sdri"] < 0 for row in rows)),
        "audio_seconds": audio_seconds, "wall_seconds": wall, "cpu_seconds": cpu,
    }


#: how the peak RSS column is measured; rows of a report measured otherwise get it measured again on reuse
#: (earlier reports took the subprocess's ``ru_maxrss``, which includes this process's own peak)
RSS_METHOD = "child VmHWM"


def peak_rss_mib(checkpoint: Path, seconds: float) -> tuple[float, float]:
    """Peak RSS (MiB) and CPU seconds of ``speechkit separate`` (declared chunking) on a synthetic
    file, in a fresh process with this benchmark's ``OMP_NUM_THREADS``."""
    from bench.long_file import run_enhance, synthesize

    with tempfile.TemporaryDirectory() as folder:
        source, output = Path(folder) / "mixture.wav", Path(folder) / "separated"
        synthesize(source, seconds)
        _, rss, code, cpu = run_enhance(source, output, checkpoint, None, command_name="separate")
    return (rss if code == 0 else float("nan")), cpu


def load_model(model: str, mac_seconds: float) -> tuple[Path, Any, dict[str, Any], float]:
    """``(path, processor, provenance, MACs per second of audio)`` of a bundled name or checkpoint
    path, optionally with inference options after ``#`` (``MODEL#KEY=VALUE[,KEY=VALUE]``); the MACs
    are counted on ``mac_seconds`` of noise on every input channel of the model."""
    import torch

    from bench.long_file import count_macs
    from speechkit.api import load
    from speechkit.checkpoint import read_metadata
    from speechkit.models.spec import parse_option_strings
    from speechkit.pretrained import resolve_model

    name, _, option_text = model.partition("#")
    path = resolve_model(name)
    processor = load(str(path), options=parse_option_strings(option_text.split(",")) if option_text else None)
    network = processor.model
    x = 0.1 * torch.randn(1, network.num_input_channels, int(mac_seconds * network.sample_rate))
    macs = count_macs(lambda: network(x)) / mac_seconds
    return path, processor, read_metadata(path).get("provenance", {}), macs


def evaluate_model(model: str, test_sets: Sequence[Path], limit: int | None, mac_seconds: float,
                   rss_seconds: float | None) -> dict[str, Any]:
    """Quality on every test set, cost and training facts of one separator."""
    path, processor, provenance, macs = load_model(model, mac_seconds)
    network = processor.model
    results = [score_test_set(processor, test_set, limit) for test_set in test_sets]
    first = results[0]
    rss, rss_cpu = peak_rss_mib(path, rss_seconds) if rss_seconds else (float("nan"), float("nan"))
    return {
        "model": model, "path": display_path(path), "options": dict(network.options), "name": network.name, "preset": provenance.get("model_preset"),
        "parameters": sum(parameter.numel() for parameter in network.parameters()),
        "gmacs_per_second": macs / 1e9,
        "rtf": first["wall_seconds"] / first["audio_seconds"],
        "cpu_seconds_per_second": first["cpu_seconds"] / first["audio_seconds"],
        "peak_rss_mib": rss, "rss_audio_seconds": rss_seconds, "rss_cpu_seconds": rss_cpu, "rss_method": RSS_METHOD,
        **training_facts(provenance),
        "recipe": provenance.get("recipe"), "test_sets": results,
    }


def fingerprint(model: str, test_sets: Sequence[Path], limit: int | None, mac_seconds: float,
                rss_seconds: float | None) -> dict[str, Any]:
    """What a model row's figures depend on (``--reuse``): the test sets' item lists, the options of
    this benchmark, the metrics, and the model's weights and options."""
    return {"items_sha256": [reuse.file_sha256(test_set / "items.jsonl") for test_set in test_sets], "limit": limit,
            "mac_seconds": mac_seconds, "rss_seconds": rss_seconds, "metrics": METRICS, **reuse.model_facts(model)}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def recipe_start(run_dir: Path) -> tuple[int, float]:
    """``(steps, hours)`` of the stages before the first one trained with the run's own recipe: the
    leading lineage stages of ``run_dir/best.safetensors`` whose recipe differs from its own."""
    from recipes.training.lineage import stage_total
    from speechkit.checkpoint import read_metadata

    if not (run_dir / "best.safetensors").is_file():
        raise SystemExit(f"{run_dir}: no best.safetensors to read the training lineage from (--from-recipe-start)")
    provenance = read_metadata(run_dir / "best.safetensors").get("provenance") or {}
    earlier = []
    for stage in provenance.get("lineage") or []:
        if stage.get("recipe") == provenance.get("recipe"):
            break
        earlier.append(stage)
    steps, hours = stage_total(earlier, "steps_trained"), stage_total(earlier, "train_hours")
    if steps is None or hours is None:
        raise SystemExit(f"{run_dir}: an earlier stage's steps or hours are unknown; cannot count from the recipe's start")
    return int(steps), float(hours)


def validation_curve(run_dir: Path, start: tuple[int, float] = (0, 0.0)) -> tuple[list[tuple[float, int, float]], float]:
    """``(training hours, step, validation SI-SDRi)`` per validation of one run folder after ``start``
    (steps, hours: see :func:`recipe_start`), hours counted from it, and the run's training hours so
    far (the last ``train_seconds`` of its ``train_log.csv``, from the same origin)."""
    start_step, start_hours = start
    seconds_at = {int(row["step"]): float(row["train_seconds"]) for row in _read_csv(run_dir / "train_log.csv")}
    logged = sorted(seconds_at)
    curve = []
    for row in _read_csv(run_dir / "valid_log.csv"):
        position = bisect.bisect_right(logged, int(row["step"]))  # the last logged step at or before it
        if position and int(row["step"]) > start_step:
            hours = seconds_at[logged[position - 1]] / 3600.0 - start_hours
            curve.append((hours, int(row["step"]), float(row["si_sdri"])))
    return curve, max(seconds_at.values()) / 3600.0 - start_hours


def best_by_hours(curve: Sequence[tuple[float, int, float]], hours: Sequence[float],
                  end_hours: float = float("inf")) -> list[dict[str, Any]]:
    """At each mark: the best validation SI-SDRi reached by then and its step (None before the first
    validation), with ``"ended"`` for marks after the run's ``end_hours`` (the run's final best: it
    did not train that long)."""
    marks = []
    for mark in hours:
        reached = [(value, step) for when, step, value in curve if when <= mark]
        best = max(reached) if reached else None
        entry = {"hours": mark, "si_sdri": best[0] if best else None, "step": best[1] if best else None}
        marks.append({**entry, "ended": True} if mark > end_hours else entry)
    return marks


def run_summary(run_dir: Path, hours: Sequence[float], from_recipe_start: bool = False) -> dict[str, Any]:
    """One run folder's validation curve, its training hours and the best value at every mark
    (counted from its recipe's first stage with ``from_recipe_start``)."""
    start = recipe_start(run_dir) if from_recipe_start else (0, 0.0)
    curve, end_hours = validation_curve(run_dir, start)
    return {"run_dir": str(run_dir), "hours_trained": end_hours, "curve": curve,
            "marks": best_by_hours(curve, hours, end_hours), "start_step": start[0], "start_hours": start[1]}


def markdown_report(report: dict[str, Any]) -> str:
    lines = title_lines(report, "Separators: held-out quality, cost, and validation at equal training time")
    lines[-1] = lines[-1].replace("one thread per system", f"{report['threads']} torch thread(s)")
    for index, test_set in enumerate(report["test_sets"]):
        first = report["systems"][0]["test_sets"][index]
        inputs = first["input"]
        lines += ["", f"## `{Path(test_set).name}` ({first['items']} items; input PESQ-WB "
                      f"{format_cell(inputs['pesq_wb'])}, STOI {format_cell(inputs['stoi'], 3)})", "",
                  "| model | steps | train h | SI-SDRi dB | SDRi dB | PESQ-WB | STOI | worse than input |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for system in report["systems"]:
            result = system["test_sets"][index]
            summary = result["summary"]
            lines.append(
                f"| {system['model']} | {system['steps_trained']} | {format_cell(system['train_hours'], 1)} | "
                f"{format_cell(summary['si_sdri'])} | {format_cell(summary['sdri'])} | {format_cell(summary['pesq_wb'])} | "
                f"{format_cell(summary['stoi'], 3)} | {result['worse_than_input']} |"
            )
    lines += ["", "## Cost", "",
              "| model | parameters | GMACs per second of audio | RTF | CPU s per audio s | peak RSS MiB |",
              "|---|---:|---:|---:|---:|---:|"]
    for system in report["systems"]:
        lines.append(
            f"| {system['model']} | {system['parameters']:,} | {format_cell(system['gmacs_per_second'])} | "
            f"{format_cell(system['rtf'], 3)} | {format_cell(system['cpu_seconds_per_second'], 3)} | "
            f"{format_cell(system['peak_rss_mib'], 0)} |"
        )
    if report["runs"]:
        names = [Path(run["run_dir"]).name for run in report["runs"]]
        lines += ["", "## Validation SI-SDRi (dB) at equal training wall-clock (best so far; step in brackets)", "",
                  "| hours | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
        for index, mark in enumerate(report["hours"]):
            cells = []
            for run in report["runs"]:
                entry = run["marks"][index]
                value = "-" if entry["si_sdri"] is None else f"{entry['si_sdri']:.2f} ({entry['step']})"
                cells.append(f"{value}, ended at {run['hours_trained']:.2f} h" if entry.get("ended") else value)
            lines.append(f"| {mark:g} | " + " | ".join(cells) + " |")
    lines += ["", *[f"Note: {note}" for note in report["notes"]]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["conv_tasnet_separate_2spk_16k"],
                        help="bundled model names or checkpoint paths, each optionally MODEL#KEY=VALUE[,KEY=VALUE]")
    parser.add_argument("--test-set", type=Path, nargs="+", required=True, help="fixed-set folders")
    parser.add_argument("--limit", type=int, default=None, help="first N items of every test set")
    parser.add_argument("--mac-seconds", type=float, default=4.0, help="input length of the MAC count")
    parser.add_argument("--rss-seconds", type=float, default=60.0, help="synthetic file length of the RSS run (0: skip)")
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="training run folders for the wall-clock table")
    parser.add_argument("--hours", type=float, nargs="*", default=[0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 7.0])
    parser.add_argument("--from-recipe-start", action="store_true",
                        help="count each run's hours and validations from its own recipe's first stage")
    parser.add_argument("--out", type=Path, default=RESULTS / "compare_separators.json")
    parser.add_argument("--reuse", type=Path, nargs="+", default=None,
                        help="earlier reports: copy their model rows whose test sets, options and weights are unchanged")
    args = parser.parse_args(argv)
    from speechkit.memory import retain_freed_memory

    retain_freed_memory()  # as the `speechkit` command does, so the in-process RTF is the one users get
    started = time.perf_counter()
    earlier = reuse.reusable_systems(args.reuse)
    rss_seconds = args.rss_seconds or None
    systems = []
    for model in args.models:
        system = reuse.reused_or_scored_model(
            model, fingerprint(model, args.test_set, args.limit, args.mac_seconds, rss_seconds), earlier,
            lambda model=model: evaluate_model(model, args.test_set, args.limit, args.mac_seconds, rss_seconds))
        if rss_seconds and system.get("rss_method") != RSS_METHOD:  # a copied row measured the old way
            rss, rss_cpu = peak_rss_mib(reuse.weights_file(model), rss_seconds)  # quality kept, memory measured again
            system = {**system, "peak_rss_mib": rss, "rss_cpu_seconds": rss_cpu, "rss_method": RSS_METHOD}
        systems.append(system)
    runs = [run_summary(run_dir, args.hours, args.from_recipe_start) for run_dir in args.runs]
    notes = [
        "SI-SDRi and SDRi against the unprocessed mixture, best speaker permutation per item; PESQ-WB and STOI "
        "of the separated talkers (the input's figures in each heading use the mixture as both estimates).",
        "RTF and CPU seconds: file-pipeline inference over the first test set (declared chunking), metrics excluded, "
        "with large freed buffers kept for reuse as the `speechkit` command keeps them (speechkit.memory).",
        "Peak RSS: `speechkit separate` (declared chunking) on a synthetic file in a fresh process, same threads; "
        "the process's own peak (VmHWM, bench.peak_memory), not ru_maxrss, which includes this benchmark's.",
        TRAINING_HOURS_NOTE,
        *[reuse.reuse_note(system, "test sets, limit, cost options and weights") for system in systems
          if "reused_from" in system],
        *[f"{Path(run['run_dir']).name}: hours and validations counted from its recipe's first stage, after "
          f"{run['start_step']:,} steps and {run['start_hours']:.2f} h of earlier training with another recipe"
          for run in runs if run["start_hours"] or run["start_step"]],
    ]
    return finish_report(
        "compare_separators", argv, ["speechkit", "torch", "numpy"], started, markdown_report, args.out,
        test_sets=[str(path) for path in args.test_set], hours=args.hours, systems=systems, runs=runs, notes=notes,
    )


if __name__ == "__main__":
    raise SystemExit(main())
