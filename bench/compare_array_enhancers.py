"""Microphone-array enhancers side by side on a held-out multichannel fixed set (issue 17).

Every system enhances the same items of a ``--test-set`` (a fixed-set folder of
``recipes.train:fixed_array_enhancement``: ``mixture [M, T]``, ``targets [1, 1, T]`` = the talker's
direct path at the reference microphone, and per-item ``meta``; or several folders, single-channel
ones too, each item's condition then being its folder's name unless it has an array record). A
model is a bundled name or a checkpoint path, with inference options after ``#``
(``MODEL#steps=10,seed=1``); a multichannel model receives all M microphones, a single-channel
model the reference microphone only (what a user without an array model would run). The
unprocessed reference microphone is the first row.

* quality: SI-SDR, SI-SDRi, PESQ-WB, ESTOI (``speechkit.metrics``) and DNSMOS P.835 (speechmos),
  and the output level against the target (``level_db``, RMS ratio in dB: SI-SDR cannot see a
  model that returns the speech 13 dB too loud, a listener does),
  overall and per condition (``meta["array"]``: simulated circular-array rooms vs the measured
  office array), through the file pipeline (the model's declared chunking);
* cost: parameters, multiply-accumulates per second of audio (``bench.long_file.count_macs``),
  real-time factor of the test-set inference on the benchmark's threads (wall and process CPU
  seconds per audio second), algorithmic latency (streaming models) or the chunk a non-causal
  model needs before its first output;
* training: steps and hours recorded in the checkpoint's provenance.

    .venv/bin/python -m bench.compare_array_enhancers \\
        --models conv_tasnet_enhance_16k runs/enhance_deftan2_small_4ch/best.safetensors \\
        --test-set data_cache/fixed/array_4ch_16k/test

Prints a Markdown table and writes ``bench/results/compare_array_enhancers.{json,md}`` (``--out``).
``--reuse OLD.json [MORE.json ...]`` copies every system of earlier reports whose inputs are the same (the
test sets' item lists, ``--limit``, DNSMOS on or off, the metric list, and for a model the SHA-256 of its
weights file and its options) instead of scoring it again; the copied rows keep the date, RTF and CPU
figures of their own run.
"""
from __future__ import annotations

import bench.one_thread  # noqa: F401 - one thread unless the caller says otherwise, before torch loads

import argparse  # noqa: E402
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
from bench.reuse import (  # noqa: E402
    file_sha256,
    model_facts,
    reusable_systems,
    reuse_note,
    reused_or_scored,
    reused_or_scored_model,
)

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ["si_sdr", "si_sdri", "level_db", "pesq_wb", "estoi"]
DNSMOS = ["dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"]
COLUMNS = [*METRICS, *DNSMOS]
INPUT = "input (reference microphone)"
TITLE = "Microphone-array enhancers on a held-out multichannel set"


def condition_of(meta: dict[str, Any], test_set: Path) -> str:
    """The condition of one item: for an array item ``"measured"`` (measured office-array responses) or
    ``"simulated"``; for an item without an array record, the name of its test-set folder."""
    if "array" not in meta:
        return test_set.name
    return "measured" if str(meta["array"]).startswith("measured") else "simulated"


