"""How much echo the linear stage's residual suppression leaves on the table (issue 18).

The bundled ``linear_aec_16k`` is an adaptive filter followed by a residual-echo suppressor whose
gain comes from power statistics. This study runs the filter once per item and then compares, on
the same filter output, the suppressor as bundled, the suppressor with more overestimation (the one
knob that trades double-talk quality for echo removal), and an **oracle** gain that knows the true
near end (``gain = sqrt(|S|^2 / (|S|^2 + |R|^2))`` per bin on the suppressor's STFT, ``S`` the near
end plus noise in the microphone, ``R`` everything else the filter left; floored at the same
-30 dB). The oracle is not a system: it bounds what any gain on this STFT after this filter could
do, i.e. how much a better residual-echo estimate (the network stage) could still gain.

Items are **validation**-split echo scenarios of a corpus cache (read sentences, real noise,
measured and simulated rooms; ``recipes.train:realworld_echo``, the generator of the held-out
``bench.compare_aec --corpus-root`` set with other speakers, noise, rooms and seeds), so that
settings chosen here leave the held-out set untouched. Every system gets the far end aligned as
``speechkit aec`` aligns it (GCC-PHAT bulk delay minus the filter's 5 ms lead).

    .venv/bin/python -m bench.aec_headroom --corpus-root CORPUS --floor-cache FLOORS [--items 20]

Writes ``bench/results/aec_headroom.json`` (per item too) and the table beside it (``.md``).
"""
from __future__ import annotations

import bench.one_thread  # noqa: F401 - one thread per system, set before torch loads

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.compare_aec import SAMPLE_RATE, scenario_sets, score_item, summarize_system  # noqa: E402
from bench.peers.report import finish_report, format_cell, skipped_and_notes_lines, title_lines  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "aec_headroom.json"
#: the fixed set of scenario ``i`` is generated with seed ``SEED_BASE + i`` (the held-out sets use 5,000,000)
SEED_BASE = 7_000_000
SUPPRESSION_DB = 30.0
PACKAGES = ("speechkit", "torch", "numpy", "pesq")


def validation_items(
    corpus_root: Path, floor_cache: Path | None, items_per_scenario: int, cache_root: Path
) -> list[dict[str, Any]]:
    """``items_per_scenario`` validation-split echo items per scenario, generated once into ``cache_root``."""
    folder = cache_root / "fixed" / "aec_headroom_validation_16k"
    return scenario_sets(folder, "validation", SEED_BASE, items_per_scenario, corpus_root, floor_cache,
                         builder="bench.aec_headroom:validation_items")


def run_filter(items: Sequence[dict[str, Any]], padding: int) -> None:
    """Add the filter's ``error``, ``echo_estimate`` and the ``aligned`` far end (``[T + padding]``) to each item."""
    from speechkit.delay import align_reference
    from speechkit.echo import estimate_echo_delay
    from speechkit.models import build_model

    model = build_model("linear_aec", "16k_filter_only").eval()
    for item in items:
        length = item["mic"].shape[0]
        delay, _ = estimate_echo_delay(item["mic"], item["far_end"], SAMPLE_RATE)
        aligned = align_reference(item["far_end"], delay.samples - model.reference_lead, length).astype(np.float32)
        signals = torch.from_numpy(np.pad(np.stack([item["mic"], aligned]), ((0, 0), (0, padding))))[None]  # [1, 2, T']
        with torch.no_grad():
            error, echo = model.forward_with_echo(signals)  # [1, 1, 1, T'] each
        item.update(error=error[0, 0, 0].numpy(), echo_estimate=echo[0, 0, 0].numpy(), aligned=signals[0, 1].numpy())


def suppressor_system(overestimation: float) -> Callable[[dict[str, Any]], np.ndarray]:
    """The bundled residual-echo suppressor (``overestimation`` changed) on an item's filter output."""
    from speechkit.frontend.echo_suppression import ResidualEchoSuppressor, SuppressorConfig

    config = SuppressorConfig(max_suppression_db=SUPPRESSION_DB, overestimation=overestimation)
    suppressor = ResidualEchoSuppressor(config)

    def run(item: dict[str, Any]) -> np.ndarray:
        tensors = [torch.from_numpy(item[key])[None] for key in ("error", "echo_estimate", "aligned")]  # [1, T'] each
        with torch.no_grad():
            return suppressor(*tensors)[0].numpy()

    return run


