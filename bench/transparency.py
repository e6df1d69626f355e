"""Transparency and level of an enhancer on clean speech (issue 15).

An enhancer given clean speech should return it nearly unchanged, at the level it came in. This
feeds held-out clean sentences (test-split speakers of the corpus cache, the files with the lowest
noise floor, at most two per speaker in turn) to each model at speech levels of -45, -35, -25, -15
and -10 dBFS (RMS over the clip; peaks soft-limited, see :func:`at_level`) and reports, per level:

* SI-SDR and STOI of the output against the input (targets: SI-SDR >= 20 dB, STOI >= 0.95);
* the output-minus-input level in dB (target: within 1 dB);
* outputs that peak above full scale;
* for a separator (one talker in, two outputs): the output that holds the talker (the louder one)
  is scored as above, and the other output's level against the input is the residue;
* for an echo canceller: the sentence is the microphone and the far end is silent (scored as
  above); then another test talker plays as the far end at -20 dBFS without ever reaching the
  microphone (a headset, or a far end given by mistake), and the near end's SI-SDR and level
  change are reported for that too.

    .venv/bin/python -m bench.transparency [--model M [M ...]] [--corpus-root data_cache/corpora] [--items 20]

Writes ``bench/results/transparency.json`` and ``.md``. :func:`transparency_row` is also what
``tests/test_transparency.py`` checks on the bundled clean example.
"""
from __future__ import annotations

import bench.one_thread  # noqa: F401 - one thread per system, set before torch loads

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "transparency.json"
SAMPLE_RATE = 16000
LEVELS_DBFS = (-45.0, -35.0, -25.0, -15.0, -10.0)
#: targets of issue 15
MIN_SI_SDR_DB = 20.0
MIN_STOI = 0.95
MAX_LEVEL_CHANGE_DB = 1.0
#: level of the unrelated far end an echo canceller is also given (it never reaches the microphone)
UNRELATED_FAR_END_DBFS = -20.0
#: test-split speech files at most this noisy (speech_floor_db) count as clean
MAX_FLOOR_DB = -45.0
PACKAGES = ("speechkit", "torch", "numpy", "soxr", "pystoi")


def level_dbfs(audio: np.ndarray) -> float:
    """RMS level in dBFS."""
    return float(10 * np.log10(np.mean(np.asarray(audio, dtype=np.float64) ** 2) + 1e-12))


def at_level(audio: np.ndarray, target_dbfs: float) -> np.ndarray:
    """``audio`` scaled to an RMS of ``target_dbfs``; peaks past -1 dBFS go through ``speechkit.audio.soft_limit``.

    Speech at -10 dBFS RMS peaks above full scale (crest factors are 15-20 dB), so a real recording
    that loud has been limited on the way; the level actually reached is measured after limiting.
    """
    from speechkit.audio import soft_limit

    scaled = (audio * 10 ** ((target_dbfs - level_dbfs(audio)) / 20)).astype(np.float32)
    return soft_limit(scaled)[0]


