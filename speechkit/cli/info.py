"""``speechkit info``: the installation (versions, devices, extras, bundled models) or a file.

``speechkit info FILE...`` describes audio files (rate, channels, length, peak level, non-finite
and clipped samples) and speechkit checkpoints (model, config, provenance).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import SpeechkitError
from . import EXIT_FAILED, EXIT_OK

#: extra -> modules it provides (checked with importlib.util.find_spec, nothing is imported)
EXTRA_MODULES = MappingProxyType({
    "onnx": ("onnx", "onnxruntime"),
    "realtime": ("onnxruntime", "sounddevice"),
    "eval": ("pesq", "pystoi", "scipy"),
    "train": ("pyroomacoustics", "scipy", "yaml"),
    "plot": ("matplotlib",),
})


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``info`` command."""
    parser = subparsers.add_parser("info", help="describe the installation, an audio file or a checkpoint")
    parser.add_argument("files", nargs="*", metavar="FILE", help="audio files or .safetensors checkpoints")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def installation_info() -> dict[str, Any]:
    """Versions, compute devices, installed extras and bundled models."""
    import torch

    from .._version import __version__
    from ..pretrained import DEFAULT_MODEL, DEFAULT_MODELS, bundled_echo_canceller, bundled_models

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{index} ({torch.cuda.get_device_name(index)})" for index in range(torch.cuda.device_count())]
    extras = {
        extra: all(importlib.util.find_spec(module) is not None for module in modules)
        for extra, modules in EXTRA_MODULES.items()
    }
    echo_canceller = bundled_echo_canceller()
    defaults = {**DEFAULT_MODELS, **({"aec": echo_canceller.stem} if echo_canceller is not None else {})}
    models = []
    for bundled in bundled_models():
        entry: dict[str, Any] = {"name": bundled.name, "path": str(bundled.path), "default": bundled.name in defaults.values()}
        try:
            metadata = bundled.metadata()
            entry.update(model=metadata.get("model"), task=metadata.get("task"), sample_rate=metadata.get("sample_rate"))
            data = (metadata.get("provenance") or {}).get("data") or {}
            entry["training_data_licenses"] = dict(data.get("licenses") or {})
            entry["card"] = str(bundled.card) if bundled.card else None
        except SpeechkitError as error:
            entry["error"] = str(error)
        models.append(entry)
    return {
        "speechkit": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "devices": devices,
        "extras": extras,
        "default_model": DEFAULT_MODEL,
        "default_models": defaults,
        "bundled_models": models,
    }


def file_info(path: Path) -> dict[str, Any]:
    """Facts about an audio file or a checkpoint; raises a SpeechkitError if it is neither."""
    if path.suffix.lower() == ".safetensors":
        from ..checkpoint import read_metadata

        return {"file": str(path), "kind": "checkpoint", **read_metadata(path)}
    import numpy as np

    from ..audio import CLIP_LEVEL, iter_blocks, open_audio

    peak = 0.0
    sum_squares = 0.0
    nonfinite = 0
    clipped = 0
    with open_audio(path) as handle:
        rate, channels, frames = int(handle.samplerate), int(handle.channels), int(handle.frames)
        audio_format, subtype = str(handle.format), str(handle.subtype)
        for block in iter_blocks(handle, max(1, rate)):
            finite = np.isfinite(block)
            nonfinite += int((~finite).sum())
            values = np.abs(np.where(finite, block, 0.0))
            peak = max(peak, float(values.max()))
            sum_squares += float(np.square(values, dtype=np.float64).sum())
            clipped += int((values >= CLIP_LEVEL).sum())
    rms = (sum_squares / max(frames * channels, 1)) ** 0.5
    return {
        "file": str(path),
        "kind": "audio",
        "format": audio_format,
        "subtype": subtype,
        "sample_rate": rate,
        "channels": channels,
        "frames": frames,
        "duration_seconds": frames / rate,
        "peak": peak,
        "peak_dbfs": None if peak == 0 else 20 * float(np.log10(peak)),
        "rms_dbfs": None if rms == 0 else 20 * float(np.log10(rms)),
        "nonfinite_samples": nonfinite,
        "clipped_samples": clipped,
    }


def run(args: argparse.Namespace) -> int:
    """Run ``speechkit info``."""
    if not args.files:
        info = installation_info()
        if args.json:
            print(json.dumps(info, indent=2))
            return EXIT_OK
        print(f"speechkit {info['speechkit']} (python {info['python']}, torch {info['torch']})")
        print(f"devices: {', '.join(info['devices'])}")
        print("extras: " + ", ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in info["extras"].items()))
        if info["bundled_models"]:
            print("bundled models:")
            for model in info["bundled_models"]:
                marker = " (default)" if model["default"] else ""
                detail = model.get("error") or f"{model['model']}, {model['task']}, {model['sample_rate']} Hz"
                print(f"  {model['name']}{marker}: {detail}")
                licenses = model.get("training_data_licenses") or {}
                if licenses:
                    print("    training data: " + "; ".join(f"{corpus} ({license})" for corpus, license in sorted(licenses.items())))
                if model.get("card"):
                    print(f"    model card: {model['card']}")
        else:
            print(f"bundled models: none installed (default name: {info['default_model']})")
        return EXIT_OK
    failures = 0
    reports = []
    for name in args.files:
        try:
            reports.append(file_info(Path(name)))
        except SpeechkitError as error:
            print(f"speechkit info: {error}", file=sys.stderr)
            failures += 1
    if args.json:
        print(json.dumps(reports, indent=2))
    else:
        for report in reports:
            _print_report(report)
    return EXIT_FAILED if failures else EXIT_OK


def _print_report(report: dict[str, Any]) -> None:
    print(report["file"])
    if report["kind"] == "checkpoint":
        print(f"  checkpoint: {report['model']} ({report.get('task')}), {report.get('sample_rate')} Hz, "
              f"speechkit {report.get('speechkit_version')}")
        print(f"  config: {json.dumps(report['config'], sort_keys=True)}")
        if report.get("provenance"):
            print(f"  provenance: {json.dumps(report['provenance'], sort_keys=True)}")
        return
    peak = "silent" if report["peak_dbfs"] is None else f"{report['peak_dbfs']:.1f} dBFS"
    rms = "silent" if report["rms_dbfs"] is None else f"{report['rms_dbfs']:.1f} dBFS"
    print(f"  {report['format']} {report['subtype']}, {report['sample_rate']} Hz, {report['channels']} channel(s), "
          f"{report['frames']} frames ({report['duration_seconds']:.3f} s)")
    print(f"  peak {peak}, rms {rms}, non-finite samples {report['nonfinite_samples']}, "
          f"clipped samples {report['clipped_samples']}")
