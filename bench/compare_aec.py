"""Compare speechkit's echo canceller with the ones a user could install from PyPI (issue 5).

One command runs speechkit's ``complex_d3net_aec`` (``--model PATH`` to a checkpoint, or
``--model untrained:paper`` for a clearly labelled random network that only validates the pipeline
and measures speed), speechkit's linear stage alone (the bundled adaptive filter ``linear_aec_16k``,
as ``speechkit aec --linear-only`` runs it; ``--no-linear`` leaves it out) and every installed peer (Speex AEC through ``speexdsp-aec``, WebRTC AEC3 alone
and with WebRTC noise suppression through ``pywebrtc-audio``; see ``bench/aec_peers/``) on a fixed
held-out set of echo scenarios:

* 4-second 16 kHz items from ``recipes.data.datasets.EchoDataset`` (``recipes/data/echo.py``) over
  the mini corpus *test* split (test speakers for both talkers, test noise files): far-end single
  talk, double talk and near-end single talk (``--items`` each), a nonlinear loudspeaker on 60 % of
  items, measured or simulated RIRs (half each), bulk delays of 0-200 ms, echo-path changes on
  20 %, background noise on half (SNR 10-40 dB), signal-to-echo ratio -10..10 dB in double talk.
  Generated once with fixed seeds and written with ``recipes.data.fixedset.write_fixed_set`` to
  ``data_cache/fixed/compare_aec_16k/``.

Every system gets the microphone signal and the *unaligned* far-end reference, as recorded, and
copes with the bulk delay its own way (``--prealign`` adds rows where the peers get a reference
already aligned by speechkit's GCC-PHAT delay estimate).

Metrics (``speechkit.metrics``): ERLE on far-end single talk (``10 log10(sum mic^2 / sum out^2)``
over the whole item), PESQ-WB and SI-SDR of the near-end estimate on double talk and on near-end
single talk (speech preservation), AECMOS (Microsoft's AEC-Challenge MOS model, bundled ONNX in
PyPI ``speechmos``; echo MOS and other-degradation MOS with the scenario marker), real-time factor
on one thread (block-processing seconds / audio seconds), algorithmic latency. Each system's output
delay is found by cross-correlating its near-end estimates with the clean near end and compensated
before scoring.

    .venv/bin/python -m bench.compare_aec [--model PATH|untrained:paper] [--items 20] [--prealign]

``--test-set DIR --out FILE`` scores every item of another fixed echo set instead, e.g. a training
run's validation set (``data_cache/fixed/realworld_echo_16k/validation``), so that settings are
chosen there and the held-out items are only used to report.

Prints a Markdown table, writes it to ``<out>.md`` and everything (per item too) to ``<out>``
(default ``bench/results/compare_aec.json``).
"""
from __future__ import annotations