def score_items(run: Any, test_sets: Sequence[Path], limit: int | None, dnsmos: bool) -> dict[str, Any]:
    """Per-item scores of ``run(mixture [M, T], rate) -> estimate [T]`` on the first ``limit`` items of
    each fixed set, and its timing. ``run`` None scores the unprocessed reference microphone.
    """
    from speechkit.cli.eval import fixed_set_items, load_fixed_tensor, score_item

    chosen = []
    for test_set in test_sets:
        items, rate = fixed_set_items(test_set)
        chosen += [(item, rate, test_set) for item in items[:limit]]
    rows: list[dict[str, Any]] = []
    wall = cpu = audio_seconds = 0.0
    for item, rate, test_set in chosen:
        mixture = load_fixed_tensor(item["root"], item["mixture"]).astype(np.float32)  # [M, T]
        target = load_fixed_tensor(item["root"], item["targets"])  # [1, 1, T]
        if run is None:
            estimate = mixture[0]
        else:
            started, cpu_started = time.perf_counter(), process_cpu_seconds()
            estimate = run(mixture, rate)  # [T]
            wall += time.perf_counter() - started
            cpu += process_cpu_seconds() - cpu_started
        audio_seconds += mixture.shape[-1] / rate
        reference_input = mixture[:1] if run is not None else None  # SI-SDRi needs it; the input row has none
        row = score_item(estimate[None, None], target, rate, reference_input, METRICS, dnsmos)
        rows.append({"name": item.get("name"), "condition": condition_of(item.get("meta", {}), test_set), **row})
    return {"rows": rows, "audio_seconds": audio_seconds, "wall_seconds": wall, "cpu_seconds": cpu}


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean of every column over all items and per condition (with the item count)."""
    groups = {"all": list(rows)}
    for row in rows:
        groups.setdefault(row["condition"], []).append(row)
    return {
        group: {"items": len(members), **{name: finite_mean([row.get(name) for row in members]) for name in COLUMNS}}
        for group, members in groups.items()
    }


def model_runner(processor: Any, reference_microphone: int) -> Any:
    """``run(mixture [M, T], rate) -> [T]`` for one loaded model: all microphones to an array model,
    the reference microphone alone to a single-channel one."""
    from speechkit.inference import process_array

    network = processor.model
    array_model = network.input_layout.num_microphones > 1

    def run(mixture: np.ndarray, rate: int) -> np.ndarray:
        inputs = mixture if array_model else mixture[reference_microphone:reference_microphone + 1]
        return process_array(network, inputs, rate, device=processor.device)[0, 0]  # [S, C, T] -> [T]

    return run


def latency_text(network: Any) -> str:
    """Algorithmic latency of a streaming model, or the chunk a non-causal model waits for."""
    if network.algorithmic_latency is not None:
        return f"{1000.0 * network.algorithmic_latency / network.sample_rate:.0f} ms (stream)"
    chunk = network.inference_spec.chunk_seconds
    return f"whole chunk ({chunk:g} s)" if chunk else "whole input"


def fingerprint(model: str | None, test_sets: Sequence[Path], limit: int | None, dnsmos: bool) -> dict[str, Any]:
    """What a system's scores depend on: the test sets' item lists, the item limit, DNSMOS on or
    off, the metrics and, for a model (``None``: the unprocessed input), the weights file's SHA-256
    and options."""
    hashes = [file_sha256(test_set / "items.jsonl") for test_set in test_sets]
    facts: dict[str, Any] = {"items_sha256": hashes[0] if len(hashes) == 1 else hashes, "limit": limit,
                             "dnsmos": dnsmos, "metrics": METRICS}
    if model is not None:
        facts.update(model_facts(model))
    return facts


def evaluate_model(model: str, test_sets: Sequence[Path], limit: int | None, mac_seconds: float,
                   dnsmos: bool) -> dict[str, Any]:
    """Quality, cost and training facts of one enhancer on the test sets."""
    from bench.compare_separators import load_model

    path, processor, provenance, macs = load_model(model, mac_seconds)
    network = processor.model
    scored = score_items(model_runner(processor, 0), test_sets, limit, dnsmos)
    return {
        "model": model, "path": display_path(path), "name": network.name, "preset": provenance.get("model_preset"),
        "microphones": network.input_layout.num_microphones,
        "parameters": sum(parameter.numel() for parameter in network.parameters()),
        "gmacs_per_second": macs / 1e9,
        "rtf": scored["wall_seconds"] / scored["audio_seconds"],
        "cpu_seconds_per_second": scored["cpu_seconds"] / scored["audio_seconds"],
        "latency": latency_text(network),
        **training_facts(provenance),
        "recipe": provenance.get("recipe"),
        "summary": summarize(scored["rows"]), "rows": scored["rows"],
    }


def evaluate_input(test_sets: Sequence[Path], limit: int | None, dnsmos: bool) -> dict[str, Any]:
    """The unprocessed reference microphone as a system row."""
    scored = score_items(None, test_sets, limit, dnsmos)
    return {"model": INPUT, "microphones": 1, "summary": summarize(scored["rows"]), "rows": scored["rows"]}


def markdown_report(report: dict[str, Any]) -> str:
    lines = title_lines(report, report.get("title") or TITLE)
    lines[-1] = lines[-1].replace("one thread per system", f"{report['threads']} torch thread(s)")
    test_sets = report["test_set"] if isinstance(report["test_set"], list) else [report["test_set"]]
    set_names = " + ".join(Path(test_set).name for test_set in test_sets)
    groups = list(report["systems"][0]["summary"])
    for group in groups:
        count = report["systems"][0]["summary"][group]["items"]
        lines += ["", f"## `{set_names}`: {group} ({count} items)", "",
                  "| system | mics | steps | train h | SI-SDR dB | SI-SDRi dB | level dB | PESQ-WB | ESTOI | DNSMOS SIG | BAK | OVRL |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for system in report["systems"]:
            summary = system["summary"].get(group, {})
            cells = [format_cell(summary.get(name), 3 if name == "estoi" else 2) for name in COLUMNS]
            if system["model"] == INPUT:
                cells[1] = "-"
            lines.append(f"| {system['model']} | {system['microphones']} | {system.get('steps_trained') or '-'} | "
                         f"{format_cell(system.get('train_hours'), 1) if system.get('train_hours') else '-'} | "
                         + " | ".join(cells) + " |")
    lines += ["", "## Cost", "", "| system | parameters | GMACs per second of audio | RTF | CPU s per audio s | latency |",
              "|---|---:|---:|---:|---:|---|"]
    for system in report["systems"][1:]:
        lines.append(f"| {system['model']} | {system['parameters']:,} | {format_cell(system['gmacs_per_second'])} | "
                     f"{format_cell(system['rtf'], 3)} | {format_cell(system['cpu_seconds_per_second'], 3)} | "
                     f"{system['latency']} |")
    lines += ["", *[f"Note: {note}" for note in report["notes"]]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["conv_tasnet_enhance_16k"],
                        help="bundled model names or checkpoint paths (array or single-channel)")
    parser.add_argument("--test-set", type=Path, nargs="+", required=True,
                        help="fixed-set folders (multichannel or single-channel); an item's condition is its array "
                             "record (measured or simulated) or else its folder's name")
    parser.add_argument("--limit", type=int, default=None, help="first N items of each test set")
    parser.add_argument("--mac-seconds", type=float, default=4.0, help="input length of the MAC count")
    parser.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS (it needs speechmos)")
    parser.add_argument("--out", type=Path, default=RESULTS / "compare_array_enhancers.json")
    parser.add_argument("--reuse", type=Path, nargs="+", default=None,
                        help="earlier reports: copy their systems whose test sets, limit, DNSMOS and weights "
                             "are unchanged")
    parser.add_argument("--title", default=TITLE, help="the report's title")
    parser.add_argument("--note", action="append", default=[], help="a note added to the report (repeatable)")
    args = parser.parse_args(argv)
    from speechkit.memory import retain_freed_memory

    retain_freed_memory()  # as the `speechkit` command does, so the in-process RTF is the one users get
    started = time.perf_counter()
    dnsmos = not args.no_dnsmos
    earlier = reusable_systems(args.reuse)
    systems = [reused_or_scored(INPUT, fingerprint(None, args.test_set, args.limit, dnsmos), earlier,
                                lambda: evaluate_input(args.test_set, args.limit, dnsmos))]
    for model in args.models:
        systems.append(reused_or_scored_model(
            model, fingerprint(model, args.test_set, args.limit, dnsmos), earlier,
            lambda model=model: evaluate_model(model, args.test_set, args.limit, args.mac_seconds, dnsmos)))
    notes = [
        *args.note,
        "Target: the test set's stored target (array sets: the talker's direct path at the reference microphone, "
        "microphone 0); every metric scores the enhanced reference channel against it. SI-SDRi is against the "
        "unprocessed reference microphone.",
        "Single-channel models receive the reference microphone only; array models all microphones in array order.",
        "DNSMOS P.835 is non-intrusive (speechmos, 16 kHz); it rates the output alone.",
        "RTF and CPU seconds: file-pipeline inference over the test set (declared chunking), metrics excluded.",
        TRAINING_HOURS_NOTE,
        *[reuse_note(system, "test set, limit, DNSMOS and weights") for system in systems if "reused_from" in system],
    ]
    return finish_report(
        "compare_array_enhancers", argv, ["speechkit", "torch", "numpy", "pesq", "pystoi", "speechmos"], started,
        markdown_report, args.out, title=args.title,
        test_set=str(args.test_set[0]) if len(args.test_set) == 1 else [str(test_set) for test_set in args.test_set],
        systems=systems, notes=notes,
    )


if __name__ == "__main__":
    raise SystemExit(main())
