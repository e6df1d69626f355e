"""Compare enhancers where real use happens: held-out real speech, real noise and recording conditions (issue 15).

Same systems, adapters, delay handling and RTF measurement as ``bench/compare_enhancers.py`` (its
functions are reused), on data that predicts real use:

* **held-out real-world set**: 4-second 16 kHz items of ``recipes.data.realworld.RealWorldEnhancementDataset``
  from the corpus cache (``--corpus-root``): read sentences of the *test* split speakers (noise floor at
  most -35 dB, as in training) and noise of the *test and validation* noise files (both held out from
  training), built once as fixed sets under ``data_cache/fixed/realworld_16k/test_bench/``. The
  conditions are drawn as in training, but in groups with one condition each so every condition has
  enough items: ``noisy`` (real noise, SNR -5..25 dB), ``reverberant`` (measured and simulated rooms),
  ``telephone`` (8 kHz band in a 16 kHz file), ``coloured`` (microphone EQ plus a 50-300 Hz
  high-pass), ``babble`` (3-20 test-split talkers on top of the noise) and ``clean`` (no noise: the
  model should leave it alone). Speech levels -45..-10 dBFS and silence stretches everywhere.
* **real noisy recordings without references**: test-split sentence recordings whose own background
  is audible (``recipes.data.corpora.speech_floor_db`` above ``--real-floor-db``, noisiest first),
  at most 9 s each, scored with DNSMOS P.835 (input and every system's output).

Metrics: PESQ-WB, STOI, ESTOI, SI-SDR and SI-SDRi (``speechkit.metrics``) over the noisy groups, then
per condition (group, noise file, SNR band, reverberant or not, band-limited or not, clean input):
the input's STOI and PESQ-WB and each system's delta-STOI and PESQ-WB. Issue 15 asks that the
model never lowers STOI below the input's in any condition.

    .venv/bin/python -m bench.compare_realworld --corpus-root data_cache/corpora [--model M] [--items 200] [--real 30]

(``python -m bench.compare_enhancers --test-set realworld ...`` runs the same.) Writes
``bench/results/compare_realworld.json`` (per item too) and ``.md``.
"""
from __future__ import annotations

from bench import compare_enhancers as base  # noqa: I001  (sets the one-thread variables before torch loads)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from bench.peers import Enhancer  # noqa: E402
from bench.peers.report import finish_report, finite_mean, format_cell, skipped_and_notes_lines, title_lines  # noqa: E402

ROOT = base.ROOT
DEFAULT_OUT = ROOT / "bench" / "results" / "compare_realworld.json"
DEFAULT_CORPUS_ROOT = Path("data_cache/corpora")
SAMPLE_RATE = base.SAMPLE_RATE
SEGMENT_SECONDS = 4.0
DEFAULT_ITEMS = 200
#: seed of group ``GROUPS[i]`` is ``SEED_BASE + i``
SEED_BASE = 6_000_000
#: speech files noisier than this (speech_floor_db) are left out of the references, as in training
MAX_FLOOR_DB = -35.0
#: real recordings: test-split speech files whose noise floor is above this (audible background)
REAL_FLOOR_DB = -30.0
#: DNSMOS window: real recordings are cut to it (shorter ones are tiled by base.dnsmos_scores)
REAL_MAX_SAMPLES = base.DNSMOS_WINDOW_SAMPLES
METRICS = ("si_sdr", "pesq_wb", "stoi", "estoi")
SNR_BANDS_DB = ((-5, 0), (0, 5), (5, 10), (10, 15), (15, 20), (20, 25))
GROUPS = ("noisy", "reverberant", "telephone", "coloured", "babble", "clean")
#: per-condition rows of clean inputs (transparency, reported apart from the "never below the input" check)
CLEAN_CONDITIONS = ("group: clean", "clean input (no noise)")
PACKAGES = base.PACKAGES


