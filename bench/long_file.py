"""Long-file benchmark: peak memory and real-time factor of ``speechkit enhance`` / ``separate`` on a
synthetic file, and the model's multiply-accumulates per second of audio.

For each requested duration a synthetic 16 kHz mono file is streamed to disk (never held in
memory), a random-weight model of the requested registered model and preset is saved as a
checkpoint, and ``speechkit enhance`` (enhancement models) or ``speechkit separate`` (separation
models) runs on it in a subprocess with the model's declared chunk and overlap (or
``--chunk-seconds`` / ``--overlap-seconds``). Peak RSS is that subprocess's own ``VmHWM``
(:mod:`bench.peak_memory`; its ``ru_maxrss`` would include this process's peak, e.g. that of the
``--macs`` pass); real-time factor is wall time / audio duration. Memory that does not grow between
the short and the long run shows the bounded-memory design works.

``--macs SECONDS...`` also counts the model's multiply-accumulates (convolutions and matrix
products, :class:`torch.utils.flop_counter.FlopCounterMode`, MACs = FLOPs / 2) for one forward pass
over inputs of those lengths, reported per second of audio (a model with attention over all frames
costs more per second on longer inputs).

    .venv/bin/python -m bench.long_file                       # 1 and 30 minutes, conv_tasnet enhance_causal_16k
    .venv/bin/python -m bench.long_file --minutes 0.5 5 --preset tiny
    .venv/bin/python -m bench.long_file --model tiger --preset small --minutes 1 10 --macs 1 6 \
        --results bench/results/long_file_tiger_small.json

Prints a Markdown table and writes ``bench/results/long_file.json`` (or ``--results``) and the
table beside it as ``.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile
import torch

from bench.peak_memory import run_python
from speechkit.checkpoint import save_checkpoint
from speechkit.models import build_model
from speechkit.models.spec import parse_option_strings

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


def run_enhance(source: Path, output: Path, checkpoint: Path, chunk_seconds: float | None,
                overlap_seconds: float | None = None, command_name: str = "enhance",
                options: list[str] | None = None) -> tuple[float, float, int, float]:
    """Run the CLI (``enhance`` or ``separate``) in a fresh subprocess (:func:`bench.peak_memory.run_python`).

    Returns (wall seconds, peak RSS MiB of the subprocess's own memory, exit code, CPU seconds (user +
    system) of the subprocess): on a shared machine the CPU time shows the cost the wall time hides
    behind other jobs.
    """
    arguments = [command_name, str(source), "-o", str(output), "--model", str(checkpoint), "--force", "--no-progress"]
    if chunk_seconds is not None:  # None: the model's declared chunking
        arguments += ["--chunk-seconds", str(chunk_seconds)]
    if overlap_seconds is not None:
        arguments += ["--overlap-seconds", str(overlap_seconds)]
    for option in options or []:
        arguments += ["--option", option]
    run = run_python("from speechkit.cli import run; run()", arguments)
    if run.exit_code != 0:
        sys.stderr.write(run.stderr)
    return run.wall_seconds, run.peak_rss_mib, run.exit_code, run.cpu_seconds


def count_macs(call: Callable[[], object]) -> float:
    """Multiply-accumulates of ``call()`` without gradients: FLOPs / 2 of what
    :class:`torch.utils.flop_counter.FlopCounterMode` counts (conv, matmul, einsum). The one MAC
    counter of the benchmarks (``bench.mossformer2_cost`` and ``bench.sgmse_cost`` use it too)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        call()
    return counter.get_total_flops() / 2


def measure_macs(model: torch.nn.Module, seconds: float, sample_rate: int) -> tuple[float, float]:
    """Multiply-accumulates of one forward pass over ``seconds`` of audio (:func:`count_macs`),
    and the wall time of a second, uncounted pass (one process, the current torch threads)."""
    x = 0.1 * torch.randn(1, int(getattr(model, "num_input_channels", 1)), int(round(seconds * sample_rate)))
    macs = count_macs(lambda: model(x))
    with torch.inference_mode():
        started = time.perf_counter()
        model(x)
        wall = time.perf_counter() - started
    return macs, wall


