"""Training-step time of the echo canceller: ``python -m bench.aec_train_step [--preset paper]``.

One Adam step of ``complex_d3net_aec`` (forward with the echo estimate, the recipe's echo-aware
loss, backward, gradient clipping, update) on random ``[batch, 2, seconds * 16 kHz]`` input, timed
after warm-up steps. Prints a Markdown table and writes ``bench/results/aec_train_step.json`` with
the machine load, so a number measured on a shared machine can be judged.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from recipes.trainer import training_loss
from speechkit.models import build_model


def measure(preset: str, batch_size: int, seconds: float, steps: int, warmup: int, threads: int) -> dict:
    """Seconds per training step (median and all) of ``preset`` on ``batch_size`` x ``seconds`` items."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model("complex_d3net_aec", preset).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = training_loss("aec", echo_weight=0.1)
    samples = int(round(seconds * model.sample_rate))
    mixture = 0.1 * torch.randn(batch_size, 2, samples)  # [B, 2, T]
    targets = 0.05 * torch.randn(batch_size, 1, 1, samples)  # [B, 1, 1, T]
    echo = 0.05 * torch.randn(batch_size, 1, samples)  # [B, 1, T]
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        estimate, echo_estimate = model(mixture, return_echo=True)  # [B, 1, 1, T] each
        loss = loss_fn(estimate, targets, mixture, echo_estimate, echo)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return {
        "preset": preset,
        "parameters": model.num_parameters(),
        "batch_size": batch_size,
        "seconds_per_item": seconds,
        "threads": threads,
        "step_seconds": times,
        "median_step_seconds": statistics.median(times),
        "audio_seconds_per_wall_second": batch_size * seconds / statistics.median(times),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results/aec_train_step.json")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    result = measure(args.preset, args.batch_size, args.seconds, args.steps, args.warmup, args.threads)
    result.update(
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        machine={"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                 "load_average_before": load_before, "load_average_after": os.getloadavg()},
        versions={"torch": torch.__version__},
    )
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print("| preset | params | batch | s/item | threads | median s/step | audio s per wall s | load (1 min) |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {result['preset']} | {result['parameters']:,} | {args.batch_size} | {args.seconds} | {args.threads} | "
        f"{result['median_step_seconds']:.2f} | {result['audio_seconds_per_wall_second']:.2f} | "
        f"{load_before[0]:.1f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