# ----------------------------------------------------------------------------------- data
def group_configs(sample_rate: int = SAMPLE_RATE) -> dict[str, Any]:
    """One :class:`~recipes.data.realworld.RealWorldConfig` per group of :data:`GROUPS` (one condition each)."""
    from recipes.data.conditions import ConditionConfig
    from recipes.data.datasets import ReverbConfig
    from recipes.data.realworld import RealWorldConfig

    plain = ConditionConfig(colouration_probability=0.0, telephone_probability=0.0, clipping_probability=0.0,
                            dc_offset_probability=0.0)  # silence stretches keep their training probability
    noisy = RealWorldConfig(sample_rate=sample_rate, segment_seconds=SEGMENT_SECONDS, clean_probability=0.0,
                            babble_probability=0.0, reverb=ReverbConfig(probability=0.0), conditions=plain)
    return {
        "noisy": noisy,
        "reverberant": dataclasses.replace(noisy, reverb=ReverbConfig(probability=1.0, source="both", target="early")),
        "telephone": dataclasses.replace(noisy, conditions=dataclasses.replace(plain, telephone_probability=1.0)),
        "coloured": dataclasses.replace(
            noisy, conditions=dataclasses.replace(plain, colouration_probability=1.0, highpass_probability=1.0)
        ),
        "babble": dataclasses.replace(noisy, babble_probability=1.0),
        "clean": dataclasses.replace(noisy, clean_probability=1.0),
    }


def held_out_entries(corpus_root: Path, floor_cache: Path) -> tuple[list, list, list]:
    """Test-split speech (floor at most :data:`MAX_FLOOR_DB`), test + validation noise, test + validation RIRs."""
    from recipes.data.corpora import filter_clean_speech, load_corpora

    corpora = load_corpora(corpus_root)
    speech = filter_clean_speech(corpora.select("speech", "test"), MAX_FLOOR_DB, floor_cache)
    noise = corpora.select("noise", "test") + corpora.select("noise", "validation")
    rirs = corpora.select("rir", "test") + corpora.select("rir", "validation")
    return speech, noise, rirs


def group_folders(items: int, cache_root: Path) -> dict[str, Path]:
    """The fixed-set folder of every group of :data:`GROUPS` for a set of ``items`` items (equal shares,
    at least ``DEFAULT_ITEMS`` in all): ``<cache_root>/fixed/realworld_16k/test_bench/<group>_n<count>/``."""
    per_group = int(math.ceil(max(items, DEFAULT_ITEMS) / len(GROUPS)))
    return {group: cache_root / "fixed" / "realworld_16k" / "test_bench" / f"{group}_n{per_group}" for group in GROUPS}


def realworld_set(items: int, corpus_root: Path, cache_root: Path) -> list[dict[str, Any]]:
    """``items`` held-out items, equal shares per group, as numpy items with their conditions.

    Each group's fixed set holds ``ceil(max(items, DEFAULT_ITEMS) / len(GROUPS))`` items and is written
    on first use (``recipes.data.fixedset.write_fixed_set``, the format ``recipes.train:fixed_realworld``
    reads) to ``<cache_root>/fixed/realworld_16k/test_bench/<group>_n<count>/``.
    """
    from recipes.data.fixedset import FixedSetDataset, write_fixed_set
    from recipes.data.realworld import RealWorldEnhancementDataset

    per_group = int(math.ceil(max(items, DEFAULT_ITEMS) / len(GROUPS)))
    folders = group_folders(items, cache_root)
    entries = None
    loaded = []
    for index, (group, config) in enumerate(group_configs().items()):
        root = folders[group]
        if not (root / "index.json").is_file():
            entries = entries or held_out_entries(corpus_root, cache_root / "speech_floor.json")
            speech, noise, rirs = entries
            dataset = RealWorldEnhancementDataset(speech, noise, config, per_group, SEED_BASE + index, rirs)
            source = {"builder": "bench.compare_realworld:realworld_set", "group": group, "speech_split": "test",
                      "noise_splits": ["test", "validation"], "seed": SEED_BASE + index, "count": per_group,
                      "max_floor_db": MAX_FLOOR_DB, "speakers": len({entry.group for entry in speech}),
                      "noise_files": [entry.id for entry in noise], "config": repr(config)}
            print(f"building the {group} set ({per_group} items) in {root}...", file=sys.stderr)
            write_fixed_set(dataset, root, SAMPLE_RATE, count=per_group, source=source, overwrite=True)
        dataset = FixedSetDataset(root)
        for position in range(len(dataset)):
            item = dataset[position]
            loaded.append({
                "name": f"{group}_{position:03d}", "group": group, "position": position,
                "mixture": item["mixture"][0].numpy().astype(np.float32),  # [1, T] -> [T]
                "clean": item["targets"][0, 0].numpy().astype(np.float32),  # [1, 1, T] -> [T]
                **{key: item.get(key, "") for key in ("speech_id", "noise_id", "noise_type", "reverb", "channel")},
                "snr_db": float(item["snr_db"]), "level_db": float(item["level_db"]),
            })
    loaded.sort(key=lambda entry: (entry["position"], GROUPS.index(entry["group"])))  # groups interleaved
    return loaded[:items]


