"""SGMSE+ inference cost on this CPU: MACs per network evaluation and real-time factors per step count.

For each preset (random weights; cost does not depend on their values):

* MACs of one score-network evaluation per second of audio (``FlopCounterMode``: conv, matmul and
  bmm; MACs = FLOPs / 2), counted on the meta device (no weights allocated) over ``--frames``
  frames (128 frames of hop 128 at 16 kHz = 1.024 s), and per second of audio for a sampler run:
  ``N (1 + corrector_steps)`` evaluations for the predictor-corrector sampler, ``N`` for the ODE;
* the wall and process-CPU time of one evaluation on one thread (median of ``--repeats``); on a
  shared machine the wall time grows with the other load, the CPU time much less (on one thread it
  is what the work costs on an idle core);
* real-time factors (wall time / audio duration) on one thread: extrapolated from one evaluation
  for every step count (the sampler's own arithmetic is negligible beside the network), and for
  presets in ``--full-presets`` also measured as whole ``forward`` calls (normalisation, STFT,
  sampler, iSTFT) for each step count.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.sgmse_cost                        # paper and small
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.sgmse_cost --presets tiny --full-presets tiny --quick

Prints a Markdown table and writes ``bench/results/sgmse_cost.{json,md}`` (``--out`` to change).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.long_file import count_macs
from speechkit.models import build_model

RESULTS = Path(__file__).resolve().parent / "results"
#: (sampler, steps) pairs of the table
SETTINGS = (("pc", 5), ("pc", 10), ("pc", 30), ("pc", 50), ("ode", 30))


def noisy_speech_like(seconds: float, rate: int, seed: int = 0) -> torch.Tensor:
    """A harmonic 'talker' in white noise, ``[1, 1, T]``."""
    generator = np.random.default_rng(seed)
    time_axis = np.arange(int(seconds * rate)) / rate
    voiced = np.sin(2 * np.pi * 150.0 * time_axis) * (0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * time_axis))
    signal = 0.3 * voiced + 0.05 * generator.standard_normal(time_axis.shape)
    return torch.from_numpy(signal.astype(np.float32))[None, None]


def network_inputs(model, frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Score-network inputs ``[1, 1, 2, F, frames]`` (twice) and ``t [1]``."""
    shape = (1, 1, 2, model.config.num_freqs, frames)
    return 0.1 * torch.randn(shape), 0.1 * torch.randn(shape), torch.tensor([0.5])


def evaluation_macs(preset: str, frames: int) -> float:
    """MACs of one score-network evaluation over ``frames`` frames (meta device)."""
    with torch.device("meta"):
        model = build_model("sgmse", preset).eval()
        inputs = network_inputs(model, frames)
    return count_macs(lambda: model.network_score(*inputs))


def timed_evaluations(model, frames: int, repeats: int) -> tuple[float, float]:
    """Median wall and process-CPU seconds of one evaluation (after one warm-up)."""
    inputs = network_inputs(model, frames)
    walls, cpus = [], []
    with torch.no_grad():
        model.network_score(*inputs)
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            model.network_score(*inputs)
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - start_cpu)
    return statistics.median(walls), statistics.median(cpus)


def evaluations(sampler: str, steps: int, corrector_steps: int = 1) -> int:
    """Network evaluations of one sampler run."""
    return steps * (1 + corrector_steps) if sampler == "pc" else steps


def measure(preset: str, frames: int, repeats: int, full: bool, full_seconds: float) -> dict:
    """Every figure of one preset: a summary and one entry per (sampler, steps) setting."""
    torch.manual_seed(0)
    model = build_model("sgmse", preset).eval()
    seconds = frames * model.config.hop_length / model.sample_rate
    macs = evaluation_macs(preset, frames)
    wall, cpu = timed_evaluations(model, frames, repeats)
    row: dict = {
        "preset": preset, "parameters": model.num_parameters(), "sample_rate": model.sample_rate,
        "frames": frames, "audio_seconds": seconds, "gmacs_per_evaluation_per_second": macs / 1e9 / seconds,
        "evaluation_wall_s": wall, "evaluation_cpu_s": cpu, "settings": [],
    }
    x = noisy_speech_like(full_seconds, model.sample_rate) if full else None
    for sampler, steps in SETTINGS:
        count = evaluations(sampler, steps)
        setting = {"preset": preset, "sampler": sampler, "steps": steps, "evaluations": count,
                   "gmacs_per_second": count * macs / 1e9 / seconds, "rtf_extrapolated": count * wall / seconds,
                   "cpu_s_per_s_extrapolated": count * cpu / seconds}
        if x is not None:
            model.set_options({"sampler": sampler, "steps": steps})
            with torch.no_grad():
                start, start_cpu = time.perf_counter(), time.process_time()
                output = model(x)
                setting["rtf_measured"] = (time.perf_counter() - start) / full_seconds
                setting["cpu_s_per_s_measured"] = (time.process_time() - start_cpu) / full_seconds
                setting["measured_audio_seconds"] = full_seconds
            assert torch.isfinite(output).all()
        row["settings"].append(setting)
    return row


def table(rows: list[dict]) -> list[str]:
    """Markdown lines of a table of ``rows`` (missing cells empty)."""
    keys: list[str] = []
    for row in rows:
        keys += [key for key in row if key not in keys]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = []
        for key in keys:
            value = row.get(key, "")
            text = f"{value:,}" if isinstance(value, int) else f"{value:.3g}" if isinstance(value, float) else str(value)
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(rows: list[dict], title: str) -> str:
    """A summary table per preset and a table per (preset, sampler, steps)."""
    summary = [{key: value for key, value in row.items() if key != "settings"} for row in rows]
    settings = [setting for row in rows for setting in row["settings"]]
    return "\n".join([f"# {title}", "", *table(summary), "", *table(settings)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["paper", "small"])
    parser.add_argument("--full-presets", nargs="*", default=["small"], help="presets also timed as whole forward calls")
    parser.add_argument("--frames", type=int, default=128, help="frames per evaluation (128 = 1.024 s at 16 kHz)")
    parser.add_argument("--full-seconds", type=float, default=2.0, help="audio of the whole-forward timings")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repeat, 64 frames, 0.5 s (smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.frames, args.full_seconds = 1, 64, 0.5
    torch.set_num_threads(1)
    rows = [measure(preset, args.frames, args.repeats, preset in args.full_presets, args.full_seconds)
            for preset in args.presets]
    title = (f"SGMSE+ cost, random weights, one thread; {platform.machine()}, {os.cpu_count()} CPUs, load average "
             f"{os.getloadavg()[0]:.2f} at the end (a training job shares the CPU)")
    text = markdown(rows, title)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sgmse_cost.json").write_text(json.dumps({"title": title, "rows": rows}, indent=2) + "\n")
    (args.out / "sgmse_cost.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
