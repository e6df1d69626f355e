"""Oracle time-frequency masks on a held-out enhancement set: how much SI-SDR improvement is there to get?

An oracle mask is computed from the true speech and noise of each mixture, so no trained model
reaches it with magnitude masking; it bounds what an STFT-masking enhancer can do on the same
files and shows how much of a target is achievable at all when the "clean" references carry their
own recording noise (as the crowd-recorded Speech Commands clips of the mini corpus do).

* IRM: ideal ratio mask ``|S| / sqrt(|S|^2 + |N|^2)`` (a real mask);
* PSM: phase-sensitive mask ``Re(S conj(Y)) / |Y|^2`` clipped to [0, 1] (the best real mask in
  the mean-square sense, given the mixture's phase).

Reads a fixed set written by ``python -m recipes.prepare_data fixed --task enhancement`` (each
item's ``mixture``, ``targets`` and ``noise``); optionally scores a speechkit model on the same items.

    .venv/bin/python -m bench.oracle_masks [--test-set data_cache/fixed/enhancement_16k/test] \
        [--model conv_tasnet_enhance_16k] [--pesq] [--out bench/results/oracle_masks.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import soundfile as sf
import torch

from bench.peers.report import finite_mean, format_cell, report_header, write_report
from speechkit.frontend import apply_real_mask, complex_conjugate, complex_multiply, magnitude, real_part, stft_pair
from speechkit.metrics import pesq, si_sdr

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SET = ROOT / "data_cache" / "fixed" / "enhancement_16k" / "test"
DEFAULT_OUT = ROOT / "bench" / "results" / "oracle_masks.json"
#: (label, n_fft, hop_length): 32 ms and 16 ms Hann windows at 16 kHz, 75 % overlap
STFT_SETTINGS = (("32 ms", 512, 128), ("16 ms", 256, 64))
SNR_BINS_DB = (-5.0, 0.0, 5.0, 10.0, 15.01)


def oracle_estimates(mixture: torch.Tensor, speech: torch.Tensor, noise: torch.Tensor,
                     n_fft: int, hop_length: int) -> dict[str, torch.Tensor]:
    """IRM and PSM estimates ``[T]`` of ``speech`` from ``mixture = speech + noise`` (all ``[T]``)."""
    stft, istft = stft_pair(n_fft, hop_length)
    spectra = stft(torch.stack([mixture, speech, noise])[:, None])  # [3, 1, 2, F, N]
    mixture_spec, speech_spec, noise_spec = spectra[0], spectra[1], spectra[2]  # [1, 2, F, N]
    speech_power, noise_power = magnitude(speech_spec).square(), magnitude(noise_spec).square()  # [1, F, N]
    irm = (speech_power / (speech_power + noise_power).clamp_min(1e-12)).sqrt()
    cross = real_part(complex_multiply(speech_spec, complex_conjugate(mixture_spec)))  # [1, F, N]
    psm = (cross / magnitude(mixture_spec).square().clamp_min(1e-12)).clamp(0.0, 1.0)
    length = mixture.shape[-1]
    return {
        name: istft(apply_real_mask(mixture_spec, mask)[None], length)[0, 0]  # [T]
        for name, mask in (("IRM", irm), ("PSM", psm))
    }


def _read(root: Path, entry: dict[str, Any], key: str) -> torch.Tensor:
    audio, _ = sf.read(str(root / entry["tensors"][key]["file"]), dtype="float32", always_2d=True)
    return torch.from_numpy(audio[:, 0].copy())  # [T] (first channel / source)


def run(test_set: Path, model_name: str | None, with_pesq: bool) -> dict[str, Any]:
    """Score the noisy input, the oracle masks and optionally a model on every item of ``test_set``."""
    entries = [json.loads(line) for line in (test_set / "items.jsonl").read_text().splitlines() if line.strip()]
    model = None
    if model_name is not None:
        import speechkit

        model = speechkit.load(model_name)
    rows: list[dict[str, Any]] = []
    for entry in entries:
        mixture, speech, noise = (_read(test_set, entry, key) for key in ("mixture", "targets", "noise"))
        estimates = {"noisy input": mixture}
        for label, n_fft, hop_length in STFT_SETTINGS:
            for name, estimate in oracle_estimates(mixture, speech, noise, n_fft, hop_length).items():
                estimates[f"oracle {name}, {label}"] = estimate
        if model is not None:
            estimates[f"speechkit {model_name}"] = torch.as_tensor(model.enhance(mixture.numpy(), 16000)).reshape(-1)
        row = {"name": entry["name"], "snr_db": float(entry["meta"]["snr_db"]), "scores": {}}
        for system, estimate in estimates.items():
            scores = {"si_sdr": float(si_sdr(estimate, speech))}
            if with_pesq:
                scores["pesq_wb"] = pesq(estimate.numpy(), speech.numpy(), 16000, "wb")
            row["scores"][system] = scores
        rows.append(row)
    return {"items": rows, "systems": list(rows[0]["scores"]) if rows else []}


def summarize(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Mean scores per system, SI-SDRi overall and per input-SNR bin."""
    rows = result["items"]
    summary: dict[str, dict[str, float]] = {}
    for system in result["systems"]:
        si_sdri = [row["scores"][system]["si_sdr"] - row["scores"]["noisy input"]["si_sdr"] for row in rows]
        entry = {
            "si_sdr": finite_mean([row["scores"][system]["si_sdr"] for row in rows]),
            "si_sdri": finite_mean(si_sdri),
            "pesq_wb": finite_mean([row["scores"][system].get("pesq_wb") for row in rows]),
        }
        for low, high in zip(SNR_BINS_DB[:-1], SNR_BINS_DB[1:]):
            entry[f"si_sdri_{low:g}_{high:g}"] = finite_mean(
                [value for value, row in zip(si_sdri, rows) if low <= row["snr_db"] < high]
            )
        summary[system] = entry
    return summary


