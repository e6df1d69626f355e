"""``speechkit convert``: import an official checkpoint into speechkit's ``.safetensors`` format.

::

    speechkit convert asteroid ConvTasNet_Libri2Mix_sepclean_8k.pth -o conv_tasnet_libri2mix.safetensors

The source file is read with ``torch.load(weights_only=True)`` (nothing but tensors and plain
containers is unpickled) by the importer in :mod:`speechkit.convert`; every tensor must land on the
speechkit model, otherwise the command fails with one line naming what did not match. The
converted checkpoint records its provenance (source file, original model arguments and infos).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError, OutputExistsError
from . import EXIT_OK

#: source formats offered on the command line (the keys of speechkit.convert.CONVERTERS;
#: repeated so that building the parser does not import torch)
SOURCES = ("asteroid", "clearervoice", "deftan2", "sgmse", "tiger")
CHECKPOINT_SUFFIX = ".safetensors"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``convert`` command."""
    parser = subparsers.add_parser(
        "convert",
        help="import an official checkpoint (asteroid Conv-TasNet) as a speechkit .safetensors file",
        description=(
            "Convert a checkpoint of another toolkit into a speechkit checkpoint usable by enhance, separate, "
            "export and the Python API. asteroid: a ConvTasNet .pth (Zenodo) or pytorch_model.bin (Hugging Face)."
        ),
    )
    parser.add_argument("source", choices=SOURCES, help="format of the input checkpoint")
    parser.add_argument("input", metavar="IN", help="checkpoint file to convert (never modified)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.safetensors", help="destination file")
    parser.add_argument(
        "--framing", choices=("asteroid", "causal"), default=None,
        help="asteroid checkpoints only. asteroid (default): reproduce asteroid's output exactly, offline "
        "(chunked) only; causal: speechkit's framing, so a causal model streams, but outputs differ near both ends",
    )
    parser.add_argument(
        "--sample-rate", type=int, default=None, metavar="HZ",
        help="clearervoice checkpoints only: the model's rate, which the file does not record (default 16000, "
        "MossFormer2_SS_16K; 8000 for the 8 kHz model)",
    )
    parser.add_argument(
        "--weights", choices=("ema", "raw"), default=None,
        help="sgmse checkpoints only: ema (default) takes the exponential-moving-average weights the official "
        "code enhances with; raw takes the non-EMA training weights",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``speechkit convert``."""
    from ..convert import convert_checkpoint

    source, output = Path(args.input), Path(args.output)
    if output.suffix.lower() != CHECKPOINT_SUFFIX:
        raise ConfigError(f"the output {output} must be a {CHECKPOINT_SUFFIX} file")
    if output.exists() and output.resolve() == source.resolve():
        raise ConfigError(f"refusing to write {output}: it is the input file (choose another output)")
    if output.is_dir():
        raise ConfigError(f"the output {output} is a directory; give a {CHECKPOINT_SUFFIX} file name")
    if output.exists() and not args.force:
        raise OutputExistsError(f"{output} exists; pass --force to overwrite it")
    if not output.parent.is_dir():
        raise ConfigError(f"the output folder {output.parent} does not exist")
    if args.source != "asteroid" and args.framing is not None:
        raise ConfigError(f"--framing applies to asteroid checkpoints only, not {args.source}")
    options = {"framing": args.framing or "asteroid"} if args.source == "asteroid" else {}
    if getattr(args, "sample_rate", None) is not None:
        if args.source != "clearervoice":
            raise ConfigError(f"--sample-rate applies to clearervoice checkpoints only, not {args.source}")
        options["sample_rate"] = args.sample_rate
    if getattr(args, "weights", None) is not None:
        if args.source != "sgmse":
            raise ConfigError(f"--weights applies to sgmse checkpoints only, not {args.source}")
        options["weights"] = args.weights
    model = convert_checkpoint(args.source, source, out_path=output, overwrite=args.force, **options)
    summary = model.describe()
    streaming = (
        f"streams with {summary['algorithmic_latency_ms']:.2f} ms latency"
        if summary["streaming"] else "offline (non-causal)" if not model.causal
        else "offline (asteroid framing; --framing causal streams)"
    )
    print(
        f"wrote {output}: {summary['name']} {summary['task']}, {summary['sources']} source(s), "
        f"{summary['sample_rate']} Hz, {summary['parameters']:,} parameters, {streaming}"
    )
    if args.source == "deftan2":
        from ..convert.deftan2 import describe_inferred

        print(describe_inferred(model.config))
    return EXIT_OK
