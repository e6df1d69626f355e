"""Torch datasets with deterministic dynamic mixing for every task.

Each item is a dict with at least ``"mixture"`` ``[C, T]`` and ``"targets"`` ``[S, C_out, T]``
float32 tensors (the model contract: ``forward(x[B, C_in, T]) -> y[B, S, C_out, T]``), plus
metadata (numbers and strings, so the default collate function batches them). Item ``index``
of epoch ``e`` is built from ``item_rng(seed, e, index)``: workers and DDP ranks agree, and
``set_epoch`` gives fresh mixtures each epoch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from speechkit.errors import ConfigError

from .audio import convolve, fit_length, rms_db, scale_to_snr
from .minicorpus import CorpusEntry, MiniCorpus, load_noise_segment, load_speech
from .mixing import (
    apply_gain_without_clipping,
    item_rng,
    mix_at_snr,
    overlap_layout,
    random_crop,
    reverberate,
    uniform,
)
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


@dataclass(frozen=True)
class EnhancementConfig:
    """Dynamic mixing settings for denoising (and, with reverberation, joint dereverberation)."""

    sample_rate: int = 16000
    segment_seconds: float = 4.0
    snr_range_db: tuple[float, float] = (-5.0, 15.0)
    level_range_db: tuple[float, float] = (-35.0, -15.0)
    reverb: ReverbConfig = field(default_factory=ReverbConfig)
    noise_probability: float = 1.0


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
    """Base class: fixed virtual length, seed and epoch; subclasses implement ``make_item``."""

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
    def _from_corpus_split(
        cls, split: str, config, length: int, seed: int, corpus: MiniCorpus | None, include_band_limited: bool
    ) -> "MixingDataset":
        """``cls`` over the speech, noise and RIR entries of one mini-corpus split (``from_minicorpus``)."""
        corpus = corpus or MiniCorpus.scan()
        return cls(
            corpus.select("speech", split, config.sample_rate, include_band_limited),
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


class EnhancementDataset(MixingDataset):
    """Speech + noise at a random SNR and level, optionally reverberant; one speaker, one channel.

    Item keys: ``mixture [1, T]``, ``targets [1, 1, T]``, ``noise [1, T]``, ``snr_db``,
    ``level_db``, ``speech_id``, ``noise_id``, ``reverb`` ("" when dry), ``index``.
    The SNR is measured between the (reverberant) speech at the microphone and the noise.

    Args:
        speech: speech entries (e.g. ``MiniCorpus.select("speech", "train")``).
        noise: noise entries.
        config: mixing settings.
        length: number of items per epoch.
        seed: base seed.
        rirs: measured RIR entries (needed when ``config.reverb`` uses measured RIRs).
    """

    def __init__(
        self,
        speech: list[CorpusEntry],
        noise: list[CorpusEntry],
        config: EnhancementConfig = EnhancementConfig(),
        length: int = 10000,
        seed: int = 0,
        rirs: list[CorpusEntry] | None = None,
    ) -> None:
        super().__init__(length, seed)
        if not speech:
            raise ConfigError("The enhancement dataset needs at least one speech entry.")
        if not noise:
            raise ConfigError("The enhancement dataset needs at least one noise entry.")
        self.speech = speech
        self.noise = noise
        self.config = config
        self.noise_weights = noise_weights(noise)
        self.rir_source = (
            _RirSource(config.reverb, config.sample_rate, rirs or []) if config.reverb.probability > 0 else None
        )

    @classmethod
    def from_minicorpus(
        cls,
        split: str,
        config: EnhancementConfig | None = None,
        length: int = 10000,
        seed: int = 0,
        corpus: MiniCorpus | None = None,
        include_band_limited: bool = False,
    ) -> "EnhancementDataset":
        """The dataset over one split of the mini corpus (``../shared/data`` unless ``corpus`` is given).

        ``config`` defaults to the class's ``default_config`` (plain enhancement, or always-reverberant
        for :class:`DereverberationDataset`). Band-limited (8 kHz) speech is left out at 16 kHz unless
        ``include_band_limited``.
        """
        config = config or getattr(cls, "default_config", EnhancementConfig())
        return cls._from_corpus_split(split, config, length, seed, corpus, include_band_limited)

    def make_item(self, rng: np.random.Generator) -> dict:
        config = self.config
        length = _segment_samples(config)
        speech_entry = _pick(self.speech, rng)
        speech = _speech_segment(speech_entry, config.sample_rate, length, rng)  # [1, T]
        target = speech
        reverb_description = ""
        if self.rir_source is not None and rng.random() < config.reverb.probability:
            responses, reverb_description = self.rir_source.sample(rng)  # [1, 1, L]
            speech, target = reverberate(
                speech, responses[0], config.sample_rate, config.reverb.target, config.reverb.early_ms
            )
        noise_entry, noise = _noise_segment(self.noise, self.noise_weights, config.sample_rate, length, rng)  # [1, T]
        snr = uniform(rng, config.snr_range_db)
        if rng.random() < config.noise_probability:
            mixture, noise = mix_at_snr(speech, noise, snr)
        else:
            noise_entry, snr, noise = None, float("inf"), np.zeros_like(speech)
            mixture = speech.copy()
        level = uniform(rng, config.level_range_db)
        scaled, _gain = apply_gain_without_clipping(
            {"mixture": mixture, "target": target, "noise": noise}, "mixture", level
        )
        return {
            "mixture": _to_tensor(scaled["mixture"]),  # [1, T]
            "targets": _to_tensor(scaled["target"][None]),  # [1, T] -> [1, 1, T]
            "noise": _to_tensor(scaled["noise"]),  # [1, T]
            "snr_db": float(snr),
            "level_db": float(rms_db(scaled["mixture"])),
            "speech_id": speech_entry.id,
            "noise_id": noise_entry.id if noise_entry is not None else "",
            "reverb": reverb_description,
        }


class DereverberationDataset(EnhancementDataset):
    """Reverberant speech (every item) with optional light noise; target early or dry speech.

    Same item keys as :class:`EnhancementDataset`. Defaults: RIRs from simulated shoebox rooms
    (RT60 0.2-0.7 s) and the measured office RIRs half each, target = direct path + 50 ms,
    noise in half the items at 10-30 dB SNR.
    """

    default_config = EnhancementConfig(
        snr_range_db=(10.0, 30.0),
        reverb=ReverbConfig(probability=1.0, source="both", target="early"),
        noise_probability=0.5,
    )

    def __init__(
        self,
        speech: list[CorpusEntry],
        noise: list[CorpusEntry],
        config: EnhancementConfig | None = None,
        length: int = 10000,
        seed: int = 0,
        rirs: list[CorpusEntry] | None = None,
    ) -> None:
        super().__init__(speech, noise, config or self.default_config, length, seed, rirs)
        if self.config.reverb.probability < 1.0:
            raise ConfigError("A dereverberation dataset needs reverb probability 1.")


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


@dataclass(frozen=True)
class SeparationConfig:
    """Dynamic mixing settings for 2-4 speaker separation (optionally noisy and reverberant)."""

    sample_rate: int = 8000
    segment_seconds: float = 4.0
    speaker_counts: tuple[int, ...] = (2,)
    relative_gain_range_db: tuple[float, float] = (-5.0, 5.0)
    overlap_range: tuple[float, float] = (0.5, 1.0)
    level_range_db: tuple[float, float] = (-35.0, -15.0)
    noise_probability: float = 0.0
    snr_range_db: tuple[float, float] = (0.0, 15.0)
    reverb: ReverbConfig = field(default_factory=ReverbConfig)


class SeparationDataset(MixingDataset):
    """Mixtures of 2-4 different speakers with random gains and overlap ratio.

    Item keys: ``mixture [1, T]``, ``targets [S, 1, T]`` (each speaker's image: dry or, with
    reverberation, per ``ReverbConfig.target``), ``noise [1, T]``, ``source_count``,
    ``overlap_ratio``, ``snr_db`` (inf without noise), ``speech_ids`` ("|"-joined), ``index``.
    Items with different speaker counts need :func:`pad_sources_collate` to be batched.
    """

    def __init__(
        self,
        speech: list[CorpusEntry],
        noise: list[CorpusEntry] | None = None,
        config: SeparationConfig = SeparationConfig(),
        length: int = 10000,
        seed: int = 0,
        rirs: list[CorpusEntry] | None = None,
    ) -> None:
        super().__init__(length, seed)
        if not config.speaker_counts or min(config.speaker_counts) < 1:
            raise ConfigError(f"Speaker counts must be positive, not {config.speaker_counts}.")
        if config.noise_probability > 0 and not noise:
            raise ConfigError("Noisy separation mixtures were asked for but no noise entries were given.")
        self.speech = speech
        self.noise = noise or []
        self.noise_weights = noise_weights(self.noise) if self.noise else None
        self.config = config
        self.rir_source = (
            _RirSource(config.reverb, config.sample_rate, rirs or []) if config.reverb.probability > 0 else None
        )
        _pick_distinct_speakers(speech, max(config.speaker_counts), np.random.default_rng(0))

    @classmethod
    def from_minicorpus(
        cls,
        split: str,
        config: SeparationConfig = SeparationConfig(),
        length: int = 10000,
        seed: int = 0,
        corpus: MiniCorpus | None = None,
        include_band_limited: bool = True,
    ) -> "SeparationDataset":
        """The dataset over one split of the mini corpus."""
        return cls._from_corpus_split(split, config, length, seed, corpus, include_band_limited)

    def make_item(self, rng: np.random.Generator) -> dict:
        config = self.config
        length = _segment_samples(config)
        count = int(rng.choice(config.speaker_counts))
        entries = _pick_distinct_speakers(self.speech, count, rng)
        overlap = uniform(rng, config.overlap_range)
        layout = overlap_layout(count, length, overlap)
        responses, reverb_description = None, ""
        if self.rir_source is not None and rng.random() < config.reverb.probability:
            responses, reverb_description = self.rir_source.sample(rng, 1, count)  # [S, 1, L]
        images, targets = [], []
        for position, entry in enumerate(entries):
            speech = _speech_segment(entry, config.sample_rate, layout.lengths[position], rng)
            speech = fit_length(speech, length, layout.starts[position])  # [1, L_k] -> [1, T]
            gain = 10.0 ** (uniform(rng, config.relative_gain_range_db) / 20.0)
            speech = speech / (np.sqrt(np.mean(speech**2)) + 1e-8) * gain
            if responses is not None:
                image, target = reverberate(
                    speech, responses[position], config.sample_rate, config.reverb.target, config.reverb.early_ms
                )
            else:
                image, target = speech, speech
            images.append(image)
            targets.append(target)
        speech_sum = np.sum(images, axis=0)  # [S, 1, T] -> [1, T]
        noise = np.zeros_like(speech_sum)
        snr, noise_id = float("inf"), ""
        if self.noise and rng.random() < config.noise_probability:
            noise_entry = _pick_weighted(self.noise, self.noise_weights, rng)
            snr, noise_id = uniform(rng, config.snr_range_db), noise_entry.id
            _, noise = mix_at_snr(speech_sum, load_noise_segment(noise_entry, config.sample_rate, length, rng), snr)
        signals = {"mixture": speech_sum + noise, "noise": noise}
        signals.update({f"target_{k}": target for k, target in enumerate(targets)})
        scaled, _gain = apply_gain_without_clipping(signals, "mixture", uniform(rng, config.level_range_db))
        stacked_targets = np.stack([scaled[f"target_{k}"] for k in range(count)])  # -> [S, 1, T]
        return {
            "mixture": _to_tensor(scaled["mixture"]),  # [1, T]
            "targets": _to_tensor(stacked_targets),  # [S, 1, T]
            "noise": _to_tensor(scaled["noise"]),  # [1, T]
            "source_count": count,
            "overlap_ratio": float(overlap),
            "snr_db": float(snr),
            "speech_ids": "|".join(entry.id for entry in entries),
            "noise_id": noise_id,
            "reverb": reverb_description,
        }


def pad_sources_collate(items: list[dict]) -> dict:
    """Collate items whose ``targets`` have different source counts by zero-padding ``S``.

    The batch keeps ``source_count`` so losses can ignore the padded (silent) sources.
    """
    from torch.utils.data import default_collate

    most = max(item["targets"].shape[0] for item in items)
    padded = []
    for item in items:
        targets = item["targets"]
        extra = most - targets.shape[0]
        if extra:
            zeros = targets.new_zeros((extra,) + tuple(targets.shape[1:]))
            item = dict(item, targets=torch.cat([targets, zeros]))  # [S, C, T] -> [S_max, C, T]
        padded.append(item)
    return default_collate(padded)


@dataclass(frozen=True)
class MultichannelConfig:
    """Dynamic mixing for multichannel enhancement: a speaker and a noise source in a room.

    ``array``: ``"measured"`` (a sub-array of the 32-mic office line, ``mic_stride`` x 3 cm) or
    ``"simulated"`` (a linear array in a shoebox room, ``reverb.shoebox.mic_spacing``).
    ``target_channels``: ``"reference"`` (mic 0 only, ``targets [1, 1, T]``) or ``"all"``
    (``targets [1, M, T]``). ``sensor_noise_db``: level of independent noise per mic relative
    to the speech image (a crude diffuse component; None disables it).
    """

    sample_rate: int = 16000
    segment_seconds: float = 4.0
    mic_count: int = 4
    mic_stride: int = 2
    array: str = "measured"
    snr_range_db: tuple[float, float] = (-5.0, 15.0)
    level_range_db: tuple[float, float] = (-35.0, -15.0)
    sensor_noise_db: float | None = -40.0
    target_channels: str = "reference"
    reverb: ReverbConfig = field(default_factory=lambda: ReverbConfig(probability=1.0, target="early"))


class MultichannelDataset(MixingDataset):
    """M-microphone mixtures of one speaker and one spatial noise source (plus sensor noise).

    Item keys: ``mixture [M, T]``, ``targets [1, 1 or M, T]`` (speech image at the reference mic
    or at every mic, per ``ReverbConfig.target``), ``noise [M, T]``, ``snr_db`` (speech image vs
    all noise, over all mics), ``array``, ``speech_id``, ``noise_id``, ``index``.
    """

    def __init__(
        self,
        speech: list[CorpusEntry],
        noise: list[CorpusEntry],
        config: MultichannelConfig = MultichannelConfig(),
        length: int = 10000,
        seed: int = 0,
        rirs: list[CorpusEntry] | None = None,
    ) -> None:
        super().__init__(length, seed)
        if config.array not in ("measured", "simulated"):
            raise ConfigError(f"Array must be measured or simulated, not {config.array!r}.")
        if config.target_channels not in ("reference", "all"):
            raise ConfigError(f"target_channels must be reference or all, not {config.target_channels!r}.")
        if not speech or not noise:
            raise ConfigError("The multichannel dataset needs speech and noise entries.")
        self.speech, self.noise, self.config = speech, noise, config
        self.noise_weights = noise_weights(noise)
        reverb = ReverbConfig(
            probability=1.0, source=config.array, target=config.reverb.target,
            early_ms=config.reverb.early_ms, shoebox=config.reverb.shoebox,
        )
        self.rir_source = _RirSource(reverb, config.sample_rate, rirs or [])

    @classmethod
    def from_minicorpus(
        cls,
        split: str,
        config: MultichannelConfig = MultichannelConfig(),
        length: int = 10000,
        seed: int = 0,
        corpus: MiniCorpus | None = None,
        include_band_limited: bool = False,
    ) -> "MultichannelDataset":
        """The dataset over one split of the mini corpus."""
        return cls._from_corpus_split(split, config, length, seed, corpus, include_band_limited)

    def make_item(self, rng: np.random.Generator) -> dict:
        config = self.config
        length = _segment_samples(config)
        if config.array == "measured":
            responses = self.rir_source.bank.sample(rng, config.mic_count, 2, config.mic_stride)  # [2, M, L]
            array_description = f"measured stride={config.mic_stride}"
        else:
            responses, parameters = simulate_shoebox(
                rng, config.sample_rate, config.mic_count, 2, config.reverb.shoebox
            )  # [2, M, L]
            array_description = f"shoebox rt60={parameters['rt60']:.2f}"
        speech_entry = _pick(self.speech, rng)
        speech = _speech_segment(speech_entry, config.sample_rate, length, rng)  # [1, T]
        image, target = reverberate(speech, responses[0], config.sample_rate, config.reverb.target,
                                    config.reverb.early_ms)  # -> [M, T], [M, T]
        noise_entry, noise_dry = _noise_segment(
            self.noise, self.noise_weights, config.sample_rate, length, rng
        )  # [1, T]
        noise = convolve(noise_dry, responses[1])  # [1, T] -> [M, T]
        if config.sensor_noise_db is not None:
            sensor = rng.standard_normal(noise.shape).astype(np.float32)
            noise = noise + scale_to_snr(image, sensor, -config.sensor_noise_db)
        snr = uniform(rng, config.snr_range_db)
        mixture, noise = mix_at_snr(image, noise, snr)
        if config.target_channels == "reference":
            target = target[:1]  # [M, T] -> [1, T]
        scaled, _gain = apply_gain_without_clipping(
            {"mixture": mixture, "target": target, "noise": noise}, "mixture", uniform(rng, config.level_range_db)
        )
        return {
            "mixture": _to_tensor(scaled["mixture"]),  # [M, T]
            "targets": _to_tensor(scaled["target"][None]),  # [1 or M, T] -> [1, 1 or M, T]
            "noise": _to_tensor(scaled["noise"]),  # [M, T]
            "snr_db": float(snr),
            "array": array_description,
            "speech_id": speech_entry.id,
            "noise_id": noise_entry.id,
        }


ECHO_SHOEBOX = ShoeboxConfig(source_distance_range=(0.1, 0.8), rt60_range=(0.15, 0.6))


class EchoDataset(MixingDataset):
    """Echo cancellation scenarios (see ``recipes/data/echo.py``): far-end and near-end talkers differ.

    Item keys: ``mixture [2, T]`` (mic, far-end reference), ``targets [1, 1, T]`` (near-end
    speech), ``mic``, ``far_end``, ``near_end``, ``echo``, ``noise`` (``[1, T]`` each),
    ``scenario``, ``ser_db``, ``snr_db``, ``delay_ms``, ``echo_path_change_sample`` (-1: none),
    ``nonlinearity``, ``far_id``, ``near_id``, ``noise_id``, ``rir``, ``index``.
    """

    def __init__(
        self,
        speech: list[CorpusEntry],
        noise: list[CorpusEntry],
        config: "EchoConfig | None" = None,
        length: int = 10000,
        seed: int = 0,
        rirs: list[CorpusEntry] | None = None,
    ) -> None:
        from .echo import EchoConfig

        super().__init__(length, seed)
        self.config = config or EchoConfig()
        if not noise:
            raise ConfigError("The echo dataset needs noise entries (for its background-noise scenarios).")
        _pick_distinct_speakers(speech, 2, np.random.default_rng(0))
        self.speech, self.noise = speech, noise
        self.noise_weights = noise_weights(noise)
        reverb = ReverbConfig(probability=1.0, source=self.config.rir_source, shoebox=ECHO_SHOEBOX)
        self.rir_source = _RirSource(reverb, self.config.sample_rate, rirs or [])

    @classmethod
    def from_minicorpus(
        cls,
        split: str,
        config: "EchoConfig | None" = None,
        length: int = 10000,
        seed: int = 0,
        corpus: MiniCorpus | None = None,
        include_band_limited: bool = False,
    ) -> "EchoDataset":
        """The dataset over one split of the mini corpus."""
        from .echo import EchoConfig

        return cls._from_corpus_split(split, config or EchoConfig(), length, seed, corpus, include_band_limited)

    def make_item(self, rng: np.random.Generator) -> dict:
        from .echo import make_echo_scenario

        config = self.config
        length = _segment_samples(config)
        far_entry, near_entry = _pick_distinct_speakers(self.speech, 2, rng)
        far = _speech_segment(far_entry, config.sample_rate, length, rng)  # [1, T]
        near = _speech_segment(near_entry, config.sample_rate, length, rng)  # [1, T]
        noise_entry, noise = _noise_segment(self.noise, self.noise_weights, config.sample_rate, length, rng)  # [1, T]
        responses, rir_description = self.rir_source.sample(rng, 1, 2)  # [2, 1, L]
        scenario = make_echo_scenario(rng, config, far, near, noise, responses)
        item = {key: _to_tensor(value) if isinstance(value, np.ndarray) else value for key, value in scenario.items()}
        item["mixture"] = torch.cat([item["mic"], item["far_end"]])  # 2 x [1, T] -> [2, T]
        item["targets"] = item["near_end"][None]  # [1, T] -> [1, 1, T]
        item.update(far_id=far_entry.id, near_id=near_entry.id, noise_id=noise_entry.id, rir=rir_description)
        return item