def markdown_table(summary: dict[str, dict[str, float]]) -> str:
    """The summary as a Markdown table."""
    bins = [f"{low:g}..{min(high, 15):g}" for low, high in zip(SNR_BINS_DB[:-1], SNR_BINS_DB[1:])]
    lines = [
        "| system | SI-SDR dB | SI-SDRi dB | PESQ-WB | " + " | ".join(f"SI-SDRi {b} dB" for b in bins) + " |",
        "|---|---|---|---|" + "---|" * len(bins),
    ]
    for system, entry in summary.items():
        by_bin = [format_cell(entry[f"si_sdri_{low:g}_{high:g}"], 1) for low, high in zip(SNR_BINS_DB[:-1], SNR_BINS_DB[1:])]
        lines.append(
            f"| {system} | {format_cell(entry['si_sdr'])} | {format_cell(entry['si_sdri'])} | "
            f"{format_cell(entry['pesq_wb'])} | " + " | ".join(by_bin) + " |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test-set", type=Path, default=DEFAULT_SET, help="fixed enhancement set directory")
    parser.add_argument("--model", default=None, help="also score this speechkit model (name or checkpoint path)")
    parser.add_argument("--pesq", action="store_true", help="also compute PESQ-WB (needs speechkit[eval])")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output (the Markdown goes next to it)")
    args = parser.parse_args(argv)
    if not (args.test_set / "items.jsonl").is_file():
        print(
            f"error: {args.test_set} is not a fixed set; write it with `python -m recipes.prepare_data fixed "
            "--task enhancement --split test --count 200`",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(1)
    result = run(args.test_set, args.model, args.pesq)
    summary = summarize(result)
    report = {
        **report_header("oracle_masks", argv, ["torch", "speechkit"]),
        "test_set": str(args.test_set),
        "num_items": len(result["items"]),
        "stft": [{"label": label, "n_fft": n_fft, "hop_length": hop} for label, n_fft, hop in STFT_SETTINGS],
        "summary": summary,
        "items": result["items"],
    }
    header = (
        f"Oracle masks on {len(result['items'])} items of {args.test_set.name} "
        f"({report['date']}; masks computed from the true speech and noise)\n\n"
    )
    write_report(report, header + markdown_table(summary) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
