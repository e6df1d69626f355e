"""MossFormer2 inference cost on this CPU: MACs per second, real-time factor, peak memory, bf16 accuracy.

For each preset (random weights; cost does not depend on the values), on a synthetic mixture:

* MACs per second of audio: ``torch.utils.flop_counter.FlopCounterMode`` (conv and matmul; MACs =
  FLOPs / 2) over one pass of ``--mac-seconds`` of audio;
* real-time factor (wall time / audio duration) of one offline pass over ``--seconds`` of audio,
  fp32 on 1 and 2 torch threads, and bf16 (weights and activations in bfloat16) on the same threads,
  with the process CPU seconds per audio second beside it (robust to other load on the machine);
* bf16 accuracy: SI-SDR of the bf16 output against the fp32 output (per source, worst reported), for
  the whole model cast to bfloat16 and for CPU autocast (convolutions and matrix products in bfloat16,
  norms and reductions in float32; timed on the first thread count);
* peak RSS of a fresh one-thread subprocess running one chunk: the model's declared 4 s chunk, and
  the file pipeline's 10 s default (what file inference holds at a time).

    .venv/bin/python -m bench.mossformer2_cost                   # paper and small, 2 s of audio
    .venv/bin/python -m bench.mossformer2_cost --presets tiny --seconds 0.5 --no-rss

Prints a Markdown table and writes ``bench/results/mossformer2_cost.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

from bench.long_file import count_macs
from bench.peak_memory import run_python
from speechkit.models import build_model

RESULTS = Path(__file__).resolve().parent / "results"


def mixture(seconds: float, rate: int, seed: int = 0) -> torch.Tensor:
    """Two harmonic 'talkers' plus a little noise, ``[1, 1, T]``."""
    generator = np.random.default_rng(seed)
    time_axis = np.arange(int(seconds * rate)) / rate
    talkers = [np.sin(2 * np.pi * pitch * time_axis) * (0.5 + 0.5 * np.sin(2 * np.pi * rate_hz * time_axis))
               for pitch, rate_hz in ((140.0, 3.0), (220.0, 4.5))]
    signal = 0.2 * sum(talkers) + 0.01 * generator.standard_normal(time_axis.shape)
    return torch.from_numpy(signal.astype(np.float32))[None, None]


def macs_per_second(model: torch.nn.Module, seconds: float, rate: int) -> float:
    """Multiply-accumulates per second of audio (:func:`bench.long_file.count_macs`)."""
    x = mixture(seconds, rate)
    return count_macs(lambda: model(x)) / seconds


def timed_pass(model: torch.nn.Module, x: torch.Tensor, threads: int) -> tuple[float, float, torch.Tensor]:
    """Wall and process CPU seconds of one pass on ``threads`` threads (after a warm-up pass on a short input).

    On a shared machine the wall time grows with the other load; the CPU time (all threads of this
    process) does much less, and on one thread it is what the pass costs on an idle core.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            model(x[..., : x.shape[-1] // 4])
            start, start_cpu = time.perf_counter(), time.process_time()
            output = model(x)
            return time.perf_counter() - start, time.process_time() - start_cpu, output
    finally:
        torch.set_num_threads(previous)


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Scale-invariant SDR in dB of one signal against another."""
    scale = float(np.dot(estimate, reference) / (np.dot(reference, reference) + 1e-12))
    target = scale * reference
    return float(10 * np.log10(np.sum(target**2) / (np.sum((estimate - target) ** 2) + 1e-20) + 1e-20))


def chunk_peak_rss_mb(preset: str, chunk_seconds: float) -> float:
    """Peak RSS (MiB) of a fresh one-thread subprocess that builds the model and runs one chunk
    (its own memory: :mod:`bench.peak_memory`)."""
    code = (
        "import torch; torch.set_num_threads(1)\n"
        "from speechkit.models import build_model\n"
        f"m = build_model('mossformer2', {preset!r}).eval()\n"
        f"x = 0.1 * torch.randn(1, 1, int({chunk_seconds} * m.sample_rate))\n"
        "with torch.inference_mode(): m(x)\n"
    )
    run = run_python(code, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if run.exit_code != 0:
        raise RuntimeError(f"the peak-memory subprocess failed: {run.stderr.strip().splitlines()[-1:]}")
    return run.peak_rss_mib


def measure(preset: str, seconds: float, mac_seconds: float, threads: list[int], rss: bool) -> dict:
    """Every figure of one preset."""
    torch.manual_seed(0)
    model = build_model("mossformer2", preset).eval()
    rate = model.sample_rate
    x = mixture(seconds, rate)
    row: dict = {"preset": preset, "parameters": model.num_parameters(), "sample_rate": rate,
                 "frames_per_second": rate / model.config.stride, "audio_seconds": seconds,
                 "gmacs_per_second": macs_per_second(model, mac_seconds, rate) / 1e9}
    reference = None
    for count in threads:
        wall, cpu, output = timed_pass(model, x, count)
        row[f"rtf_fp32_{count}t"] = wall / seconds
        row[f"cpu_s_per_s_fp32_{count}t"] = cpu / seconds
        reference = output if reference is None else reference
    half = build_model("mossformer2", preset).eval()
    half.load_state_dict(model.state_dict())
    half = half.to(torch.bfloat16)
    for count in threads:
        wall, cpu, output = timed_pass(half, x.to(torch.bfloat16), count)
        row[f"rtf_bf16_{count}t"] = wall / seconds
        row[f"cpu_s_per_s_bf16_{count}t"] = cpu / seconds
    ours, theirs = output.float()[0, :, 0].numpy(), reference[0, :, 0].numpy()
    row["bf16_vs_fp32_si_sdr_db_worst"] = min(si_sdr(ours[index], theirs[index]) for index in range(ours.shape[0]))
    # autocast: convolutions and matrix products in bfloat16, norms and reductions in float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        wall, cpu, output = timed_pass(model, x, threads[0])
    row[f"rtf_autocast_{threads[0]}t"] = wall / seconds
    row[f"cpu_s_per_s_autocast_{threads[0]}t"] = cpu / seconds
    ours = output.float()[0, :, 0].numpy()
    row["autocast_vs_fp32_si_sdr_db_worst"] = min(si_sdr(ours[index], theirs[index]) for index in range(ours.shape[0]))
    if rss:  # the model's declared chunk, and the 10 s default chunk of the file pipeline
        row["chunk_seconds"] = float(model.inference_spec.chunk_seconds or 4.0)
        row["chunk_peak_rss_mb"] = chunk_peak_rss_mb(preset, row["chunk_seconds"])
        row["chunk10s_peak_rss_mb"] = chunk_peak_rss_mb(preset, 10.0)
    return row


def markdown(rows: list[dict], threads: list[int]) -> str:
    """The results as one Markdown table."""
    columns = ["preset", "parameters", "frames_per_second", "gmacs_per_second"]
    for precision in ("fp32", "bf16"):
        columns += [f"{kind}_{precision}_{count}t" for count in threads for kind in ("rtf", "cpu_s_per_s")]
    columns += [f"rtf_autocast_{threads[0]}t", f"cpu_s_per_s_autocast_{threads[0]}t"]
    columns += ["bf16_vs_fp32_si_sdr_db_worst", "autocast_vs_fp32_si_sdr_db_worst", "chunk_peak_rss_mb",
                "chunk10s_peak_rss_mb"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "")
            cells.append(f"{value:,.3g}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["paper", "small"])
    parser.add_argument("--seconds", type=float, default=2.0, help="audio per timed pass")
    parser.add_argument("--mac-seconds", type=float, default=1.0, help="audio for the MAC count")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-memory subprocess")
    parser.add_argument("--name", default="mossformer2_cost", help="results file stem under bench/results")
    args = parser.parse_args(argv)
    rows = [measure(preset, args.seconds, args.mac_seconds, args.threads, not args.no_rss) for preset in args.presets]
    load = os.getloadavg()
    table = markdown(rows, args.threads)
    header = (f"MossFormer2 cost, random weights, {args.seconds:g} s of audio per pass; {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs, load average {load[0]:.2f} at the end (a training job shares the CPU)")
    print(header + "\n\n" + table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(
        {"rows": rows, "load_average": load, "torch": torch.__version__, "cpu_count": os.cpu_count(),
         "max_rss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(f"# {header}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