def real_noisy_recordings(count: int, corpus_root: Path, floor_cache: Path, min_floor_db: float) -> list[dict[str, Any]]:
    """The ``count`` test-split speech files with the highest noise floor above ``min_floor_db`` (at most 9 s each)."""
    import json

    from recipes.data.audio import read_audio
    from recipes.data.corpora import filter_clean_speech, load_corpora

    if count <= 0:
        return []
    speech = load_corpora(corpus_root).select("speech", "test")
    filter_clean_speech(speech, 0.0, floor_cache)  # fills the floor cache for every file
    floors = json.loads(floor_cache.read_text(encoding="utf-8"))
    ranked = sorted((entry for entry in speech if floors[entry.sources[0]] > min_floor_db),
                    key=lambda entry: (-floors[entry.sources[0]], entry.id))
    recordings = []
    for entry in ranked[:count]:
        audio = read_audio(entry.sources[0], SAMPLE_RATE)[0, :REAL_MAX_SAMPLES]  # [C, T] -> [T <= 9 s]
        recordings.append({"name": entry.id, "mixture": audio.astype(np.float32), "floor_db": floors[entry.sources[0]],
                           "speaker": entry.group})
    return recordings


# ----------------------------------------------------------------------------------- scoring
def level_db(audio: np.ndarray) -> float:
    """RMS level in dBFS."""
    return float(10 * np.log10(np.mean(np.asarray(audio, dtype=np.float64) ** 2) + 1e-12))


def conditions_of(item: dict[str, Any]) -> list[str]:
    """The per-condition table rows an item belongs to (e.g. ``"noise: city"``, ``"SNR 0..5 dB"``)."""
    if item["group"] == "clean":
        return list(CLEAN_CONDITIONS)
    rows = [f"group: {item['group']}", f"noise: {item['noise_type'].split('+')[0]}"]
    rows += [f"SNR {low:+d}..{high:+d} dB" for low, high in SNR_BANDS_DB if low <= item["snr_db"] < high or
             (high == SNR_BANDS_DB[-1][1] and item["snr_db"] == high)]
    rows.append("reverberant" if item["reverb"] else "not reverberant")
    rows.append("band-limited (telephone)" if "telephone" in item["channel"] else "full band")
    return rows


def score(estimates: Sequence[np.ndarray], items: Sequence[dict[str, Any]], inputs: Sequence[dict[str, Any]] | None):
    """Per-item metrics of ``estimates``; with the input's rows, also SI-SDRi, delta-STOI and the level change."""
    from speechkit.metrics import evaluate_item

    rows = []
    for position, (estimate, item) in enumerate(zip(estimates, items)):
        row: dict[str, Any] = {"name": item["name"], "conditions": conditions_of(item)}
        row.update(evaluate_item(estimate, item["clean"], SAMPLE_RATE, metrics=METRICS))
        row["peak"] = float(np.max(np.abs(estimate)))
        row["level_change_db"] = level_db(estimate) - level_db(item["mixture"])
        if inputs is not None:
            if item["group"] != "clean":  # a clean input's SI-SDR is unbounded
                row["si_sdri"] = row["si_sdr"] - inputs[position]["si_sdr"]
            row["delta_stoi"] = row["stoi"] - inputs[position]["stoi"]
        rows.append(row)
    return rows


def summarize(rows: Sequence[dict[str, Any]], real_rows: Sequence[dict[str, Any]], condition_names: Sequence[str]):
    """Means over the noisy items, the clean group, each condition and the real recordings."""
    noisy = [row for row in rows if "group: clean" not in row["conditions"]]
    clean = [row for row in rows if "group: clean" in row["conditions"]]
    keys = ("pesq_wb", "stoi", "estoi", "si_sdr", "si_sdri", "delta_stoi", "level_change_db")
    summary: dict[str, Any] = {key: finite_mean([row.get(key) for row in noisy]) for key in keys}
    summary["clean"] = {key: finite_mean([row.get(key) for row in clean]) for key in ("si_sdr", "stoi", "pesq_wb", "level_change_db")}
    summary["items_over_full_scale"] = sum(1 for row in rows if row["peak"] > 1.0)
    summary["pesq_nan_items"] = sum(1 for row in rows if not np.isfinite(row.get("pesq_wb", float("nan"))))
    summary["per_condition"] = {
        name: {"count": len(members), **{key: finite_mean([row.get(key) for row in members])
                                        for key in ("stoi", "delta_stoi", "pesq_wb", "si_sdri")}}
        for name in condition_names
        for members in [[row for row in rows if name in row["conditions"]]]
    }
    deltas = {name: values["delta_stoi"] for name, values in summary["per_condition"].items()
              if np.isfinite(values.get("delta_stoi", float("nan"))) and name not in CLEAN_CONDITIONS}
    if deltas:
        worst = min(deltas, key=deltas.get)
        summary["worst_condition"] = {"condition": worst, "delta_stoi": deltas[worst],
                                      "conditions_below_input": sorted(name for name, value in deltas.items() if value < 0)}
    for key in ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"):
        summary[f"real_{key}"] = finite_mean([row.get(key) for row in real_rows])
    return summary


