"""MossFormer2 ONNX export: ONNX Runtime against PyTorch on lengths off the attention grid, and ORT cost.

Exports a random-weight preset as the whole-chunk graph (legacy exporter, dynamic length; what
``speechkit export`` writes), lets :func:`speechkit.export.export_onnx` compare ONNX Runtime with
PyTorch at ``--lengths`` samples (relative to ``max(1, peak)``), then times one ONNX Runtime pass over
``--seconds`` of audio on one thread (wall and process CPU seconds per audio second).

    .venv/bin/python -m bench.mossformer2_onnx                      # paper preset, 1.0 s and 1.5007 s
    .venv/bin/python -m bench.mossformer2_onnx --preset tiny --seconds 0.5

Writes ``bench/results/mossformer2_onnx_<preset>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from speechkit.export import export_onnx
from speechkit.models import build_model

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--lengths", type=int, nargs="+", default=[16000, 24011], help="verified lengths (samples)")
    parser.add_argument("--seconds", type=float, default=2.0, help="audio of the timed ONNX Runtime pass")
    args = parser.parse_args(argv)
    import onnxruntime

    torch.manual_seed(0)
    model = build_model("mossformer2", args.preset).eval()
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        result = export_onnx(model, Path(folder) / "mossformer2.onnx", chunk_lengths=args.lengths)
        export_seconds = time.perf_counter() - started
        size_mb = result.onnx_path.stat().st_size / 1e6
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(result.onnx_path), options, providers=["CPUExecutionProvider"])
        x = 0.1 * np.random.default_rng(0).standard_normal((1, 1, int(args.seconds * model.sample_rate)))
        started, started_cpu = time.perf_counter(), time.process_time()
        session.run(None, {"x": x.astype(np.float32)})
        wall, cpu = time.perf_counter() - started, time.process_time() - started_cpu
    row = {
        "preset": args.preset, "verified_lengths": args.lengths, "max_relative_error": result.max_abs_error,
        "tolerance": result.tolerance, "onnx_mb": size_mb, "export_and_verify_seconds": export_seconds,
        "ort_rtf_1t": wall / args.seconds, "ort_cpu_s_per_s_1t": cpu / args.seconds,
        "load_average": os.getloadavg(),
    }
    print(json.dumps(row, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"mossformer2_onnx_{args.preset}.json").write_text(json.dumps(row, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