def _bench_model(name: str, preset: str) -> torch.nn.Module:
    """The random-weight model to run: conv_tasnet presets at 16 kHz with one source (enhance) as before."""
    torch.manual_seed(0)
    model = build_model(name, preset)
    if name == "conv_tasnet" and model.sample_rate != RATE:
        model = build_model(name, preset, sample_rate=RATE, n_src=1)  # e.g. "tiny": same layers, 16 kHz, 1 source
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="*", default=[1.0, 30.0])
    parser.add_argument("--model", default="conv_tasnet", help="registered model name (random weights)")
    parser.add_argument("--preset", default="enhance_causal_16k", help="preset of --model")
    parser.add_argument("--chunk-seconds", type=float, default=None,
                        help="chunk length (default: the model's declared chunk, else 10 s)")
    parser.add_argument("--overlap-seconds", type=float, default=None,
                        help="chunk overlap (default: the model's declared overlap, else the CLI default)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="model inference option (e.g. iterations=2), for the MACs count and the CLI run")
    parser.add_argument("--macs", type=float, nargs="*", default=[], metavar="SECONDS",
                        help="also count MACs per second of audio for inputs of these lengths")
    parser.add_argument("--workdir", type=Path, default=None, help="where the big files go (default: a temp dir)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON output path")
    args = parser.parse_args()

    model = _bench_model(args.model, args.preset)
    model.set_options(parse_option_strings(args.option))
    if model.sample_rate != RATE:
        parser.error(f"{args.model}/{args.preset} runs at {model.sample_rate} Hz; this benchmark writes {RATE} Hz files")
    spec = model.inference_spec
    streaming = spec.mode == "stream"
    chunk_seconds = args.chunk_seconds or (None if streaming else spec.chunk_seconds) or 10.0
    overlap_seconds = args.overlap_seconds if args.overlap_seconds is not None else (
        None if streaming else spec.overlap_seconds)
    command_name = "separate" if model.task == "separation" else "enhance"
    macs = []
    for seconds in args.macs:
        total, wall = measure_macs(model, seconds, model.sample_rate)
        macs.append({"input_seconds": seconds, "macs": total, "gmacs_per_second": total / seconds / 1e9,
                     "forward_seconds": wall, "forward_rtf": wall / seconds})

    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        scratch = Path(scratch)
        checkpoint = save_checkpoint(model, scratch / "model.safetensors")
        for minutes in args.minutes:
            source = scratch / f"long_{minutes:g}min.wav"
            synthesize(source, minutes * 60)
            output = scratch / ("out.wav" if command_name == "enhance" else "out_{source}.wav")  # separate: a pattern
            wall, peak_mib, code, cpu = run_enhance(source, output, checkpoint, chunk_seconds, overlap_seconds, command_name,
                                               args.option)
            written = sorted(scratch.glob("out*.wav"))
            output_frames = soundfile.info(str(written[0])).frames if code == 0 and written else 0
            rows.append({
                "minutes": minutes,
                "input_mib": source.stat().st_size / 2**20,
                "wall_seconds": wall,
                "real_time_factor": wall / (minutes * 60),
                "cpu_seconds": cpu,
                "cpu_real_time_factor": cpu / (minutes * 60),
                "peak_rss_mib": peak_mib,
                "exit_code": code,
                "output_frames_match": output_frames == int(minutes * 60 * RATE),
                "output_files": len(written) if code == 0 else 0,
            })
            source.unlink()
            for path in written:
                path.unlink(missing_ok=True)

    report = {
        "benchmark": "long_file",
        "model": f"{args.model}/{args.preset} at {RATE} Hz (random weights)",
        "command": command_name,
        "options": dict(model.options),
        "parameters": model.num_parameters(),
        "chunk_seconds": chunk_seconds,
        "overlap_seconds": overlap_seconds,
        "macs": macs,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "load_average_at_end": os.getloadavg(),
        "rows": rows,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2) + "\n")
    overlap_text = "" if overlap_seconds is None else f", overlap {overlap_seconds:g} s"
    options_text = "".join(f", {key}={value}" for key, value in model.options.items())
    lines = [
        f"{args.model}/{args.preset}{options_text} (random weights, {model.num_parameters() / 1e6:.4f} M params), speechkit "
        f"{command_name}, chunk {chunk_seconds:g} s{overlap_text}, {os.cpu_count()} CPU(s), torch threads "
        f"{torch.get_num_threads()}, load average at end {os.getloadavg()[0]:.1f}",
        "",
    ]
    if rows:
        lines += ["| audio (min) | input (MiB) | wall (s) | RTF | CPU (s) | CPU RTF | peak RSS (MiB) | exit | length ok |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
        lines += [f"| {row['minutes']:g} | {row['input_mib']:.1f} | {row['wall_seconds']:.1f} | "
                  f"{row['real_time_factor']:.3f} | {row['cpu_seconds']:.1f} | {row['cpu_real_time_factor']:.3f} | "
                  f"{row['peak_rss_mib']:.0f} | {row['exit_code']} | "
                  f"{'yes' if row['output_frames_match'] else 'NO'} |" for row in rows]
        lines.append("")
    if macs:
        lines += ["| input (s) | GMACs | GMACs per second of audio | one forward (s) | its RTF |",
                  "|---:|---:|---:|---:|---:|"]
        lines += [f"| {entry['input_seconds']:g} | {entry['macs'] / 1e9:.2f} | {entry['gmacs_per_second']:.2f} | "
                  f"{entry['forward_seconds']:.2f} | {entry['forward_rtf']:.2f} |" for entry in macs]
        lines.append("")
    text = "\n".join(lines)
    args.results.with_suffix(".md").write_text(text)
    print(text)
    print(f"wrote {args.results} and {args.results.with_suffix('.md')}")


if __name__ == "__main__":
    main()