import bench.one_thread  # noqa: F401 - one thread per system, set before torch loads

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from bench.aec_peers import PEERS, EchoCanceller, SpeechkitEchoCanceller, SpeexEchoCanceller  # noqa: E402
from bench.peers.delay import compensate_delay, estimate_delay  # noqa: E402
from bench.peers.report import (  # noqa: E402
    finish_report,
    finite_mean,
    format_cell,
    skipped_and_notes_lines,
    system_facts,
    title_lines,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "compare_aec.json"
SAMPLE_RATE = 16000
SEGMENT_SECONDS = 4.0
#: scenario -> AECMOS talk-type marker ("st": far-end single talk, "nst": near-end single talk)
SCENARIOS = {"far_end_single_talk": "st", "double_talk": "dt", "near_end_single_talk": "nst"}
SCENARIO_SHORT = {"far_end_single_talk": "fst", "double_talk": "dt", "near_end_single_talk": "nst"}
#: the fixed set of scenario ``i`` (in :data:`SCENARIOS` order) is generated with seed ``SEED_BASE + i``
SEED_BASE = 5_000_000
#: largest output delay searched for, in seconds
MAX_OUTPUT_DELAY_SECONDS = 0.1
#: Speex filter tail when the reference is already aligned (room response only)
ALIGNED_SPEEX_TAIL_MS = 128
PACKAGES = (
    "speechkit", "torch", "numpy", "soxr", "pesq", "speechmos", "librosa", "onnxruntime",
    "speexdsp-aec", "pywebrtc-audio",
)


# ----------------------------------------------------------------------------------- data
def held_out_set(
    items_per_scenario: int,
    cache_root: Path | None = None,
    corpus_root: Path | None = None,
    floor_cache: Path | None = None,
) -> list[dict[str, Any]]:
    """``items_per_scenario`` held-out echo items of each scenario of :data:`SCENARIOS`, as numpy.

    Each item: ``{"name", "scenario", "mic", "far_end", "near_end", "echo", "noise"}`` (``[T]``
    float32) plus the generator's metadata (``delay_ms``, ``ser_db``, ``snr_db``, ``nonlinearity``,
    ``rir``, ``echo_path_change_sample``, talker and noise ids). Fixed sets are generated on first
    use by ``EchoDataset`` (test split, one scenario each) and written with ``write_fixed_set``:
    over the mini corpus, or with ``corpus_root`` over a corpus cache's read sentences, real noise
    and measured rooms (``recipes.train:realworld_echo``; ``floor_cache``: its noise-floor cache).
    """
    from recipes.data.minicorpus import default_cache_root

    folder = (cache_root or default_cache_root()) / "fixed" / fixed_set_folder(corpus_root)
    return scenario_sets(folder, "test", SEED_BASE, items_per_scenario, corpus_root, floor_cache,
                         builder="bench.compare_aec:held_out_set")


def scenario_sets(
    folder: Path,
    split: str,
    seed_base: int,
    items_per_scenario: int,
    corpus_root: Path | None = None,
    floor_cache: Path | None = None,
    builder: str = "bench.compare_aec:scenario_sets",
) -> list[dict[str, Any]]:
    """One fixed set per scenario of :data:`SCENARIOS` (``folder/<split>_<scenario>_n<items>``, seed
    ``seed_base + i`` for the ``i``-th), generated on first use from ``split`` of the mini corpus, or
    of a corpus cache with ``corpus_root`` (``recipes.train:realworld_echo``), then read back with
    :func:`fixed_echo_items`. :func:`held_out_set` is the test split; ``bench.aec_headroom`` the
    validation split."""
    from recipes.data.datasets import EchoDataset
    from recipes.data.echo import EchoConfig
    from recipes.data.fixedset import write_fixed_set
    from recipes.data.minicorpus import MiniCorpus

    corpus = None
    loaded = []
    for index, scenario in enumerate(SCENARIOS):
        root = folder / f"{split}_{scenario}_n{items_per_scenario}"
        seed = seed_base + index
        if not (root / "index.json").is_file():
            if corpus_root is not None:
                from recipes.train import realworld_echo

                generator = realworld_echo(
                    str(corpus_root), split, SAMPLE_RATE, SEGMENT_SECONDS, items_per_scenario, seed,
                    floor_cache=None if floor_cache is None else str(floor_cache),
                    echo_options={"scenario_weights": {scenario: 1.0}},
                )
            else:
                corpus = corpus or MiniCorpus.scan()
                config = EchoConfig(sample_rate=SAMPLE_RATE, segment_seconds=SEGMENT_SECONDS,
                                    scenario_weights={scenario: 1.0})
                generator = EchoDataset.from_minicorpus(split, config, length=items_per_scenario, seed=seed,
                                                        corpus=corpus)
            description = {"builder": builder, "split": split, "scenario": scenario, "seed": seed,
                           "count": items_per_scenario, "segment_seconds": SEGMENT_SECONDS,
                           "speech": "mini corpus" if corpus_root is None else "corpus cache (read sentences)"}
            write_fixed_set(generator, root, SAMPLE_RATE, count=items_per_scenario, source=description, overwrite=True)
        loaded.extend(fixed_echo_items(root))
    return loaded


def fixed_echo_items(root: Path) -> list[dict[str, Any]]:
    """The items of one fixed echo set (``write_fixed_set`` layout, any mix of scenarios) as numpy.

    Each item is named by its scenario and position (``fst_000``, ``dt_001``, ...); the layout of
    :func:`held_out_set`'s items. This is how a training run's validation set (e.g. the one
    ``recipes.train:fixed_realworld_echo`` writes) is scored with ``--test-set``.
    """
    from recipes.data.fixedset import FixedSetDataset
    from speechkit.errors import SpeechkitError

    dataset = FixedSetDataset(root)
    loaded = []
    for position in range(len(dataset)):
        item = dataset[position]
        scenario = item.get("scenario")
        if scenario not in SCENARIO_SHORT:
            raise SpeechkitError(f"{root}: item {position} is not an echo item (scenario {scenario!r})")
        entry: dict[str, Any] = {"name": f"{SCENARIO_SHORT[scenario]}_{position:03d}"}
        for key in ("mic", "far_end", "near_end", "echo", "noise"):
            entry[key] = item[key][0].numpy().astype(np.float32)  # [1, T] -> [T]
        for key in ("scenario", "delay_ms", "ser_db", "snr_db", "nonlinearity", "rir", "echo_path_change_sample",
                    "far_id", "near_id", "noise_id"):
            entry[key] = item.get(key)
        loaded.append(entry)
    return loaded


def fixed_set_folder(corpus_root: Path | None) -> str:
    """The folder (under ``<cache>/fixed``) of the held-out sets: mini-corpus words or corpus-cache sentences."""
    return "compare_aec_16k" if corpus_root is None else "compare_aec_sentences_16k"


def prealigned_reference(item: dict[str, Any]) -> np.ndarray:
    """The item's far end shifted by the bulk delay that speechkit's GCC-PHAT finds (``[T]``)."""
    from speechkit.delay import align_reference
    from speechkit.delay import estimate_delay as estimate_bulk_delay

    found = estimate_bulk_delay(item["mic"], item["far_end"], SAMPLE_RATE)
    return align_reference(item["far_end"], found.samples, item["mic"].shape[0]).astype(np.float32)


# ----------------------------------------------------------------------------------- metrics
def aecmos_scores(far_end: np.ndarray, mic: np.ndarray, estimate: np.ndarray, talk_type: str) -> dict[str, float]:
    """AECMOS echo and degradation MOS (:func:`speechkit.metrics.aecmos`)."""
    from speechkit.metrics import aecmos

    return aecmos(far_end, mic, estimate, SAMPLE_RATE, talk_type)


def score_item(estimate: np.ndarray, item: dict[str, Any], with_aecmos: bool) -> dict[str, Any]:
    """ERLE (far-end single talk) or PESQ-WB / SI-SDR(i) of the near end (other scenarios), plus AECMOS."""
    from speechkit.metrics import erle, evaluate_item

    row: dict[str, Any] = {"name": item["name"], "scenario": item["scenario"], "rir": item["rir"],
                           "nonlinearity": item["nonlinearity"], "delay_ms": item["delay_ms"],
                           "noisy": bool(np.isfinite(item["snr_db"]))}
    if item["scenario"] == "far_end_single_talk":
        row["erle"] = erle(item["mic"], estimate)
    else:
        row.update(evaluate_item(estimate, item["near_end"], SAMPLE_RATE, mixture=item["mic"][None],
                                 metrics=("pesq_wb", "si_sdr", "si_sdri")))
    if with_aecmos:
        row.update(aecmos_scores(item["far_end"], item["mic"], estimate, SCENARIOS[item["scenario"]]))
    return row


def summarize_system(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means per scenario (ERLE, PESQ-WB, SI-SDR(i), AECMOS) and ERLE / PESQ breakdowns for the JSON."""
    def mean(key: str, scenario: str, condition: Any = None) -> float:
        return finite_mean([row.get(key) for row in rows
                            if row["scenario"] == scenario and (condition is None or condition(row))])

    fst, dt, nst = "far_end_single_talk", "double_talk", "near_end_single_talk"
    erles = np.asarray([row["erle"] for row in rows if row["scenario"] == fst], dtype=np.float64)
    summary: dict[str, Any] = {
        "fst_erle": mean("erle", fst),
        "fst_erle_median": float(np.median(erles)) if erles.size else float("nan"),
        "fst_aecmos_echo": mean("aecmos_echo", fst),
        "dt_pesq_wb": mean("pesq_wb", dt),
        "dt_si_sdr": mean("si_sdr", dt),
        "dt_si_sdri": mean("si_sdri", dt),
        "dt_aecmos_echo": mean("aecmos_echo", dt),
        "dt_aecmos_deg": mean("aecmos_deg", dt),
        "nst_pesq_wb": mean("pesq_wb", nst),
        "nst_si_sdr": mean("si_sdr", nst),
        "nst_aecmos_deg": mean("aecmos_deg", nst),
        "pesq_nan_items": sum(1 for row in rows if row["scenario"] != fst and not np.isfinite(row.get("pesq_wb", np.nan))),
    }
    is_measured = lambda row: row["rir"] == "measured"  # noqa: E731
    is_linear = lambda row: row["nonlinearity"] == "linear"  # noqa: E731
    summary["breakdown"] = {
        "fst_erle_noise_free": mean("erle", fst, lambda row: not row["noisy"]),
        "fst_erle_with_noise": mean("erle", fst, lambda row: row["noisy"]),
        "fst_erle_measured_rir": mean("erle", fst, is_measured),
        "fst_erle_simulated_rir": mean("erle", fst, lambda row: not is_measured(row)),
        "fst_erle_linear_loudspeaker": mean("erle", fst, is_linear),
        "fst_erle_nonlinear_loudspeaker": mean("erle", fst, lambda row: not is_linear(row)),
        "dt_pesq_wb_measured_rir": mean("pesq_wb", dt, is_measured),
        "dt_pesq_wb_simulated_rir": mean("pesq_wb", dt, lambda row: not is_measured(row)),
        "fst_erle_delay_over_100ms": mean("erle", fst, lambda row: row["delay_ms"] > 100),
        "fst_erle_delay_up_to_100ms": mean("erle", fst, lambda row: row["delay_ms"] <= 100),
    }
    return summary


def evaluate_system(
    system: EchoCanceller | None, label: str, items: Sequence[dict[str, Any]], with_aecmos: bool,
    prealigned: bool = False,
) -> dict[str, Any]:
    """Process, align, score and summarise one system (``None``: the unprocessed microphone signal)."""
    result: dict[str, Any] = {"system": label, "prealigned_reference": prealigned}
    if system is None:
        estimates = [item["mic"] for item in items]
        result.update({"rtf": 0.0, "latency_ms": 0.0, "declared_delay_ms": 0.0, "delay_ms": 0.0})
    else:
        raw, seconds = [], 0.0
        for item in items:
            reference = prealigned_reference(item) if prealigned else item["far_end"]
            raw.append(system.process(np.stack([item["mic"], reference]), SAMPLE_RATE))  # 2 x [T] -> [2, T]
            seconds += system.last_compute_seconds
        duration = sum(item["mic"].shape[0] for item in items) / SAMPLE_RATE
        speech_items = [index for index, item in enumerate(items) if item["scenario"] != "far_end_single_talk"]
        max_lag = int(MAX_OUTPUT_DELAY_SECONDS * SAMPLE_RATE)
        delay, peak = estimate_delay([raw[index] for index in speech_items],
                                     [items[index]["near_end"] for index in speech_items], max_lag)
        estimates = [compensate_delay(output, delay, item["mic"].shape[0]) for output, item in zip(raw, items)]
        latency = system.algorithmic_latency
        result.update({
            "rtf": seconds / duration,
            "latency_ms": None if latency is None else 1000.0 * latency,
            "declared_delay_ms": 1000.0 * system.stream_delay / system.native_rate,
            "delay_ms": 1000.0 * delay / SAMPLE_RATE,
            "delay_samples": delay,
            "delay_correlation": peak,
            **system_facts(system),
        })
    rows = [score_item(estimate, item, with_aecmos) for estimate, item in zip(estimates, items)]
    result["summary"] = summarize_system(rows)
    result["items"] = rows
    return result


# ----------------------------------------------------------------------------------- report
def markdown_report(report: dict[str, Any]) -> str:
    """The Markdown table with date, machine, data description, skipped systems and notes."""
    data = report["data"]
    lines = [
        *title_lines(report, "Echo-cancellation comparison"),
        f"Held-out set: {data['items_per_scenario']} items of {SEGMENT_SECONDS:g} s at 16 kHz per scenario "
        "(far-end single talk FST, double talk DT, near-end single talk NST) from recipes.data EchoDataset, "
        f"test-split speakers and noise ({data.get('speech', 'mini corpus')}); nonlinear loudspeaker, measured and "
        "simulated RIRs, bulk delays 0-200 ms.",
        "",
        "| System | FST ERLE dB | DT PESQ-WB | DT SI-SDR | NST PESQ-WB | NST SI-SDR | AECMOS echo FST / DT "
        "| AECMOS deg DT / NST | RTF (1 thread) | Latency ms | Delay ms (found / declared) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in report["systems"]:
        summary = result["summary"]
        delay = ("-" if result["system"].startswith("mic")
                 else f"{format_cell(result['delay_ms'], 1)} / {format_cell(result['declared_delay_ms'], 1)}")
        latency = format_cell(result["latency_ms"], 1) if result["latency_ms"] is not None else "offline"
        lines.append(
            f"| {result['system']} | {format_cell(summary['fst_erle'], 1)} | {format_cell(summary['dt_pesq_wb'])} | "
            f"{format_cell(summary['dt_si_sdr'], 1)} | {format_cell(summary['nst_pesq_wb'])} | {format_cell(summary['nst_si_sdr'], 1)} | "
            f"{format_cell(summary['fst_aecmos_echo'])} / {format_cell(summary['dt_aecmos_echo'])} | "
            f"{format_cell(summary['dt_aecmos_deg'])} / {format_cell(summary['nst_aecmos_deg'])} | "
            f"{format_cell(result['rtf'], 3)} | {latency} | {delay} |"
        )
    lines += [
        "",
        "FST ERLE breakdown (dB): noise-free / with noise; measured / simulated RIR; linear / nonlinear loudspeaker:",
        "",
        "| System | noise-free | with noise | measured RIR | simulated RIR | linear | nonlinear |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in report["systems"]:
        breakdown = result["summary"]["breakdown"]
        keys = ("fst_erle_noise_free", "fst_erle_with_noise", "fst_erle_measured_rir", "fst_erle_simulated_rir",
                "fst_erle_linear_loudspeaker", "fst_erle_nonlinear_loudspeaker")
        lines.append(f"| {result['system']} | " + " | ".join(format_cell(breakdown[key], 1) for key in keys) + " |")
    lines += skipped_and_notes_lines(report)
    return "\n".join(lines) + "\n"


def data_description(
    items: Sequence[dict[str, Any]], items_per_scenario: int | None, corpus_root: Path | None = None,
    test_set: Path | None = None,
) -> dict[str, Any]:
    """What the held-out set holds: counts per scenario, RIR kind, loudspeaker model and delay range.

    ``test_set``: the items came from that fixed set (``--test-set``), not from :func:`held_out_set`.
    """
    delays = [item["delay_ms"] for item in items if item["scenario"] != "near_end_single_talk"]
    echo_items = [item for item in items if item["scenario"] != "near_end_single_talk"]
    return {
        "items_per_scenario": items_per_scenario,
        "items": len(items),
        "scenarios": {scenario: sum(1 for item in items if item["scenario"] == scenario) for scenario in SCENARIOS},
        "segment_seconds": SEGMENT_SECONDS,
        "speech": ("mini corpus: one-word Speech Commands and read-sentence talkers" if corpus_root is None
                   else "corpus cache: read sentences, real noise recordings, measured and simulated rooms"),
        "source": (f"recipes.data EchoDataset(split='test', one scenario each) fixed sets, seeds "
                   f"{SEED_BASE}..{SEED_BASE + len(SCENARIOS) - 1}, data_cache/fixed/{fixed_set_folder(corpus_root)}/"
                   if test_set is None else f"the fixed set {test_set} (--test-set), all its items"),
        "measured_rir_items": sum(1 for item in items if item["rir"] == "measured"),
        "simulated_rir_items": sum(1 for item in items if item["rir"] != "measured"),
        "nonlinear_loudspeaker_echo_items": sum(1 for item in echo_items if item["nonlinearity"] != "linear"),
        "echo_items": len(echo_items),
        "echo_path_change_items": sum(1 for item in items if item["echo_path_change_sample"] >= 0),
        "noisy_items": sum(1 for item in items if np.isfinite(item["snr_db"])),
        "bulk_delay_ms_range": [min(delays), max(delays)] if delays else None,
    }


# ----------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help="complex_d3net_aec checkpoint path or bundled name, or untrained:PRESET "
                             "(default: no speechkit row)")
    parser.add_argument("--items", type=int, default=20, help="held-out items per scenario (3 scenarios)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output (the Markdown goes next to it)")
    parser.add_argument("--peers", nargs="*", default=list(PEERS), help=f"peers to run (default all: {' '.join(PEERS)})")
    parser.add_argument("--prealign", action="store_true",
                        help="also run every peer with the reference pre-aligned by speechkit's GCC-PHAT estimate")
    parser.add_argument("--no-aecmos", action="store_true", help="skip AECMOS")
    parser.add_argument("--label", default=None, help="table label of the speechkit model")
    parser.add_argument("--cache-root", type=Path, default=None,
                        help="where the fixed held-out sets are read or generated (default: the data cache)")
    parser.add_argument("--corpus-root", type=Path, default=None,
                        help="build the held-out set from this corpus cache's test split (read sentences, real "
                             "noise, measured rooms) instead of the mini corpus; default output "
                             "bench/results/compare_aec_sentences.json")
    parser.add_argument("--floor-cache", type=Path, default=None,
                        help="noise-floor cache of the corpus cache's speech (as the training configs pass it)")
    parser.add_argument("--test-set", type=Path, default=None,
                        help="score every item of this fixed echo set instead (e.g. a training run's validation "
                             "set, to choose settings without touching the held-out items); needs --out")
    parser.add_argument("--realtime", type=Path, default=None, metavar="ONNX",
                        help="also run this streaming export (speechkit export --streaming) through the realtime "
                             "engine, with the far end's delay tracked live from past samples (speechkit stream)")
    parser.add_argument("--no-linear", action="store_true",
                        help="leave out the row of speechkit's linear stage alone (linear_aec_16k)")
    args = parser.parse_args(argv)
    if args.test_set is not None and args.out is None:
        parser.error("--test-set needs --out (the default reports hold the held-out set's results)")
    if args.out is None:
        args.out = DEFAULT_OUT if args.corpus_root is None else DEFAULT_OUT.with_name("compare_aec_sentences.json")

    import torch

    from speechkit.errors import SpeechkitError

    torch.set_num_threads(1)
    unknown = sorted(set(args.peers) - set(PEERS))
    if unknown:
        parser.error(f"unknown peer(s) {', '.join(unknown)} (known: {', '.join(PEERS)})")
    if args.items <= 0:
        parser.error("--items must be positive")
    notes: list[str] = []
    skipped: dict[str, str] = {}
    with_aecmos = not args.no_aecmos
    systems: list[tuple[str, EchoCanceller, bool]] = []
    started = time.perf_counter()
    try:
        if args.model is None:
            skipped["speechkit"] = ("no trained complex_d3net_aec checkpoint was given (--model PATH); the speechkit "
                                    "row is missing")
        else:
            speechkit_system = SpeechkitEchoCanceller(args.model)
            label = args.label or f"speechkit ({Path(speechkit_system.model_reference).name})"
            if not speechkit_system.trained:
                label += " UNTRAINED"
                notes.append(f"{label}: the network records no training (random weights); its quality numbers are "
                             "meaningless, only its RTF and latency are the architecture's.")
            systems.append((label, speechkit_system, False))
        if args.realtime is not None:
            from bench.aec_peers.speechkit_realtime import RealtimeEchoCanceller

            systems.append((f"speechkit realtime ({args.realtime.name}, ONNX, live delay tracking)",
                            RealtimeEchoCanceller(args.realtime), False))
            systems.append((f"speechkit realtime ({args.realtime.name}, ONNX, delay of the whole clip)",
                            RealtimeEchoCanceller(args.realtime, whole_clip_delay=True), False))
        if not args.no_linear:
            from speechkit.pretrained import LINEAR_ECHO_CANCELLER

            systems.append((f"speechkit linear stage ({LINEAR_ECHO_CANCELLER})",
                            SpeechkitEchoCanceller(LINEAR_ECHO_CANCELLER), False))
        for name in args.peers:
            available, reason = PEERS[name].is_available()
            if not available:
                skipped[name] = reason
                continue
            systems.append((name, PEERS[name](), False))
        if args.prealign:
            for label, system, _ in list(systems):
                if isinstance(system, SpeechkitEchoCanceller):
                    continue
                aligned = SpeexEchoCanceller(ALIGNED_SPEEX_TAIL_MS) if isinstance(system, SpeexEchoCanceller) \
                    else type(system)()
                systems.append((f"{label} (pre-aligned ref)", aligned, True))
        if with_aecmos:
            try:
                probe = 1e-2 * np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32)
                aecmos_scores(probe, probe, probe, "st")
            except Exception as error:  # speechmos/librosa missing or its ONNX model failing: skip AECMOS, say why
                with_aecmos = False
                skipped["AECMOS"] = f"{type(error).__name__}: {error}"
        if args.test_set is not None:
            items = fixed_echo_items(args.test_set)
        else:
            items = held_out_set(args.items, args.cache_root, args.corpus_root, args.floor_cache)
    except SpeechkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    notes.append(
        "ERLE = 10 log10(sum mic^2 / sum output^2) over each whole far-end single-talk item (speechkit.metrics.erle), "
        "mean over items in dB; on noisy items it also counts removed background noise (see the breakdown)."
    )
    notes.append(
        "Every system gets the unaligned far-end reference: WebRTC AEC3 estimates the bulk delay itself, Speex "
        "models a 300 ms echo path (delay + room), speechkit aligns with GCC-PHAT as `speechkit aec` does. "
        "Pre-aligned rows (if any) get a reference aligned by speechkit.delay (GCC-PHAT, not timed); Speex then "
        f"models {ALIGNED_SPEEX_TAIL_MS} ms."
    )
    if args.realtime is not None:
        notes.append(
            "speechkit realtime: the streaming ONNX export run hop by hop by the realtime engine (speechkit stream) "
            "from a fresh state on each clip. Live delay tracking sees only past samples: the far end is not aligned "
            "until the tracker adopts a delay (GCC-PHAT on the last 2 s, from 0.5 s of signal on), then the model "
            "restarts on the aligned far end, so each 4 s clip loses its first second or so. The whole-clip row "
            "imposes the delay `speechkit aec` measures on the file: it should match the file path."
        )
    if not args.no_linear:
        notes.append(
            "speechkit linear stage: the partitioned-block frequency-domain Kalman filter (no network, no "
            "learned weights: it learns each item's echo path from scratch while it runs), 320 ms echo tail after "
            "GCC-PHAT alignment minus a 5 ms margin, then the residual-echo suppressor (a Wiener gain from the "
            "filter's leakage, floored at -30 dB); no noise suppression."
        )
    notes.append(
        "RTF = block-processing seconds / audio seconds on one thread (state creation excluded); latency = block "
        "+ declared output delay; output delays were found by cross-correlating near-end estimates with the clean "
        "near end (DT and NST items) and compensated before scoring."
    )
    notes.append(
        "PESQ-WB means leave out the items where PESQ finds no utterance in the clean near end (the same items for "
        "every system; count in the JSON, pesq_nan_items). The unprocessed "
        "microphone's NST SI-SDR mean is dominated by noise-free items, where the microphone is the near end (~100 dB)."
    )
    notes.append(
        "AECMOS: speechmos 16 kHz model with the scenario marker (st/dt/nst), loopback = the unaligned far end; "
        "echo MOS rates residual echo (FST, DT), degradation MOS rates near-end damage (DT, NST); 1-5, higher is better."
    )
    print(f"{len(items)} held-out items ({time.perf_counter() - started:.0f} s); scoring the microphone signal...",
          file=sys.stderr)
    results = [evaluate_system(None, "mic (unprocessed)", items, with_aecmos)]
    for label, system, prealigned in systems:
        print(f"running {label} ({time.perf_counter() - started:.0f} s)...", file=sys.stderr)
        result = evaluate_system(system, label, items, with_aecmos, prealigned)
        if isinstance(system, SpeechkitEchoCanceller) or hasattr(system, "delays"):
            result["model"] = system.describe()
        results.append(result)
        system.close()
    return finish_report(
        "compare_aec", argv, PACKAGES, started, markdown_report, args.out,
        data=data_description(items, None if args.test_set else args.items, args.corpus_root, args.test_set),
        skipped=skipped,
        notes=notes,
        systems=results,
    )


if __name__ == "__main__":
    sys.exit(main())