def oracle_system(item: dict[str, Any]) -> np.ndarray:
    """The Wiener gain on the suppressor's STFT computed from the true near end (a bound, not a system)."""
    from speechkit.frontend.echo_suppression import SuppressorConfig
    from speechkit.frontend.stft import stft_pair

    config = SuppressorConfig()
    stft, istft = stft_pair(config.win_length, config.hop_length, window="sqrt_hann", padding="causal")
    length = item["error"].shape[0]
    target = np.pad(item["near_end"] + item["noise"], (0, length - item["mic"].shape[0]))
    signals = torch.from_numpy(np.stack([item["error"], target]).astype(np.float32))[None]  # [1, 2, T']
    error_spec, target_spec = stft(signals)[0]  # [2, F, N] each
    target_power = target_spec.square().sum(0)  # [F, N]
    residual_power = (error_spec - target_spec).square().sum(0)  # [F, N]
    floor = 10.0 ** (-SUPPRESSION_DB / 20.0)
    gain = (target_power / (target_power + residual_power + 1e-10)).sqrt().clamp(min=floor)  # [F, N]
    return istft((error_spec * gain)[None, None], length=length)[0, 0].numpy()


SYSTEMS: dict[str, Callable[[dict[str, Any]], np.ndarray]] = {
    "microphone": lambda item: item["mic"],
    "filter alone": lambda item: item["error"],
    "filter + suppressor (bundled, overestimation 2)": suppressor_system(2.0),
    "filter + suppressor, overestimation 4": suppressor_system(4.0),
    "filter + suppressor, overestimation 8": suppressor_system(8.0),
    "filter + oracle gain (knows the near end; a bound)": oracle_system,
}


def markdown_report(report: dict[str, Any]) -> str:
    """The table of the summaries."""
    lines = title_lines(report, "Residual-echo suppression headroom (validation split)")
    lines += ["| System | FST ERLE dB (mean / median) | noise-free / noisy | DT PESQ-WB | DT SI-SDR | NST PESQ-WB |",
              "|---|---|---|---|---|---|"]
    for label, summary in report["systems"].items():
        breakdown = summary["breakdown"]
        cells = [
            f"{format_cell(summary['fst_erle'], 1)} / {format_cell(summary['fst_erle_median'], 1)}",
            f"{format_cell(breakdown['fst_erle_noise_free'], 1)} / {format_cell(breakdown['fst_erle_with_noise'], 1)}",
            format_cell(summary["dt_pesq_wb"]),
            format_cell(summary["dt_si_sdr"], 1),
            format_cell(summary["nst_pesq_wb"]),
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines + skipped_and_notes_lines(report)) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus-root", type=Path, required=True, help="corpus cache (recipes/README.md)")
    parser.add_argument("--floor-cache", type=Path, default=None, help="its noise-floor cache (speech_floor.json)")
    parser.add_argument("--items", type=int, default=20, help="validation items per scenario (3 scenarios)")
    parser.add_argument("--cache-root", type=Path, default=ROOT / "data_cache",
                        help="where the fixed items are written")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output (the Markdown goes next to it)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(1)
    items = validation_items(args.corpus_root, args.floor_cache, args.items, args.cache_root)
    from speechkit.frontend.echo_suppression import SuppressorConfig

    run_filter(items, padding=SuppressorConfig().win_length // 2)  # the suppressor's overlap after the end
    systems, per_item = {}, {}
    for label, system in SYSTEMS.items():
        rows = [score_item(system(item)[: item["mic"].shape[0]], item, with_aecmos=False) for item in items]
        systems[label], per_item[label] = summarize_system(rows), rows
    notes = [
        "ERLE = 10 log10(sum mic^2 / sum output^2) over each 4 s far-end single-talk item, including the "
        "filter's convergence; on noisy items it also counts removed noise, which no row removes on purpose "
        "(the oracle keeps it).",
        "Oracle: gain sqrt(|S|^2 / (|S|^2 + |R|^2)) per bin of the suppressor's 16 ms square-root-Hann STFT, "
        "S = near end plus noise, R = the rest of the filter's error (residual echo), floored at -30 dB like "
        "the suppressor.",
    ]
    return finish_report("aec_headroom", argv, PACKAGES, started, markdown_report, args.out,
                         items_per_scenario=args.items, systems=systems, skipped={}, notes=notes, per_item=per_item)

if __name__ == "__main__":
    raise SystemExit(main())
