"""Fixed validation and test sets: items written once as WAV files + JSON metadata, then re-read.

Layout of a fixed set folder::

    index.json                 {"sample_rate": 16000, "count": N, "source": {...}, "format": 1}
    items.jsonl                one line per item: {"name": "00000", "tensors": {key: {"file", "shape"}}, "meta": {...}}
    00000/<key>.wav            one float32 WAV per tensor ([S, C, T] tensors are stored as S*C channels)

Float32 WAV makes the round trip exact, so metrics computed on the files equal those computed on
the generated items.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from speechkit.errors import ConfigError, OutputExistsError
from speechkit.tasks import Task

from .audio import read_audio, write_audio

if TYPE_CHECKING:
    from .minicorpus import MiniCorpus

FORMAT_VERSION = 1


def write_fixed_set(
    dataset: Dataset,
    output_dir: Path | str,
    sample_rate: int,
    count: int | None = None,
    source: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the first ``count`` items of ``dataset`` (all by default) to ``output_dir``.

    Tensor values become WAV files; numbers, strings and booleans go to the metadata.

    Raises:
        OutputExistsError: ``output_dir`` already holds a fixed set and ``overwrite`` is False.
    """
    root = Path(output_dir)
    if (root / "index.json").exists() and not overwrite:
        raise OutputExistsError(f"{root} already holds a fixed set; pass overwrite=True (--force) to replace it.")
    root.mkdir(parents=True, exist_ok=True)
    total = len(dataset) if count is None else min(count, len(dataset))
    with open(root / "items.jsonl", "w", encoding="utf-8") as lines:
        for index in range(total):
            item = dataset[index]
            name = f"{index:05d}"
            tensors, meta = {}, {}
            for key, value in item.items():
                if isinstance(value, torch.Tensor):
                    array = value.detach().cpu().numpy().astype(np.float32)
                    file_name = f"{name}/{key}.wav"
                    write_audio(root / file_name, array.reshape(-1, array.shape[-1]), sample_rate)  # -> [S*C, T]
                    tensors[key] = {"file": file_name, "shape": list(array.shape)}
                elif isinstance(value, (int, float, str, bool)) or value is None:
                    meta[key] = value
                else:
                    meta[key] = json.loads(json.dumps(value, default=str))
            lines.write(json.dumps({"name": name, "tensors": tensors, "meta": meta}, sort_keys=True) + "\n")
    index = {"format": FORMAT_VERSION, "sample_rate": sample_rate, "count": total, "source": source or {}}
    (root / "index.json").write_text(json.dumps(index, indent=2, sort_keys=True), encoding="utf-8")
    return root