def transparency_row(
    processor: Any, clean: np.ndarray, sample_rate: int, target_dbfs: float, unrelated: np.ndarray | None = None
) -> dict[str, float]:
    """Enhance ``clean [T]`` scaled to ``target_dbfs``: SI-SDR and STOI against the input, level change, peak.

    An echo canceller gets a silent far end; given ``unrelated`` speech ``[T']``, it also runs with
    that far end at :data:`UNRELATED_FAR_END_DBFS`, which never reaches the microphone (a headset),
    and the near end's SI-SDR and level change then are ``unrelated_si_sdr`` / ``unrelated_level_change_db``.
    """
    from speechkit.metrics import si_sdr, stoi

    source = at_level(clean, target_dbfs)
    residue = unrelated_si_sdr = unrelated_level = float("nan")
    task = getattr(processor.model, "task", None)
    if task == "aec":
        output = np.asarray(processor.cancel_echo(source, np.zeros_like(source), sample_rate), dtype=np.float32)
        if unrelated is not None:
            far_end = at_level(np.resize(unrelated, source.shape), UNRELATED_FAR_END_DBFS)
            heard = np.asarray(processor.cancel_echo(source, far_end, sample_rate), dtype=np.float32)
            unrelated_si_sdr = float(si_sdr(heard, source))
            unrelated_level = level_dbfs(heard) - level_dbfs(source)
    elif task == "separation":
        outputs = np.asarray(processor.separate(source, sample_rate)[:, 0], dtype=np.float32)  # [S, C=1, T] -> [S, T]
        loudest = int(np.argmax((outputs.astype(np.float64) ** 2).sum(axis=-1)))
        output = outputs[loudest]
        rest = np.delete(outputs, loudest, axis=0).sum(axis=0)  # [T]: what the other outputs hold
        residue = level_dbfs(rest) - level_dbfs(source)
    else:
        output = np.asarray(processor.enhance(source, sample_rate)[0], dtype=np.float32)  # [C=1, T] -> [T]
    return {
        "input_level_dbfs": level_dbfs(source),
        "si_sdr": float(si_sdr(output, source)),
        "stoi": stoi(output, source, sample_rate),
        "level_change_db": level_dbfs(output) - level_dbfs(source),
        "peak": float(np.max(np.abs(output))),
        "residue_db": residue,
        "unrelated_si_sdr": unrelated_si_sdr,
        "unrelated_level_change_db": unrelated_level,
    }


def clean_sentences(count: int, corpus_root: Path, floor_cache: Path, seconds: float) -> list[dict[str, Any]]:
    """``count`` clean test-split sentences (lowest noise floor first, speakers taken in turn), cut to ``seconds``."""
    import json

    from recipes.data.audio import read_audio
    from recipes.data.corpora import filter_clean_speech, load_corpora

    speech = filter_clean_speech(load_corpora(corpus_root).select("speech", "test"), MAX_FLOOR_DB, floor_cache)
    floors = json.loads(floor_cache.read_text(encoding="utf-8"))
    ranked = sorted(speech, key=lambda entry: (floors[entry.sources[0]], entry.id))
    chosen: list[Any] = []
    for round_index in range(2):  # the cleanest file of each speaker, then a second one
        seen: set[str] = set()
        for entry in ranked:
            if entry.group not in seen and entry not in chosen:
                seen.add(entry.group)
                if round_index == 0 or sum(other.group == entry.group for other in chosen) < 2:
                    chosen.append(entry)
    sentences = []
    for entry in chosen[:count]:
        audio = read_audio(entry.sources[0], SAMPLE_RATE)[0, : int(seconds * SAMPLE_RATE)]  # [C, T] -> [T]
        sentences.append({"name": entry.id, "audio": audio, "floor_db": floors[entry.sources[0]]})
    return sentences


def evaluate_model(model: str | None, sentences: Sequence[dict[str, Any]], levels: Sequence[float]) -> dict[str, Any]:
    """Per-level means (and per-item rows) of :func:`transparency_row` for one model."""
    import speechkit
    from bench.peers.report import finite_mean

    processor = speechkit.load(model)
    rows = []
    for level in levels:
        for index, sentence in enumerate(sentences):
            other = sentences[(index + 1) % len(sentences)]["audio"] if len(sentences) > 1 else None  # another talker
            row = transparency_row(processor, sentence["audio"], SAMPLE_RATE, level, other)
            rows.append({"name": sentence["name"], "level_dbfs": level, **row})
    per_level = {}
    for level in levels:
        members = [row for row in rows if row["level_dbfs"] == level]
        per_level[f"{level:g}"] = {
            **{key: finite_mean([row[key] for row in members])
               for key in ("input_level_dbfs", "si_sdr", "stoi", "level_change_db", "residue_db", "unrelated_si_sdr",
                           "unrelated_level_change_db")},
            "worst_level_change_db": max((row["level_change_db"] for row in members), key=abs),
            "outputs_over_full_scale": sum(row["peak"] > 1.0 for row in members),
        }
    means = {key: finite_mean([row[key] for row in rows]) for key in ("si_sdr", "stoi", "level_change_db")}
    passed = (all(values["si_sdr"] >= MIN_SI_SDR_DB and values["stoi"] >= MIN_STOI for values in per_level.values())
              and all(abs(values["level_change_db"]) <= MAX_LEVEL_CHANGE_DB for values in per_level.values()))
    return {"model": processor.name, "per_level": per_level, **means, "meets_targets": passed, "items": rows}


