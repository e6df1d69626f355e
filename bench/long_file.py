"""Long-file benchmark: peak memory and real-time factor of ``speechkit enhance`` on a synthetic file.

For each requested duration a synthetic 16 kHz mono file is streamed to disk (never held in
memory), a random-weight model of the requested preset is saved as a checkpoint, and
``speechkit enhance`` runs on it in a subprocess. Peak RSS of that subprocess comes from
``os.wait4`` (``ru_maxrss``); real-time factor is wall time / audio duration. Memory that does not
grow between the short and the long run shows the bounded-memory design works.

    .venv/bin/python bench/long_file.py                       # 1 and 30 minutes, enhance_causal_16k
    .venv/bin/python bench/long_file.py --minutes 0.5 5 --preset tiny

Prints a Markdown table and writes ``bench/results/long_file.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

from speechkit.checkpoint import save_checkpoint
from speechkit.models import build_model

RESULTS = Path(__file__).resolve().parent / "results" / "long_file.json"
RATE = 16000
BLOCK_SECONDS = 10


def synthesize(path: Path, seconds: float, seed: int = 0) -> None:
    """Stream a speech-like signal (modulated harmonics) plus noise to ``path`` in 10 s blocks."""
    rng = np.random.default_rng(seed)
    total = int(seconds * RATE)
    with soundfile.SoundFile(str(path), "w", RATE, 1, subtype="PCM_16") as handle:
        for start in range(0, total, BLOCK_SECONDS * RATE):
            time_axis = np.arange(start, min(total, start + BLOCK_SECONDS * RATE)) / RATE
            pitch = 110 + 30 * np.sin(2 * np.pi * 0.1 * time_axis)
            phase = 2 * np.pi * np.cumsum(pitch) / RATE
            voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
            envelope = np.clip(np.sin(2 * np.pi * 3.0 * time_axis), 0, None)
            block = 0.2 * envelope * voiced / 2.6 + 0.03 * rng.standard_normal(time_axis.shape)
            handle.write(block.astype(np.float32))


def run_enhance(source: Path, output: Path, checkpoint: Path, chunk_seconds: float) -> tuple[float, float, int]:
    """Run the CLI in a subprocess; returns (wall seconds, peak RSS MiB, exit code)."""
    command = [
        sys.executable, "-c", "from speechkit.cli import run; run()", "enhance", str(source), "-o", str(output),
        "--model", str(checkpoint), "--force", "--no-progress", "--chunk-seconds", str(chunk_seconds),
    ]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.stderr.write(process.stderr.read().decode())
    process.stderr.close()
    return wall, usage.ru_maxrss / 1024.0, process.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 30.0])
    parser.add_argument("--preset", default="enhance_causal_16k", help="conv_tasnet preset (random weights)")
    parser.add_argument("--chunk-seconds", type=float, default=10.0)
    parser.add_argument("--workdir", type=Path, default=None, help="where the big files go (default: a temp dir)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON output path")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        scratch = Path(scratch)
        torch.manual_seed(0)
        model = build_model("conv_tasnet", args.preset)
        if model.sample_rate != RATE or model.num_sources != 1:  # e.g. "tiny": same layers, 16 kHz, 1 source
            model = build_model("conv_tasnet", args.preset, sample_rate=RATE, n_src=1)
        checkpoint = save_checkpoint(model, scratch / "model.safetensors")
        for minutes in args.minutes:
            source = scratch / f"long_{minutes:g}min.wav"
            synthesize(source, minutes * 60)
            wall, peak_mib, code = run_enhance(source, scratch / "out.wav", checkpoint, args.chunk_seconds)
            output_frames = soundfile.info(str(scratch / "out.wav")).frames if code == 0 else 0
            rows.append({
                "minutes": minutes,
                "input_mib": source.stat().st_size / 2**20,
                "wall_seconds": wall,
                "real_time_factor": wall / (minutes * 60),
                "peak_rss_mib": peak_mib,
                "exit_code": code,
                "output_frames_match": output_frames == int(minutes * 60 * RATE),
            })
            source.unlink()
            (scratch / "out.wav").unlink(missing_ok=True)

    report = {
        "benchmark": "long_file",
        "model": f"conv_tasnet/{args.preset} at {RATE} Hz (random weights)",
        "parameters": model.num_parameters(),
        "chunk_seconds": args.chunk_seconds,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "load_average_at_end": os.getloadavg(),
        "rows": rows,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2) + "\n")
    print(f"conv_tasnet/{args.preset} (random weights, {model.num_parameters() / 1e6:.2f} M params), "
          f"chunk {args.chunk_seconds:g} s, {os.cpu_count()} CPU(s)\n")
    print("| audio (min) | input (MiB) | wall (s) | RTF | peak RSS (MiB) | exit | length ok |")
    print("|---:|---:|---:|---:|---:|---:|:---:|")
    for row in rows:
        print(f"| {row['minutes']:g} | {row['input_mib']:.1f} | {row['wall_seconds']:.1f} | "
              f"{row['real_time_factor']:.3f} | {row['peak_rss_mib']:.0f} | {row['exit_code']} | "
              f"{'yes' if row['output_frames_match'] else 'NO'} |")
    print(f"\nwrote {args.results}")


if __name__ == "__main__":
    main()