class FixedSetDataset(Dataset):
    """Items of a fixed set folder written by :func:`write_fixed_set`, as the generator made them.

    Raises:
        ConfigError: the folder has no ``index.json`` / ``items.jsonl`` or a listed file is missing.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        index_path = self.root / "index.json"
        items_path = self.root / "items.jsonl"
        for required in (index_path, items_path):
            if not required.is_file():
                raise ConfigError(
                    f"{self.root} is not a fixed set: {required.name} is missing (build it with recipes/prepare_data.py)."
                )
        self.index = json.loads(index_path.read_text(encoding="utf-8"))
        self.sample_rate = int(self.index["sample_rate"])
        with open(items_path, encoding="utf-8") as handle:
            self.items = [json.loads(line) for line in handle if line.strip()]
        for record in self.items:
            for key, tensor in record["tensors"].items():
                if not (self.root / tensor["file"]).is_file():
                    raise ConfigError(f"Fixed set {self.root} lists {tensor['file']} ({key}) but the file is missing.")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        record = self.items[index]
        item: dict[str, Any] = dict(record["meta"])
        for key, tensor in record["tensors"].items():
            audio = read_audio(self.root / tensor["file"])  # [S*C, T]
            item[key] = torch.from_numpy(audio.reshape(tensor["shape"]))  # -> original shape
        return item


TASKS = ("enhancement", "separation", "dereverberation", "multichannel", "echo")
#: the model task (:class:`speechkit.tasks.Task`) each data kind above trains; the data kinds keep
#: their names because they name fixed-set and cache directories
MODEL_TASKS = MappingProxyType({
    "enhancement": Task.ENHANCEMENT,
    "separation": Task.SEPARATION,
    "dereverberation": Task.DEREVERBERATION,
    "multichannel": Task.MULTICHANNEL_ENHANCEMENT,
    "echo": Task.AEC,
})
DEFAULT_SPLIT_SEEDS = {"validation": 1_000_003, "test": 2_000_003}


def task_dataset(
    task: str,
    split: str,
    corpus: "MiniCorpus",
    length: int,
    seed: int,
    sample_rate: int = 16000,
    segment_seconds: float = 4.0,
    speaker_counts: tuple[int, ...] = (2,),
) -> Dataset:
    """The dynamic-mixing dataset of ``task`` over ``split`` of ``corpus`` with default settings."""
    from .datasets import (
        DereverberationDataset,
        EchoDataset,
        EnhancementConfig,
        EnhancementDataset,
        MultichannelConfig,
        MultichannelDataset,
        SeparationConfig,
        SeparationDataset,
    )
    from .echo import EchoConfig

    if task == "enhancement":
        config = EnhancementConfig(sample_rate=sample_rate, segment_seconds=segment_seconds)
        return EnhancementDataset.from_minicorpus(split, config, length, seed, corpus)
    if task == "dereverberation":
        base = DereverberationDataset.default_config
        config = EnhancementConfig(sample_rate=sample_rate, segment_seconds=segment_seconds,
                                   snr_range_db=base.snr_range_db, reverb=base.reverb,
                                   noise_probability=base.noise_probability)
        return DereverberationDataset(
            corpus.select("speech", split, sample_rate, include_band_limited=False),
            corpus.select("noise", split), config, length, seed, corpus.select("rir"),
        )
    if task == "separation":
        config = SeparationConfig(sample_rate=sample_rate, segment_seconds=segment_seconds,
                                  speaker_counts=speaker_counts)
        return SeparationDataset.from_minicorpus(split, config, length, seed, corpus)
    if task == "multichannel":
        config = MultichannelConfig(sample_rate=sample_rate, segment_seconds=segment_seconds)
        return MultichannelDataset.from_minicorpus(split, config, length, seed, corpus)
    if task == "echo":
        config = EchoConfig(sample_rate=sample_rate, segment_seconds=segment_seconds)
        return EchoDataset.from_minicorpus(split, config, length, seed, corpus)
    raise ConfigError(f"Task must be one of {', '.join(TASKS)}, not {task!r}.")


def build_fixed_set(
    task: str,
    split: str,
    output_dir: Path | str,
    count: int,
    corpus: "MiniCorpus",
    seed: int | None = None,
    sample_rate: int = 16000,
    segment_seconds: float = 4.0,
    speaker_counts: tuple[int, ...] = (2,),
    overwrite: bool = False,
    uniform_noise: bool = False,
) -> Path:
    """Generate ``count`` items of ``task`` on ``split`` once and write them as a fixed set.

    The seed defaults to a per-split constant, so rebuilding gives the same files. With
    ``uniform_noise`` every noise file of the split is equally likely (instead of by duration, where
    one long recording dominates), which spreads a validation set over the noise types.
    """
    if split not in DEFAULT_SPLIT_SEEDS:
        raise ConfigError(f"Fixed sets are for validation or test, not {split!r}.")
    seed = DEFAULT_SPLIT_SEEDS[split] if seed is None else seed
    dataset = task_dataset(task, split, corpus, count, seed, sample_rate, segment_seconds, speaker_counts)
    source = {"task": task, "model_task": MODEL_TASKS[task].value, "split": split, "seed": seed,
              "sample_rate": sample_rate, "segment_seconds": segment_seconds, "speaker_counts": list(speaker_counts),
              "generator": type(dataset).__name__}
    if uniform_noise:
        weights = getattr(dataset, "noise_weights", None)
        if weights is None:
            raise ConfigError(f"uniform_noise needs a task that draws noise files, not {task!r}.")
        dataset.noise_weights = np.full(len(weights), 1.0 / len(weights))
        source["noise_weights"] = "uniform"
    return write_fixed_set(dataset, output_dir, sample_rate, count, source, overwrite)
