"""Adapters for standard public corpora that users download themselves.

Each adapter turns a local copy into a list of :class:`CorpusItem` (a mixture file and its
reference files) and fails with a :class:`~speechkit.errors.ConfigError` naming exactly what is
missing (folder, CSV file or column). :class:`CorpusDataset` loads the items as model-ready
tensors (``mixture [C, T]``, ``targets [S, C, T]``).

Layouts:

* LibriMix: ``<root>/wav{8k,16k}/{min,max}/metadata/mixture_<split>_mix_<both|clean|single>.csv``
  with columns ``mixture_ID, mixture_path, source_1_path, ... [, noise_path], length``
  (``root`` is the ``Libri2Mix``/``Libri3Mix`` folder). CSV paths written on another machine are
  re-rooted by their last three components (``<split>/<folder>/<file>``).
* WHAM!: ``<root>/wav{8k,16k}/{min,max}/{tr,cv,tt}/{mix_clean,mix_both,mix_single,s1,s2,noise}``.
* WHAMR!: the same with ``mix_<clean|both|single>_<anechoic|reverb>``, ``s<k>_<anechoic|reverb>``, ``noise``.
* WSJ0-2mix / 3mix: ``<root>/wav{8k,16k}/{min,max}/{tr,cv,tt}/{mix,s1,s2[,s3]}``.
* VoiceBank-DEMAND: ``<root>/{clean,noisy}_trainset_28spk_wav`` and ``{clean,noisy}_testset_wav``.
* DNS Challenge: ``<root>/{noisy,clean[,noise]}/`` with ``..._fileid_<N>.wav`` names
  (``clean_fileid_<N>.wav``, ``noise_fileid_<N>.wav``).
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from speechkit.errors import AudioError, ConfigError

from .audio import read_audio

AUDIO_SUFFIXES = (".wav", ".flac")


@dataclass
class CorpusItem:
    """One mixture of a corpus and the files of its references (and noise, if the corpus has it)."""

    id: str
    mixture: Path
    references: list[Path]
    noise: Path | None = None
    extra: dict = field(default_factory=dict)


def _require_folder(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise ConfigError(f"{what}: expected folder {path} does not exist.")
    return path


def _audio_files(folder: Path) -> dict[str, Path]:
    return {path.name: path for path in sorted(folder.iterdir()) if path.suffix.lower() in AUDIO_SUFFIXES}


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {value!r}.")


def _rate_folder(sample_rate: int) -> str:
    if sample_rate not in (8000, 16000):
        raise ConfigError(f"These corpora come at 8000 or 16000 Hz, not {sample_rate}.")
    return f"wav{sample_rate // 1000}k"


def match_folders(
    corpus: str, base: Path, mixture_folder: str, reference_folders: list[str], noise_folder: str | None = None
) -> list[CorpusItem]:
    """Items from parallel folders where files of one mixture share their name.

    Raises:
        ConfigError: a folder is missing, empty, or lacks a file that the mixture folder has.
    """
    mixtures = _audio_files(_require_folder(base / mixture_folder, corpus))
    if not mixtures:
        raise ConfigError(f"{corpus}: folder {base / mixture_folder} holds no .wav or .flac files.")
    folders = {name: _audio_files(_require_folder(base / name, corpus)) for name in reference_folders}
    noise_files = _audio_files(_require_folder(base / noise_folder, corpus)) if noise_folder else {}
    items = []
    for name, mixture in mixtures.items():
        references = []
        for folder_name, files in folders.items():
            if name not in files:
                raise ConfigError(f"{corpus}: {base / folder_name / name} is missing (it matches mixture {mixture}).")
            references.append(files[name])
        if noise_folder and name not in noise_files:
            raise ConfigError(f"{corpus}: {base / noise_folder / name} is missing (it matches mixture {mixture}).")
        items.append(CorpusItem(Path(name).stem, mixture, references, noise_files.get(name)))
    return items


def librimix_items(
    root: Path | str,
    split: str = "train-360",
    mix_type: str = "both",
    sample_rate: int = 8000,
    mode: str = "min",
) -> list[CorpusItem]:
    """LibriMix items from its metadata CSV (``mix_single`` has one reference: ``source_1``).

    Args:
        root: the ``Libri2Mix`` (or ``Libri3Mix``) folder.
        split: ``train-360``, ``train-100``, ``dev`` or ``test``.
        mix_type: ``both`` (speakers + noise), ``clean`` or ``single`` (one speaker + noise).
        sample_rate: 8000 or 16000.
        mode: ``min`` or ``max``.
    """
    _check_choice("mix_type", mix_type, ("both", "clean", "single"))
    _check_choice("mode", mode, ("min", "max"))
    base = _require_folder(Path(root) / _rate_folder(sample_rate) / mode, "LibriMix")
    csv_path = base / "metadata" / f"mixture_{split}_mix_{mix_type}.csv"
    if not csv_path.is_file():
        raise ConfigError(f"LibriMix: metadata file {csv_path} does not exist.")
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        rows = list(reader)
    source_columns = sorted((c for c in columns if re.fullmatch(r"source_\d+_path", c)), key=lambda c: int(c.split("_")[1]))
    required = ["mixture_ID", "mixture_path"] + (["noise_path"] if mix_type != "clean" else [])
    for column in required + ([] if source_columns else ["source_1_path"]):
        if column not in columns:
            raise ConfigError(f"LibriMix: {csv_path} has no column {column!r} (columns: {', '.join(columns)}).")
    if mix_type == "single":
        source_columns = source_columns[:1]

    def resolve(recorded: str) -> Path:
        path = Path(recorded)
        if path.is_file():
            return path
        rerooted = base / Path(*path.parts[-3:])
        if rerooted.is_file():
            return rerooted
        raise ConfigError(f"LibriMix: file {recorded} listed in {csv_path.name} was not found (also tried {rerooted}).")

    items = []
    for row in rows:
        items.append(
            CorpusItem(
                row["mixture_ID"],
                resolve(row["mixture_path"]),
                [resolve(row[column]) for column in source_columns],
                resolve(row["noise_path"]) if mix_type != "clean" else None,
                {"length": int(row["length"])} if row.get("length") else {},
            )
        )
    return items


WHAM_TASKS = {
    "sep_clean": ("mix_clean", ["s1", "s2"]),
    "sep_noisy": ("mix_both", ["s1", "s2"]),
    "enh_single": ("mix_single", ["s1"]),
    "enh_both": ("mix_both", ["mix_clean"]),
}


def wham_items(
    root: Path | str, split: str = "tr", task: str = "sep_noisy", sample_rate: int = 8000, mode: str = "min"
) -> list[CorpusItem]:
    """WHAM! items for ``task`` (``sep_clean``, ``sep_noisy``, ``enh_single``, ``enh_both``)."""
    _check_choice("split", split, ("tr", "cv", "tt"))
    _check_choice("task", task, tuple(WHAM_TASKS))
    _check_choice("mode", mode, ("min", "max"))
    mixture_folder, reference_folders = WHAM_TASKS[task]
    base = Path(root) / _rate_folder(sample_rate) / mode / split
    noise = "noise" if mixture_folder != "mix_clean" else None
    return match_folders("WHAM!", base, mixture_folder, reference_folders, noise)


def whamr_items(
    root: Path | str,
    split: str = "tr",
    mixture: str = "both",
    reverberant_mixture: bool = True,
    reference: str = "anechoic",
    single_speaker: bool = False,
    sample_rate: int = 8000,
    mode: str = "min",
) -> list[CorpusItem]:
    """WHAMR! items: ``mix_<clean|both|single>_<anechoic|reverb>`` with ``s<k>_<anechoic|reverb>`` references.

    ``mixture="single"`` (one speaker + noise) has the single reference ``s1``; otherwise two.
    """
    _check_choice("split", split, ("tr", "cv", "tt"))
    _check_choice("mixture", mixture, ("clean", "both", "single"))
    _check_choice("reference", reference, ("anechoic", "reverb"))
    _check_choice("mode", mode, ("min", "max"))
    base = Path(root) / _rate_folder(sample_rate) / mode / split
    condition = "reverb" if reverberant_mixture else "anechoic"
    speakers = ["s1"] if mixture == "single" or single_speaker else ["s1", "s2"]
    noise = "noise" if mixture != "clean" else None
    return match_folders(
        "WHAMR!", base, f"mix_{mixture}_{condition}", [f"{s}_{reference}" for s in speakers], noise
    )


def wsj0mix_items(
    root: Path | str, speakers: int = 2, split: str = "tr", sample_rate: int = 8000, mode: str = "min"
) -> list[CorpusItem]:
    """WSJ0-2mix / WSJ0-3mix items (``root`` is the ``2speakers`` / ``3speakers`` folder)."""
    _check_choice("split", split, ("tr", "cv", "tt"))
    _check_choice("mode", mode, ("min", "max"))
    if speakers not in (2, 3):
        raise ConfigError(f"WSJ0-mix has 2 or 3 speakers, not {speakers}.")
    base = Path(root) / _rate_folder(sample_rate) / mode / split
    return match_folders(f"WSJ0-{speakers}mix", base, "mix", [f"s{k}" for k in range(1, speakers + 1)])


def voicebank_demand_items(root: Path | str, split: str = "train") -> list[CorpusItem]:
    """VoiceBank-DEMAND (28-speaker training set or test set), 48 kHz, noisy -> clean pairs."""
    _check_choice("split", split, ("train", "test"))
    suffix = "trainset_28spk_wav" if split == "train" else "testset_wav"
    return match_folders("VoiceBank-DEMAND", Path(root), f"noisy_{suffix}", [f"clean_{suffix}"])


FILEID_PATTERN = re.compile(r"fileid_(\d+)\.(?:wav|flac)$", re.IGNORECASE)


def dns_items(root: Path | str) -> list[CorpusItem]:
    """DNS Challenge synthetic pairs: ``noisy/*_fileid_<N>.wav`` with ``clean/clean_fileid_<N>.wav``.

    ``noise/noise_fileid_<N>.wav`` is attached when a ``noise`` folder exists.
    """
    base = Path(root)
    noisy = _require_folder(base / "noisy", "DNS Challenge")
    clean = {m.group(1): p for p in _require_folder(base / "clean", "DNS Challenge").iterdir()
             if (m := FILEID_PATTERN.search(p.name))}
    noise_folder = base / "noise"
    noises = {m.group(1): p for p in noise_folder.iterdir() if (m := FILEID_PATTERN.search(p.name))} \
        if noise_folder.is_dir() else {}
    items = []
    for path in sorted(noisy.iterdir()):
        match = FILEID_PATTERN.search(path.name)
        if match is None:
            continue
        file_id = match.group(1)
        if file_id not in clean:
            raise ConfigError(f"DNS Challenge: {base / 'clean' / f'clean_fileid_{file_id}.wav'} is missing (it matches {path.name}).")
        items.append(CorpusItem(f"fileid_{file_id}", path, [clean[file_id]], noises.get(file_id)))
    if not items:
        raise ConfigError(f"DNS Challenge: folder {noisy} holds no *_fileid_<N>.wav files.")
    return items


class CorpusDataset(Dataset):
    """Load adapter items as ``{"mixture": [C, T], "targets": [S, C, T], "id": str}``.

    Args:
        items: from one of the ``*_items`` functions.
        sample_rate: resample to this rate (None keeps the files' rate, which must then agree).
        segment_seconds: if set, a deterministic crop (``seed`` + index) of this length; shorter
            items are zero-padded.
        seed: seed of the crops.
    """

    def __init__(
        self,
        items: list[CorpusItem],
        sample_rate: int | None = None,
        segment_seconds: float | None = None,
        seed: int = 0,
    ) -> None:
        if not items:
            raise ConfigError("A corpus dataset needs at least one item.")
        self.items, self.sample_rate, self.segment_seconds, self.seed = items, sample_rate, segment_seconds, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        mixture = read_audio(item.mixture, self.sample_rate)  # [C, T]
        references = [read_audio(path, self.sample_rate) for path in item.references]  # S x [C, T]
        length = min([mixture.shape[-1]] + [reference.shape[-1] for reference in references])
        if any(reference.shape[0] != mixture.shape[0] for reference in references):
            raise AudioError(f"References of {item.mixture} do not have the mixture's channel count.")
        targets = np.stack([reference[:, :length] for reference in references])  # -> [S, C, T]
        mixture = mixture[:, :length]
        if self.segment_seconds is not None:
            rate = self.sample_rate or _file_rate(item.mixture)
            segment = int(round(self.segment_seconds * rate))
            rng = np.random.default_rng([self.seed, index])
            start = int(rng.integers(0, length - segment + 1)) if length > segment else 0
            mixture = _pad(mixture[:, start : start + segment], segment)
            targets = _pad(targets[..., start : start + segment], segment)
        return {"mixture": torch.from_numpy(mixture), "targets": torch.from_numpy(targets), "id": item.id}


def _pad(array: np.ndarray, length: int) -> np.ndarray:
    missing = length - array.shape[-1]
    if missing <= 0:
        return np.ascontiguousarray(array)
    return np.pad(array, [(0, 0)] * (array.ndim - 1) + [(0, missing)])  # [..., T] -> [..., length]


def _file_rate(path: Path) -> int:
    from .audio import audio_info

    return audio_info(path)[1]
