"""Real sentence speech, real noise and measured room responses from an extracted corpus cache.

The cache is a folder with ``manifest.jsonl`` (one JSON object per file: ``path`` relative to the
folder, ``kind`` ``speech``/``noise``/``rirs``, ``corpus``, ``license``, ``source``,
``duration_s``; speech adds ``speaker``) and ``splits.json`` (``{"speech": {corpus: {"train":
[speaker, ...], "valid": [...], "test": [...]}}, "noise": {corpus: {split: [path, ...]}}, "rirs":
{corpus: {split: [path, ...]}}}``): speech is split by speaker, noise and RIRs by file. This module
turns it into the :class:`~recipes.data.minicorpus.CorpusEntry` lists the datasets of
:mod:`recipes.data.datasets` and :mod:`recipes.data.realworld` read, so the same mixing code runs on
the mini corpus and on real sentence speech. Splits are named ``train``/``validation``/``test``
as everywhere in the recipes (``valid`` in the file).

Speech files whose noise floor is audible make poor enhancement targets: :func:`speech_floor_db`
estimates it cheaply (quietest against loudest frames) and ``max_floor_db`` drops the noisier ones.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechkit.errors import ConfigError

from .audio import read_audio
from .minicorpus import CorpusEntry

#: the recipes' split names and the corpus cache's
SPLIT_NAMES = {"train": "train", "validation": "valid", "test": "test"}
#: noise recordings that are not everyday background noise (music, tones, effects), left out by default
UNUSUAL_NOISE = (
    "places_underwater", "places_carousel", "places_church", "places_temple", "things_singing-bowl",
    "things_morse-code", "things_tuning-radio", "things_vinyl-effect", "things_wind-chimes",
    "things_bubbles", "transport_submarine", "urban_fireworks", "urban_ambulance-siren",
)
#: speech corpora used by default (read English sentences at 16 kHz, many speakers)
DEFAULT_SPEECH_CORPORA = ("speechocean762", "librispeech")


@dataclass
class RealCorpora:
    """Speech, noise and RIR entries of one corpus cache, with their splits."""

    root: Path
    entries: list[CorpusEntry]

    def select(self, kind: str, split: str) -> list[CorpusEntry]:
        """Entries of ``kind`` (``speech``, ``noise``, ``rir``) in ``split`` (``train``, ``validation``, ``test``)."""
        if split not in SPLIT_NAMES:
            raise ConfigError(f"split must be one of {', '.join(SPLIT_NAMES)}, not {split!r}")
        return [entry for entry in self.entries if entry.kind == kind and entry.split == split]

    def speech(self, split: str, max_floor_db: float | None = None,
               floor_cache: str | Path | None = None) -> list[CorpusEntry]:
        """Speech entries of ``split``, only those with a noise floor at most ``max_floor_db`` (None: all).

        An empty result is a one-line :class:`ConfigError` naming the split (or the floor).
        """
        speech = self.select("speech", split)
        if not speech:
            raise ConfigError(f"{self.root}: no speaker falls in split {split!r} (too few speakers?)")
        if max_floor_db is not None:
            speech = filter_clean_speech(speech, max_floor_db, floor_cache)
            if not speech:
                raise ConfigError(f"{self.root}: no {split} speech has a noise floor at or below {max_floor_db} dB")
        return speech

    def licenses(self) -> dict[str, str]:
        """Corpus name -> licence, for model cards."""
        return {entry.corpus: entry.license for entry in self.entries}


def _read_manifest(root: Path) -> list[dict]:
    path = root / "manifest.jsonl"
    if not path.is_file():
        raise ConfigError(f"{root} is not a corpus cache: {path.name} is missing")
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ConfigError(f"line {number} of {path} is not JSON: {error.msg}") from error
            if not isinstance(record, dict):
                raise ConfigError(f"line {number} of {path} is not a JSON object")
            records.append(record)
    return records


def _read_splits(root: Path) -> dict:
    path = root / "splits.json"
    if not path.is_file():
        raise ConfigError(f"{root} is not a corpus cache: {path.name} is missing")
    try:
        splits = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not JSON: {error.msg}") from error
    for kind in ("speech", "noise", "rirs"):
        if not isinstance(splits.get(kind, {}), dict):
            raise ConfigError(f"{path}: '{kind}' must map corpus names to splits")
    return splits


def _split_lookup(splits: dict, kind: str) -> dict[tuple[str, str], str]:
    """(corpus, speaker or path) -> recipe split name."""
    ours = {value: key for key, value in SPLIT_NAMES.items()}
    lookup = {}
    for corpus, by_split in splits.get(kind, {}).items():
        if not isinstance(by_split, dict) or not all(isinstance(members, list) for members in by_split.values()):
            raise ConfigError(f"splits.json: {kind}/{corpus} must map split names to lists")
        for split, members in by_split.items():
            if split not in ours:
                raise ConfigError(f"splits.json: unknown split {split!r} for {kind}/{corpus}")
            for member in members:
                lookup[(corpus, str(member))] = ours[split]
    return lookup


def load_corpora(
    root: str | Path,
    speech_corpora: tuple[str, ...] | None = DEFAULT_SPEECH_CORPORA,
    exclude_noise: tuple[str, ...] = UNUSUAL_NOISE,
    min_speech_seconds: float = 1.0,
) -> RealCorpora:
    """Read a corpus cache into entries with the cache's splits.

    Args:
        root: folder with ``manifest.jsonl`` and ``splits.json``.
        speech_corpora: speech corpora to use (None: all).
        exclude_noise: noise file stems to leave out (unusual sounds).
        min_speech_seconds: shorter speech files are left out.
    """
    root = Path(root)
    records = _read_manifest(root)
    splits = _read_splits(root)
    speakers = _split_lookup(splits, "speech")
    files = {**_split_lookup(splits, "noise"), **_split_lookup(splits, "rirs")}
    entries = []
    for record in records:
        kind, corpus, path = record.get("kind"), record.get("corpus", ""), record.get("path", "")
        if kind not in ("speech", "noise", "rirs") or not path:
            raise ConfigError(f"manifest entry {record!r} has no usable kind/path")
        if kind == "speech":
            if speech_corpora is not None and corpus not in speech_corpora:
                continue
            if float(record.get("duration_s", 0.0)) < min_speech_seconds:
                continue
            group = str(record.get("speaker", ""))
            split = speakers.get((corpus, group))
        else:
            if kind == "noise" and Path(path).stem in exclude_noise:
                continue
            group = path
            split = files.get((corpus, path))
        if split is None:
            continue  # in the manifest but in no split: not usable for held-out work
        entries.append(
            CorpusEntry(
                id=path, kind="rir" if kind == "rirs" else kind, split=split, group=f"{corpus}:{group}",
                corpus=corpus, license=str(record.get("license", "")), provenance=str(record.get("source", "")),
                native_sample_rate=16000, sources=[str(root / path)],
                language=str(record.get("lang", "")),
                frames=int(round(float(record.get("duration_s", 0.0)) * 16000)),
            )
        )
    if not any(entry.kind == "speech" for entry in entries):
        raise ConfigError(f"{root}: no speech entries (corpora {speech_corpora})")
    return RealCorpora(root, entries)


def speech_floor_db(audio: np.ndarray, sample_rate: int, frame_seconds: float = 0.02) -> float:
    """Noise floor of a speech recording against its loud frames, in dB (more negative: cleaner).

    The 10th percentile of frame power over the 95th: background noise and room tone show up in
    the pauses between words, so a clean studio recording scores about -50 dB, an audibly noisy one
    above -30 dB.
    """
    frame = max(1, int(frame_seconds * sample_rate))
    signal = audio.reshape(-1)
    count = signal.shape[0] // frame
    if count < 10:
        return 0.0
    powers = np.mean(signal[: count * frame].reshape(count, frame).astype(np.float64) ** 2, axis=1) + 1e-12
    return float(10.0 * np.log10(np.percentile(powers, 10) / np.percentile(powers, 95)))


def filter_clean_speech(
    entries: list[CorpusEntry], max_floor_db: float, cache_path: str | Path | None = None
) -> list[CorpusEntry]:
    """Keep speech entries whose :func:`speech_floor_db` is at most ``max_floor_db``.

    Scores are cached as JSON in ``cache_path`` (keyed by the file path) when it is given.
    """
    cache: dict[str, float] = {}
    cache_file = Path(cache_path) if cache_path else None
    if cache_file is not None and cache_file.is_file():
        cache = json.loads(cache_file.read_text(encoding="utf-8"))
    kept = []
    changed = False
    for entry in entries:
        if entry.kind != "speech":
            kept.append(entry)
            continue
        source = entry.sources[0]
        if source not in cache:
            cache[source] = speech_floor_db(read_audio(source, 16000)[0], 16000)
            changed = True
        if cache[source] <= max_floor_db:
            kept.append(entry)
    if cache_file is not None and changed:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(cache, sort_keys=True), encoding="utf-8")
        temporary.replace(cache_file)
    return kept
