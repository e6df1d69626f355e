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

from speechkit.errors import ConfigError

from .audio import fit_length, rms_db
from .minicorpus import CorpusEntry, load_noise_segment
from .mixing import apply_gain_without_clipping, mix_at_snr, overlap_layout, reverberate, uniform
from .mixing_base import (  # noqa: F401 (shared machinery, re-exported)
    MAX_NOISE_WEIGHT_SECONDS,
    SYNTHETIC_NOISE_WEIGHT_SECONDS,
    MixingDataset,
    ReverbConfig,
    _noise_segment,
    _pick,
    _pick_distinct_speakers,
    _pick_weighted,
    _RirSource,
    _segment_samples,
    _speech_segment,
    _to_tensor,
    noise_weights,
)
from .multichannel_datasets import ECHO_SHOEBOX, EchoDataset, MultichannelConfig, MultichannelDataset  # noqa: F401


@dataclass(frozen=True)
class EnhancementConfig:
    """Dynamic mixing settings for denoising (and, with reverberation, joint dereverberation)."""

    sample_rate: int = 16000
    segment_seconds: float = 4.0
    snr_range_db: tuple[float, float] = (-5.0, 15.0)
    level_range_db: tuple[float, float] = (-35.0, -15.0)
    reverb: ReverbConfig = field(default_factory=ReverbConfig)
    noise_probability: float = 1.0


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

    default_config = EnhancementConfig()

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

    default_config = SeparationConfig()
    keeps_band_limited = True

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