def markdown_report(report: dict[str, Any]) -> str:
    """One table: per model and level, SI-SDR, STOI, level change and outputs over full scale."""
    from bench.peers.report import format_cell

    lines = [
        f"# Transparency on clean speech ({report['date']})",
        "",
        f"{report['data']['items']} clean test-split sentences of {report['data']['seconds']:g} s (noise floor <= "
        f"{MAX_FLOOR_DB:g} dB), each processed at every level. Targets: SI-SDR >= {MIN_SI_SDR_DB:g} dB and STOI >= "
        f"{MIN_STOI} against the input, level change within {MAX_LEVEL_CHANGE_DB:g} dB.",
        "",
        "| Model | level dBFS | SI-SDR dB | STOI | level change dB (mean / worst) | outputs > full scale | other outputs dB "
        "(separators) | unrelated far end: SI-SDR dB / level dB (echo cancellers) | meets targets |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in report["models"]:
        for level, values in result["per_level"].items():
            lines.append(
                f"| {result['model']} | {level} | {format_cell(values['si_sdr'], 1)} | {format_cell(values['stoi'], 3)} | "
                f"{values['level_change_db']:+.2f} / {values['worst_level_change_db']:+.2f} | {values['outputs_over_full_scale']} | "
                f"{format_cell(values.get('residue_db', float('nan')), 1)} | "
                f"{format_cell(values.get('unrelated_si_sdr', float('nan')), 1)} / "
                f"{format_cell(values.get('unrelated_level_change_db', float('nan')), 2)} | "
                f"{'yes' if result['meets_targets'] else 'no'} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="*", default=[None], help="bundled names or checkpoint paths (default: the bundled default)")
    parser.add_argument("--corpus-root", type=Path, default=Path("data_cache/corpora"), help="corpus cache")
    parser.add_argument("--cache-root", type=Path, default=Path("data_cache"), help="where the floor cache lives")
    parser.add_argument("--items", type=int, default=20, help="clean sentences")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds of each sentence")
    parser.add_argument("--levels", type=float, nargs="*", default=list(LEVELS_DBFS), help="speech levels in dBFS")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output (the Markdown goes next to it)")
    args = parser.parse_args(argv)

    import torch

    from bench.peers.report import finish_report
    from speechkit.errors import SpeechkitError

    torch.set_num_threads(1)
    started = time.perf_counter()
    try:
        sentences = clean_sentences(args.items, args.corpus_root, args.cache_root / "speech_floor.json", args.seconds)
        results = []
        for model in args.model:
            print(f"running {model or 'the bundled default'} ({time.perf_counter() - started:.0f} s)...", file=sys.stderr)
            results.append(evaluate_model(model, sentences, args.levels))
    except SpeechkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return finish_report(
        "transparency", argv, PACKAGES, started, markdown_report, args.out,
        data={"items": len(sentences), "seconds": args.seconds, "levels_dbfs": list(args.levels),
              "max_floor_db": MAX_FLOOR_DB, "sentences": [{"name": s["name"], "floor_db": s["floor_db"]} for s in sentences]},
        models=results,
    )


if __name__ == "__main__":
    sys.exit(main())
