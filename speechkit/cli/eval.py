"""``speechkit eval``: score estimates against references, or a model on a test set.

Folders of files (matched by relative path)::

    speechkit eval --references clean/ --estimates enhanced/ [--mixtures noisy/] [--csv scores.csv] [--json]

Separation: the references hold one sub-folder per source (``s1/``, ``s2/`` ...); the estimates
either the same sub-folders or files ``<name>_s1.wav``, ``<name>_s2.wav`` next to each other (what
``speechkit separate`` writes). The best source permutation is chosen per file (SI-SDR).

A model on a test set (a fixed-set folder with ``index.json`` + ``items.jsonl``, as the recipes
write them, or ``--mixtures`` + ``--references`` folders)::

    speechkit eval --model best.safetensors --test-set data_cache/fixed/enhance_16k_test

No reference (non-intrusive DNSMOS P.835 through ``speechmos``)::

    speechkit eval --estimates enhanced/ --dnsmos

Echo cancellation: ``--metrics erle`` with ``--mixtures`` (microphone signals): ERLE over the samples
where the near-end reference is silent.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AudioError, ConfigError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
SOURCE_FOLDER = re.compile(r"^s(\d+)$")
SOURCE_SUFFIX = "_s{index}"
#: frame length (seconds) and level below which the near-end reference counts as silent (ERLE)
SILENCE_FRAME_SECONDS = 0.02
SILENCE_LEVEL = 1e-4


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="score estimates against references (SI-SDR(i), SDR, PESQ, STOI, ERLE, DNSMOS)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--references", type=Path, help="folder of clean references (sub-folders s1/, s2/ for separation)")
    parser.add_argument("--estimates", type=Path, help="folder of processed files")
    parser.add_argument("--mixtures", type=Path, help="folder of unprocessed inputs (for SI-SDRi, ERLE, or --model)")
    parser.add_argument("--model", help="checkpoint file or bundled model name to run on the test set")
    parser.add_argument("--test-set", type=Path, help="fixed-set folder (index.json + items.jsonl) for --model")
    parser.add_argument(
        "--metrics",
        default="si_sdr,si_sdri,sdr,pesq_wb,pesq_nb,stoi,estoi",
        help="comma-separated: si_sdr, si_sdri, sdr, level_db (estimate over reference level), pesq_wb, pesq_nb, "
        "stoi, estoi, erle (default: all but level_db and erle)",
    )
    parser.add_argument("--dnsmos", action="store_true", help="add non-intrusive DNSMOS P.835 (needs speechmos)")
    parser.add_argument("--csv", type=Path, help="write one row per file to this CSV")
    parser.add_argument("--json", action="store_true", help="print {rows, summary} as JSON instead of a table")
    parser.add_argument("--device", default="cpu", help="device for --model (cpu, cuda, auto)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N items")
    parser.add_argument(
        "--attenuation-limit", type=float, default=None, metavar="DB",
        help="run --model with this attenuation limit (input added back DB dB down; enhancement only)",
    )
    parser.set_defaults(func=run)


# --------------------------------------------------------------------------------------- inputs
def _audio_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file())


def _source_folders(folder: Path) -> list[Path]:
    matches = [(int(match.group(1)), path) for path in folder.iterdir() if path.is_dir() and (match := SOURCE_FOLDER.match(path.name))]
    return [path for _, path in sorted(matches)]


def _read(path: Path) -> tuple[np.ndarray, int]:
    from ..audio import read_audio

    return read_audio(path)  # [C, T], rate


def _stack_sources(paths: list[Path]) -> tuple[np.ndarray, int]:
    """Read one file per source -> ``[S, C, T]`` (all at one rate, trimmed to the shortest)."""
    signals, rates = zip(*(_read(path) for path in paths))
    if len(set(rates)) != 1:
        raise AudioError(f"The source files {', '.join(map(str, paths))} have different sample rates.")
    length = min(signal.shape[-1] for signal in signals)
    return np.stack([signal[:, :length] for signal in signals]), rates[0]  # -> [S, C, T]


def _estimate_paths(estimates: Path, relative: Path, sources: int) -> list[Path]:
    if sources == 1:
        return [estimates / relative]
    by_folder = [estimates / f"s{index + 1}" / relative for index in range(sources)]
    if all(path.is_file() for path in by_folder):
        return by_folder
    return [
        estimates / relative.parent / f"{relative.stem}{SOURCE_SUFFIX.format(index=index + 1)}{relative.suffix}"
        for index in range(sources)
    ]


def folder_items(references: Path, estimates: Path, mixtures: Path | None) -> list[dict[str, Any]]:
    """Pair reference, estimate and (optional) mixture files by relative path.

    Returns items ``{"name", "reference_paths", "estimate_paths", "mixture_path"}``.
    """
    for folder, flag in ((references, "--references"), (estimates, "--estimates"), (mixtures, "--mixtures")):
        if folder is not None and not folder.is_dir():
            raise ConfigError(f"{flag} {folder} is not a folder.")
    source_folders = _source_folders(references)
    base = source_folders[0] if source_folders else references
    sources = max(1, len(source_folders))
    items = []
    for reference in _audio_files(base):
        relative = reference.relative_to(base)
        reference_paths = [folder / relative for folder in source_folders] if source_folders else [reference]
        estimate_paths = _estimate_paths(estimates, relative, sources)
        missing = [str(path) for path in [*reference_paths, *estimate_paths] if not path.is_file()]
        if missing:
            raise AudioError(f"No matching file for {relative}: {', '.join(missing)} is missing.")
        mixture_path = None
        if mixtures is not None:
            mixture_path = mixtures / relative
            if not mixture_path.is_file():
                raise AudioError(f"No mixture for {relative}: {mixture_path} is missing.")
        items.append({"name": str(relative), "reference_paths": reference_paths, "estimate_paths": estimate_paths,
                      "mixture_path": mixture_path})
    if not items:
        raise AudioError(f"{base} holds no audio files ({', '.join(AUDIO_SUFFIXES)}).")
    return items


def fixed_set_items(root: Path) -> tuple[list[dict[str, Any]], int]:
    """Items of a fixed-set folder (``index.json``, ``items.jsonl``, one WAV per tensor) and its rate.

    Each item: ``{"name", "mixture", "targets", "root", "meta"}`` (``meta``: the generator's record
    of the item, e.g. its SNR or room; empty when the set stores none).
    """
    index_path, items_path = root / "index.json", root / "items.jsonl"
    if not index_path.is_file() or not items_path.is_file():
        raise ConfigError(f"{root} is not a test set: index.json or items.jsonl is missing.")
    sample_rate = int(json.loads(index_path.read_text())["sample_rate"])
    items = []
    for line in items_path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        tensors = record["tensors"]
        for key in ("mixture", "targets"):
            if key not in tensors:
                raise ConfigError(f"{root}: item {record['name']} has no {key!r} file.")
        items.append({"name": record["name"], "mixture": tensors["mixture"], "targets": tensors["targets"], "root": root,
                      "meta": record.get("meta", {})})
    return items, sample_rate


def load_fixed_tensor(root: Path, tensor: dict[str, Any]) -> np.ndarray:
    """One stored tensor of a fixed-set item (``{"file", "shape"}``), read and reshaped to its stored shape."""
    audio, _ = _read(root / tensor["file"])  # [S*C, T]
    return audio.reshape(tensor["shape"])  # -> stored shape


# --------------------------------------------------------------------------------------- scoring
def near_end_silent_mask(reference: np.ndarray, sample_rate: int) -> np.ndarray:
    """Samples ``[T]`` where the near-end reference ``[..., T]`` is silent (frame RMS below -80 dBFS)."""
    signal = reference.reshape(-1, reference.shape[-1])
    frame = max(1, int(SILENCE_FRAME_SECONDS * sample_rate))
    frames = math.ceil(signal.shape[-1] / frame)
    padded = np.pad(signal, ((0, 0), (0, frames * frame - signal.shape[-1])))
    level = np.sqrt(np.mean(padded.reshape(signal.shape[0], frames, frame) ** 2, axis=(0, 2)))  # -> [frames]
    return np.repeat(level < SILENCE_LEVEL, frame)[: signal.shape[-1]]


def score_item(
    estimate: np.ndarray,
    reference: np.ndarray | None,
    sample_rate: int,
    mixture: np.ndarray | None,
    metrics: list[str],
    use_dnsmos: bool,
) -> dict[str, float]:
    """All requested metrics of one item: ``estimate``/``reference`` ``[S, C, T]``, ``mixture [C_in, T]``."""
    from .. import metrics as metric_functions

    row: dict[str, float] = {}
    intrusive = [name for name in metrics if name != "erle"]
    if reference is not None:
        length = min(estimate.shape[-1], reference.shape[-1], *([mixture.shape[-1]] if mixture is not None else []))
        estimate, reference = estimate[..., :length], reference[..., :length]
        mixture = mixture[..., :length] if mixture is not None else None
        if estimate.shape != reference.shape:
            raise AudioError(f"The estimate {estimate.shape} and the reference {reference.shape} differ in sources or channels.")
        wanted = [name for name in intrusive if name != "si_sdri" or mixture is not None]
        row.update(metric_functions.evaluate_item(estimate, reference, sample_rate, mixture, wanted))
        if "erle" in metrics:
            if mixture is None:
                raise ConfigError("ERLE needs the microphone signals (--mixtures or a test set).")
            mask = near_end_silent_mask(reference, sample_rate)
            row["erle"] = (
                metric_functions.erle(mixture[0], estimate[0, 0], mask) if mask.any() else float("nan")
            )
    if use_dnsmos:
        scores = [metric_functions.dnsmos(channel, sample_rate) for channel in estimate.reshape(-1, estimate.shape[-1])]
        for key in scores[0]:
            row[key] = float(np.mean([score[key] for score in scores]))
    return row


def _parse_metrics(text: str) -> list[str]:
    from ..metrics import INTRUSIVE_METRICS

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(INTRUSIVE_METRICS) - {"erle"})
    if unknown:
        raise ConfigError(f"Unknown metric(s) {', '.join(unknown)} (known: {', '.join([*INTRUSIVE_METRICS, 'erle'])}).")
    return names


def evaluate_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Score every item the arguments describe; one row (name + metrics) per item."""
    metrics = _parse_metrics(args.metrics)
    rows = []
    if args.model is not None:
        from ..api import load
        from ..inference import process_array

        attenuation_limit_db = getattr(args, "attenuation_limit", None)
        processor = load(args.model, device=args.device, attenuation_limit_db=attenuation_limit_db)
        model, device = processor.model, processor.device
        if args.test_set is not None:
            items, sample_rate = fixed_set_items(args.test_set)
            loaded = (
                (item["name"], load_fixed_tensor(item["root"], item["mixture"]), load_fixed_tensor(item["root"], item["targets"]))
                for item in items[: args.limit]
            )
        elif args.mixtures is not None and args.references is not None:
            pairs = folder_items(args.references, args.mixtures, None)[: args.limit]
            sample_rate = 0

            def read_pairs() -> Any:
                nonlocal sample_rate
                for item in pairs:
                    reference, sample_rate = _stack_sources(item["reference_paths"])
                    mixture, _ = _read(item["estimate_paths"][0])
                    yield item["name"], mixture, reference

            loaded = read_pairs()
        else:
            raise ConfigError("--model needs --test-set, or --mixtures and --references.")
        for name, mixture, reference in loaded:
            rate = sample_rate
            if reference.ndim == 2:
                reference = reference[None]  # [C, T] -> [1, C, T]
            model_input = mixture
            if model.num_input_channels == 1 and mixture.shape[0] > reference.shape[1]:
                # a one-channel model on a microphone-array set enhances the reference mics (the first C)
                model_input = mixture[: reference.shape[1]]  # [M, T] -> [C, T]
            estimate = process_array(
                model, model_input.astype(np.float32), rate, device=device, attenuation_limit_db=attenuation_limit_db
            )  # -> [S, C_out, T]
            rows.append({"name": name, **score_item(estimate, reference, rate, mixture, metrics, args.dnsmos)})
        return rows
    if args.estimates is None:
        raise ConfigError("Give --estimates (with --references, or --dnsmos), or --model with a test set.")
    if args.references is None:
        if not args.dnsmos:
            raise ConfigError("Without --references only --dnsmos can be computed; pass --dnsmos or --references.")
        for path in _audio_files(args.estimates)[: args.limit]:
            audio, rate = _read(path)
            rows.append({"name": str(path.relative_to(args.estimates)), **score_item(audio[None], None, rate, None, [], True)})
        if not rows:
            raise AudioError(f"{args.estimates} holds no audio files.")
        return rows
    for item in folder_items(args.references, args.estimates, args.mixtures)[: args.limit]:
        reference, rate = _stack_sources(item["reference_paths"])
        estimate, estimate_rate = _stack_sources(item["estimate_paths"])
        if estimate_rate != rate:
            raise AudioError(f"{item['name']}: the estimate is at {estimate_rate} Hz but the reference at {rate} Hz.")
        mixture = None
        if item["mixture_path"] is not None:
            mixture, mixture_rate = _read(item["mixture_path"])
            if mixture_rate != rate:
                raise AudioError(f"{item['name']}: the mixture is at {mixture_rate} Hz but the reference at {rate} Hz.")
        rows.append({"name": item["name"], **score_item(estimate, reference, rate, mixture, metrics, args.dnsmos)})
    return rows


# --------------------------------------------------------------------------------------- output
def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _format_table(summary: dict[str, float]) -> str:
    lines = [f"{'metric':<20} {'mean':>10}", "-" * 31]
    for key, value in summary.items():
        if key == "count":
            continue
        lines.append(f"{key:<20} {value:>10.3f}")
    lines.append(f"{'files':<20} {int(summary['count']):>10d}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..metrics import summarize

    rows = evaluate_rows(args)
    summary = summarize(rows)
    if args.csv is not None:
        _write_csv(rows, args.csv)
    if args.json:
        print(json.dumps({"rows": rows, "summary": summary}, indent=2, allow_nan=True))
    else:
        print(_format_table(summary))
    return 0
