"""What the dynamic-mixing datasets share: reverberation settings and RIR picking, the
:class:`MixingDataset` base (virtual length, seed, epoch), speech and duration-weighted noise
segments, distinct-speaker picks. The datasets themselves are in :mod:`recipes.data.datasets`
(enhancement, dereverberation, separation) and :mod:`recipes.data.multichannel_datasets`
(microphone arrays, echo cancellation).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from speechkit.errors import ConfigError

from .minicorpus import CorpusEntry, MiniCorpus, load_noise_segment, load_speech
from .mixing import item_rng, random_crop
from .rooms import MeasuredRirBank, ShoeboxConfig, simulate_shoebox


@dataclass(frozen=True)
class ReverbConfig:
    """Reverberation settings shared by the datasets.

    ``source``: ``"measured"`` (32-ch office RIRs), ``"simulated"`` (pyroomacoustics shoebox) or
    ``"both"`` (half each). ``target``: ``"early"`` (direct + ``early_ms`` of reflections),
    ``"direct"``, ``"dry"`` or ``"reverberant"``.
    """

    probability: float = 0.0
    source: str = "measured"
    target: str = "early"
    early_ms: float = 50.0
    shoebox: ShoeboxConfig = field(default_factory=ShoeboxConfig)


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


class _RirSource:
    """Picks an RIR from the measured bank or a simulated room, per ``ReverbConfig.source``."""

    def __init__(self, config: ReverbConfig, sample_rate: int, rir_entries: list[CorpusEntry]) -> None:
        self.config = config
        self.sample_rate = sample_rate
        needs_measured = config.source in ("measured", "both")
        if config.source not in ("measured", "simulated", "both"):
            raise ConfigError(f"Reverb source must be measured, simulated or both, not {config.source!r}.")
        if needs_measured and not rir_entries:
            raise ConfigError("Measured reverberation was asked for but no RIR files were given.")
        self.bank = (
            MeasuredRirBank([entry.sources[0] for entry in rir_entries], sample_rate) if rir_entries else None
        )

    def sample(self, rng: np.random.Generator, mic_count: int = 1, source_count: int = 1) -> tuple[np.ndarray, str]:
        """RIRs ``[sources, mics, L]`` and a short description of where they came from."""
        use_measured = self.config.source == "measured" or (
            self.config.source == "both" and rng.random() < 0.5
        )
        if use_measured:
            return self.bank.sample(rng, mic_count, source_count), "measured"
        responses, parameters = simulate_shoebox(rng, self.sample_rate, mic_count, source_count, self.config.shoebox)
        return responses, f"shoebox rt60={parameters['rt60']:.2f}"


class MixingDataset(Dataset):
    """Base class: fixed virtual length, seed and epoch; subclasses implement ``make_item`` and set
    :attr:`default_config`."""

    #: the config :meth:`from_minicorpus` uses when given none
    default_config: ClassVar[Any] = None
    #: whether :meth:`from_minicorpus` keeps band-limited speech by default
    keeps_band_limited: ClassVar[bool] = False

    def __init__(self, length: int, seed: int) -> None:
        if length <= 0:
            raise ConfigError(f"A dataset needs a positive length, not {length}.")
        self.length = length
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use a different (still deterministic) set of mixtures for ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(f"Index {index} is outside a dataset of {self.length} items.")
        item = self.make_item(item_rng(self.seed, self.epoch, index))
        item["index"] = int(index)
        return item

    def make_item(self, rng: np.random.Generator) -> dict:
        """Build one item from ``rng`` (override)."""
        raise NotImplementedError

    @classmethod
    def from_minicorpus(
        cls,
        split: str,
        config: Any = None,
        length: int = 10000,
        seed: int = 0,
        corpus: MiniCorpus | None = None,
        include_band_limited: bool | None = None,
    ) -> "MixingDataset":
        """The dataset over one split of the mini corpus (``../shared/data`` unless ``corpus`` is given).

        ``config`` defaults to the class's :attr:`default_config`. Band-limited (8 kHz) speech at a
        higher rate is kept per ``include_band_limited`` (None: :attr:`keeps_band_limited`).
        """
        config = config or cls.default_config
        keep = cls.keeps_band_limited if include_band_limited is None else include_band_limited
        corpus = corpus or MiniCorpus.scan()
        return cls(
            corpus.select("speech", split, config.sample_rate, keep),
            corpus.select("noise", split), config, length, seed, corpus.select("rir"),
        )


def _segment_samples(config) -> int:
    """Item length in samples of a config with ``segment_seconds`` and ``sample_rate``."""
    return int(round(config.segment_seconds * config.sample_rate))


def _speech_segment(entry: CorpusEntry, sample_rate: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``length``-sample crop of one speech entry, ``[1, T]``."""
    return random_crop(load_speech(entry, sample_rate), length, rng)


def _pick(entries: list[CorpusEntry], rng: np.random.Generator) -> CorpusEntry:
    return entries[int(rng.integers(0, len(entries)))]


SYNTHETIC_NOISE_WEIGHT_SECONDS = 5.0
MAX_NOISE_WEIGHT_SECONDS = 30.0


def noise_weights(entries: list[CorpusEntry]) -> np.ndarray:
    """Sampling probabilities of noise entries, proportional to their duration capped at 30 s.

    A long recording is drawn more often than a one-second clip, but the cap keeps the few long
    recordings from drowning the many short clips. Each synthetic entry counts as
    ``SYNTHETIC_NOISE_WEIGHT_SECONDS`` (on the mini corpus: about 30 % of training draws).
    """
    seconds = np.array([
        SYNTHETIC_NOISE_WEIGHT_SECONDS if entry.synthetic is not None or not entry.frames
        else min(MAX_NOISE_WEIGHT_SECONDS, entry.frames / entry.native_sample_rate)
        for entry in entries
    ])
    return seconds / seconds.sum()


def _pick_weighted(entries: list[CorpusEntry], weights: np.ndarray, rng: np.random.Generator) -> CorpusEntry:
    return entries[int(rng.choice(len(entries), p=weights))]


def _noise_segment(
    entries: list[CorpusEntry], weights: np.ndarray, sample_rate: int, length: int, rng: np.random.Generator
) -> tuple[CorpusEntry, np.ndarray]:
    """A duration-weighted noise entry and a random ``length``-sample segment of it, ``[1, T]``."""
    entry = _pick_weighted(entries, weights, rng)
    return entry, load_noise_segment(entry, sample_rate, length, rng)


def _pick_distinct_speakers(
    speech: list[CorpusEntry], count: int, rng: np.random.Generator
) -> list[CorpusEntry]:
    """``count`` entries of pairwise different speakers (``group``)."""
    speakers = sorted({entry.group for entry in speech})
    if len(speakers) < count:
        raise ConfigError(f"{count} distinct speakers were asked for but the pool has only {len(speakers)}.")
    chosen = rng.choice(len(speakers), size=count, replace=False)
    picked = []
    for speaker_index in chosen:
        candidates = [entry for entry in speech if entry.group == speakers[int(speaker_index)]]
        picked.append(_pick(candidates, rng))
    return picked