def evaluate(system: Enhancer | None, label: str, items: Sequence[dict[str, Any]], real: Sequence[dict[str, Any]],
             inputs: Sequence[dict[str, Any]] | None, with_dnsmos: bool, condition_names: Sequence[str]) -> dict[str, Any]:
    """Process, align (``base.run_aligned``), score and summarise one system (``None``: the input)."""
    mixtures = [item["mixture"] for item in items]
    real_inputs = [record["mixture"] for record in real]
    result: dict[str, Any] = {"system": label}
    if system is None:
        estimates, real_estimates = mixtures, real_inputs
        result.update(base.INPUT_FACTS)
    else:
        estimates, real_estimates, facts = base.run_aligned(system, mixtures, [item["clean"] for item in items], real_inputs)
        result.update(facts)
    rows = score(estimates, items, inputs)
    real_rows = [{"name": record["name"], **base.dnsmos_scores(estimate)}
                 for record, estimate in zip(real, real_estimates)] if with_dnsmos else []
    result["summary"] = summarize(rows, real_rows, condition_names)
    result["items"] = rows
    result["real_items"] = real_rows
    return result


def condition_order(items: Sequence[dict[str, Any]]) -> list[str]:
    """Every condition present, in table order (groups, noises, SNR bands, reverberation, band, clean)."""
    present = {name for item in items for name in conditions_of(item)}
    order = [f"group: {group}" for group in GROUPS]
    order += sorted(name for name in present if name.startswith("noise: "))
    order += [f"SNR {low:+d}..{high:+d} dB" for low, high in SNR_BANDS_DB]
    order += ["reverberant", "not reverberant", "band-limited (telephone)", "full band", "clean input (no noise)"]
    return [name for name in order if name in present]


