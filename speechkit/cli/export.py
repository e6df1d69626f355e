"""``speechkit export``: write a model as ONNX (streaming step graph or whole-chunk graph), verified."""
from __future__ import annotations

import argparse
import logging

from ..errors import ConfigError

_LOG = logging.getLogger("speechkit.export")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="export a model to ONNX (verified against PyTorch)",
        description="Export MODEL (a bundled model name, a .safetensors checkpoint, or ARCH:PRESET for an "
        "untrained build) to ONNX. Streaming models export a one-block graph with explicit state "
        "(--streaming), others a whole-chunk graph that 'speechkit stream' runs on a sliding window "
        "(--chunk SECONDS). ONNX Runtime is checked against PyTorch; golden "
        "input/output arrays are written beside the model.",
    )
    parser.add_argument("model", help="bundled name, checkpoint path, or ARCH:PRESET (untrained)")
    parser.add_argument("-o", "--output", required=True, help="destination .onnx file")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--streaming", action="store_true", default=None, help="export the one-block step graph")
    mode.add_argument(
        "--chunk", dest="chunk_seconds", type=float, nargs="?", const=0.0, default=None, metavar="SECONDS",
        help="export the whole-chunk graph, run live on a sliding window of SECONDS (default 1 s; the "
        "realtime latency is the window); non-streaming models get it without this flag",
    )
    parser.add_argument("--overlap", type=float, default=None, metavar="SECONDS",
                        help="cross-faded overlap of consecutive windows (default: a quarter of the window)")
    parser.add_argument("--hops-per-step", type=int, default=1, help="model blocks per streaming graph run")
    parser.add_argument("--preset", default=None, help="preset for an untrained architecture build")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest relative ORT/PyTorch difference")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.set_defaults(func=run)


def resolve_model(spec: str, preset: str | None = None):  # -> SpeechModel
    """The model named by a CLI ``spec``: ``arch:preset`` (untrained), else a checkpoint path or bundled name.

    ``--preset`` with a bare architecture name means the same as ``arch:preset``.
    """
    from .. import models
    from ..checkpoint import load_checkpoint
    from ..pretrained import resolve_model as resolve_checkpoint

    architecture, separator, spec_preset = spec.partition(":")
    chosen = spec_preset if separator else preset
    if architecture in models.model_names():
        presets = ", ".join(sorted(models.get_model_class(architecture).presets))
        if not chosen or chosen not in models.get_model_class(architecture).presets:
            problem = f"has no preset {chosen!r}" if chosen else "is an architecture without trained weights"
            raise ConfigError(
                f"{architecture} {problem}: export an untrained build as ARCH:PRESET (e.g. {architecture}:tiny; "
                f"presets: {presets}), or pass a checkpoint path or bundled model name"
            )
        _LOG.warning("exporting an untrained %s (preset %s): its output is meaningless", architecture, chosen)
        return models.build_model(architecture, chosen).eval()
    if separator:
        raise ConfigError(
            f"unknown architecture {architecture!r} in ARCH:PRESET (known: {', '.join(models.model_names())})"
        )
    return load_checkpoint(resolve_checkpoint(spec))


def run(args: argparse.Namespace) -> int:
    """Run ``speechkit export``."""
    from ..export import export_onnx

    model = resolve_model(args.model, args.preset)
    chunk = args.chunk_seconds
    streaming = args.streaming if chunk is None else False
    result = export_onnx(
        model, args.output, streaming=streaming, hops_per_step=args.hops_per_step, tolerance=args.tolerance,
        overwrite=args.force, chunk_seconds=chunk or None, overlap_seconds=args.overlap,
    )
    meta = result.metadata
    score = meta.get("graph_kind") == "score"
    kind = "streaming step graph" if result.streaming else "score network" if score else "whole-chunk graph"
    print(f"wrote {result.onnx_path} ({kind}, {meta['model_name']}, {meta['sample_rate']} Hz)")
    rate = meta["sample_rate"]
    if score:
        schedule = meta["schedule"]
        print(
            f"inputs {', '.join(meta['input_names'])} ({meta['score_domain']}, shape {meta['input_shape']}); "
            f"sampler {schedule['sde']}, {schedule['num_steps']} steps, seed {schedule['seed']}; realtime window "
            f"{meta['chunk_length']} samples, overlap {meta['overlap_length']} (run by realtime.chunk)"
        )
    elif not result.streaming:
        print(
            f"realtime window {meta['chunk_length']} samples, overlap {meta['overlap_length']}, hop "
            f"{meta['hop_length']}: algorithmic latency {meta['algorithmic_latency']} samples "
            f"({1000.0 * meta['algorithmic_latency'] / rate:.2f} ms, the window)"
        )
    if result.streaming:
        print(
            f"hop {meta['block_size']} samples, stream delay {meta['stream_delay']}, algorithmic latency "
            f"{meta['algorithmic_latency']} samples ({1000.0 * meta['algorithmic_latency'] / rate:.2f} ms), "
            f"{len(meta['state_names'])} state tensors"
        )
    print(f"ONNX Runtime vs PyTorch: max relative error {result.max_abs_error:.3g} (tolerance {result.tolerance:.3g})")
    print(f"golden data: {result.golden_path}")
    return 0