# ----------------------------------------------------------------------------------- report
def markdown_report(report: dict[str, Any]) -> str:
    """The overall table, the per-condition table and the notes."""
    data = report["data"]
    lines = [
        *title_lines(report, "Enhancers on held-out real-world data"),
        f"Held-out set: {data['items']} items of 4 s at 16 kHz ({data['noisy_items']} noisy, {data['clean_items']} clean): "
        f"{data['speakers']} test-split speakers, {len(data['noise_files'])} held-out noise files (test + validation "
        f"splits), groups {', '.join(GROUPS)}. Real recordings: {data['real_recordings']} test-split sentence "
        f"recordings with an audible background (noise floor above {data['real_floor_db']:g} dB), DNSMOS only.",
        "",
        "Noisy items (all groups but clean):",
        "",
        "| System | PESQ-WB | STOI | ESTOI | SI-SDR | SI-SDRi | clean in: SI-SDR / STOI | worst condition dSTOI "
        "| DNSMOS OVRL (real) | level change dB | RTF | Latency ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in report["systems"]:
        summary = result["summary"]
        worst = summary.get("worst_condition", {})
        worst_cell = ("-" if result["system"].startswith("noisy input") or not worst
                      else f"{worst['delta_stoi']:+.3f} ({worst['condition']}; {len(worst['conditions_below_input'])} below input)")
        latency = result["latency_ms"]
        lines.append(
            f"| {result['system']} | {format_cell(summary['pesq_wb'])} | {format_cell(summary['stoi'], 3)} | "
            f"{format_cell(summary['estoi'], 3)} | {format_cell(summary['si_sdr'], 1)} | {format_cell(summary['si_sdri'], 1)} | "
            f"{format_cell(summary['clean']['si_sdr'], 1)} / {format_cell(summary['clean']['stoi'], 3)} | {worst_cell} | "
            f"{format_cell(summary['real_dnsmos_ovrl'])} | {format_cell(summary['level_change_db'], 1)} | "
            f"{format_cell(result['rtf'], 3)} | {format_cell(latency, 1) if latency is not None else 'offline'} |"
        )
    systems = report["systems"][1:]
    lines += [
        "",
        "Per condition: input STOI and PESQ-WB, then each system's delta-STOI / PESQ-WB (mean over the items):",
        "",
        "| Condition | n | input STOI | input PESQ-WB | " + " | ".join(result["system"] for result in systems) + " |",
        "|---|---|---|---|" + "---|" * len(systems),
    ]
    noisy_input = report["systems"][0]["summary"]["per_condition"]
    for name in report["data"]["conditions"]:
        cells = [f"{values['delta_stoi']:+.3f} / {format_cell(values['pesq_wb'])}"
                 if np.isfinite(values["delta_stoi"]) else "-"
                 for values in (result["summary"]["per_condition"][name] for result in systems)]
        row = noisy_input[name]
        lines.append(f"| {name} | {row['count']} | {format_cell(row['stoi'], 3)} | {format_cell(row['pesq_wb'])} | "
                     + " | ".join(cells) + " |")
    lines += skipped_and_notes_lines(report)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test-set", choices=["realworld"], default="realworld", help=argparse.SUPPRESS)
    parser.add_argument("--corpus-root", type=Path, default=DEFAULT_CORPUS_ROOT, help="corpus cache (manifest.jsonl + splits.json)")
    parser.add_argument("--cache-root", type=Path, default=Path("data_cache"), help="where fixed sets and the floor cache live")
    parser.add_argument("--items", type=int, default=DEFAULT_ITEMS, help="held-out items (equal shares per group)")
    parser.add_argument("--real", type=int, default=30, help="real noisy recordings scored with DNSMOS (0: none)")
    parser.add_argument("--real-floor-db", type=float, default=REAL_FLOOR_DB, help="noise floor above which a recording counts as noisy")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output (the Markdown goes next to it)")
    base.add_system_arguments(parser)
    args = parser.parse_args(argv)

    from speechkit.errors import SpeechkitError

    try:
        systems, notes, skipped, with_dnsmos = base.build_systems(parser, args)
        started = time.perf_counter()
        items = realworld_set(args.items, args.corpus_root, args.cache_root)
        floor_cache = args.cache_root / "speech_floor.json"
        real = real_noisy_recordings(args.real, args.corpus_root, floor_cache, args.real_floor_db) if with_dnsmos else []
        speech, noise, _rirs = held_out_entries(args.corpus_root, floor_cache)
    except SpeechkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if with_dnsmos and len(real) < args.real:
        notes.append(f"only {len(real)} real recordings have a noise floor above {args.real_floor_db:g} dB (asked for {args.real})")
    notes.extend(base.METHOD_NOTES)
    notes.append("Clean items (no noise) are left out of the first table's means (their input SI-SDR is unbounded); "
                 "its 'clean in' column is the clean group: how transparent each system is.")
    notes.append("'worst condition dSTOI' is the lowest mean delta-STOI over the per-condition rows of noisy items; issue 15 asks "
                 "that it stays >= 0 (the count says how many conditions go below the input's STOI).")
    conditions = condition_order(items)
    print(f"{len(items)} held-out items, {len(real)} real recordings; scoring the input...", file=sys.stderr)
    input_result = evaluate(None, "noisy input (unprocessed)", items, real, None, with_dnsmos, conditions)
    inputs = input_result["items"]
    results = base.run_systems(
        systems,
        lambda system, label: input_result if system is None
        else evaluate(system, label, items, real, inputs, with_dnsmos, conditions),
        started,
    )
    return finish_report(
        "compare_realworld", argv, PACKAGES, started, markdown_report, args.out,
        data={
            "items": len(items), "noisy_items": sum(item["group"] != "clean" for item in items),
            "clean_items": sum(item["group"] == "clean" for item in items), "groups": list(GROUPS),
            "segment_seconds": SEGMENT_SECONDS, "seeds": [SEED_BASE + index for index in range(len(GROUPS))],
            "speakers": len({entry.group for entry in speech}), "noise_files": [entry.id for entry in noise],
            "source": "recipes.data.realworld.RealWorldEnhancementDataset: test-split speakers, test + validation "
                      "noise files, one fixed set per group under data_cache/fixed/realworld_16k/test_bench/",
            "conditions": conditions,
            "item_conditions": [{key: item[key] for key in ("name", "group", "snr_db", "level_db", "noise_type",
                                                            "reverb", "channel", "speech_id", "noise_id")}
                                for item in items],
            "real_recordings": len(real), "real_floor_db": args.real_floor_db,
            "real_names": [{"name": record["name"], "floor_db": record["floor_db"]} for record in real],
        },
        skipped=skipped,
        notes=notes,
        systems=results,
    )


if __name__ == "__main__":
    sys.exit(main())
