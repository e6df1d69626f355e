"""Enhancement mixtures built the way real recordings happen: real sentences, real noise, rooms, devices.

One item (all ranges in :class:`RealWorldConfig`; channel conditions in
:class:`recipes.data.conditions.ConditionConfig`):

1. a sentence of one speaker, randomly cropped (shorter sentences sit at a random offset in
   silence), perhaps with a stretch of silence cut in;
2. perhaps reverberant (measured or simulated rooms); the target keeps the direct path and the
   first 50 ms of reflections;
3. noise: one to ``max_noises`` real noise recordings summed at random relative levels, perhaps
   with babble of 3-20 other speakers of the same split; or no noise at all (``clean_probability``)
   so the model learns to leave clean speech alone;
4. mixed at an SNR from ``snr_range_db`` (speech at the microphone against the noise);
5. the device channel (colouration, high-pass, telephone band) on mixture and target alike;
6. the speech level set to ``speech_level_db`` dBFS (the target's RMS; lowered if anything would
   peak above 0.99), so level variety is in the data and the target keeps the input's level;
7. faults on the mixture only (clipping, DC offset).

Item keys: ``mixture [1, T]``, ``targets [1, 1, T]``, ``noise [1, T]``, ``snr_db``, ``level_db``,
``speech_id``, ``noise_id``, ``noise_type`` (``clean``, a noise file stem, ``+babble``),
``reverb``, ``channel`` (tags of :meth:`ChannelDraw.describe`), ``index``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speechkit.errors import ConfigError

from .audio import rms_db, unit_power
from .conditions import ConditionConfig, apply_channel, apply_faults, cut_silence, draw_channel
from .datasets import EnhancementDataset, ReverbConfig, SeparationDataset
from .mixing_base import _to_tensor
from .minicorpus import CorpusEntry, load_noise_segment, load_speech
from .mixing import apply_gain_without_clipping, mix_at_snr, random_crop, reverberate, uniform


@dataclass(frozen=True)
class RealWorldConfig:
    """Mixing ranges of :class:`RealWorldEnhancementDataset`."""

    sample_rate: int = 16000
    segment_seconds: float = 3.0
    snr_range_db: tuple[float, float] = (-5.0, 25.0)
    speech_level_db: tuple[float, float] = (-45.0, -10.0)
    clean_probability: float = 0.05
    max_noises: int = 3
    extra_noise_probability: float = 0.3
    babble_probability: float = 0.2
    babble_talkers: tuple[int, int] = (3, 20)
    reverb: ReverbConfig = field(default_factory=lambda: ReverbConfig(probability=0.3, source="both", target="early"))
    conditions: ConditionConfig = field(default_factory=ConditionConfig)

    def __post_init__(self) -> None:
        if self.max_noises < 1:
            raise ConfigError(f"max_noises must be at least 1, got {self.max_noises}")
        if not 1 <= self.babble_talkers[0] <= self.babble_talkers[1]:
            raise ConfigError(f"babble_talkers must be an increasing positive range, got {self.babble_talkers}")


class RealWorldEnhancementDataset(EnhancementDataset):
    """Dynamic mixing of real speech, real noise and real conditions (see the module docstring).

    Args:
        speech: speech entries of one split (one file per utterance; ``group`` is the speaker).
        noise: noise entries of the same split.
        config: mixing ranges.
        length: items per epoch.
        seed: base seed.
        rirs: measured RIR entries (for ``config.reverb.source`` ``measured`` or ``both``).
    """

    default_config = RealWorldConfig()

    def __init__(
        self,
        speech: list[CorpusEntry],
        noise: list[CorpusEntry],
        config: RealWorldConfig = RealWorldConfig(),
        length: int = 10000,
        seed: int = 0,
        rirs: list[CorpusEntry] | None = None,
    ) -> None:
        super().__init__(speech, noise, config, length, seed, rirs)
        #: babble needs a speaker other than the target's (a one-speaker split has none)
        self.babble_possible = len({entry.group for entry in speech}) > 1

    @property
    def segment_length(self) -> int:
        """Samples per item."""
        return int(round(self.config.segment_seconds * self.config.sample_rate))

    def _sentence(self, entry: CorpusEntry, rng: np.random.Generator) -> np.ndarray:
        return random_crop(load_speech(entry, self.config.sample_rate), self.segment_length, rng)  # [1, T]

    def _babble(self, rng: np.random.Generator, exclude_group: str) -> np.ndarray:
        """Unit-power babble of 3-20 talkers of this split other than the target's speaker, ``[1, T]``."""
        low, high = self.config.babble_talkers
        talkers = int(rng.integers(low, high + 1))
        others = [entry for entry in self.speech if entry.group != exclude_group]
        total = np.zeros((1, self.segment_length), np.float64)
        for _talker in range(talkers):
            entry = others[int(rng.integers(0, len(others)))]
            sentence = self._sentence(entry, rng)
            total += unit_power(sentence) * 10 ** (rng.uniform(-3.0, 3.0) / 20.0)
        return unit_power(total)

    def _noise(self, rng: np.random.Generator, speech_group: str) -> tuple[np.ndarray, str, str]:
        """Summed noise ``[1, T]`` (unit power), its file ids and its type tag."""
        length, rate = self.segment_length, self.config.sample_rate
        count = 1
        while count < self.config.max_noises and rng.random() < self.config.extra_noise_probability:
            count += 1
        total = np.zeros((1, length), np.float64)
        ids, types = [], []
        for index in range(count):
            entry = self.noise[int(rng.choice(len(self.noise), p=self.noise_weights))]
            segment = load_noise_segment(entry, rate, length, rng)  # [1, T]
            gain_db = 0.0 if index == 0 else rng.uniform(-10.0, 0.0)
            total += unit_power(segment) * 10 ** (gain_db / 20.0)
            ids.append(entry.id)
            types.append(Path(entry.id).stem)
        if rng.random() < self.config.babble_probability and self.babble_possible:
            total += self._babble(rng, speech_group) * 10 ** (rng.uniform(-6.0, 0.0) / 20.0)
            types.append("babble")
        return unit_power(total), "+".join(ids), "+".join(types)

    def make_item(self, rng: np.random.Generator) -> dict:
        config = self.config
        rate = config.sample_rate
        entry = self.speech[int(rng.integers(0, len(self.speech)))]
        speech = self._sentence(entry, rng)  # [1, T]
        if rng.random() < config.conditions.silence_probability:
            speech = cut_silence(speech, rng, rate, config.conditions)
        target, reverb = speech, ""
        if self.rir_source is not None and rng.random() < config.reverb.probability:
            responses, reverb = self.rir_source.sample(rng)  # [1, 1, L]
            speech, target = reverberate(speech, responses[0], rate, config.reverb.target, config.reverb.early_ms)
        noise, noise_id, noise_type = self._noise(rng, entry.group)
        snr = uniform(rng, config.snr_range_db)
        if rng.random() < config.clean_probability or not np.any(noise):  # an all-silent noise segment: clean
            noise, noise_id, noise_type, snr = np.zeros_like(speech), "", "clean", float("inf")
            mixture = speech.copy()
        else:
            mixture, noise = mix_at_snr(speech, noise, snr)
        channel = draw_channel(rng, rate, config.conditions)
        mixture, target, noise = (apply_channel(signal, channel, rate) for signal in (mixture, target, noise))
        level = uniform(rng, config.speech_level_db)
        scaled, _gain = apply_gain_without_clipping(
            {"mixture": mixture, "target": target, "noise": noise}, "target", level
        )
        mixture = np.clip(apply_faults(scaled["mixture"], channel, rng, config.conditions), -1.0, 1.0)  # a file's range
        return {
            "mixture": _to_tensor(mixture),  # [1, T]
            "targets": _to_tensor(scaled["target"][None]),  # [1, T] -> [1, 1, T]
            "noise": _to_tensor(scaled["noise"]),  # [1, T]
            "snr_db": float(snr),
            "level_db": float(rms_db(scaled["target"])),
            "speech_id": entry.id,
            "noise_id": noise_id,
            "noise_type": noise_type,
            "reverb": reverb,
            "channel": channel.describe(),
        }


def realworld_dataset(
    corpus_root: str | Path,
    split: str,
    config: RealWorldConfig = RealWorldConfig(),
    length: int = 10000,
    seed: int = 0,
    max_floor_db: float | None = -35.0,
    floor_cache: str | Path | None = None,
    extra_noise: list[CorpusEntry] | None = None,
) -> RealWorldEnhancementDataset:
    """The dataset over one split of a corpus cache (:func:`recipes.data.corpora.load_corpora`).

    ``max_floor_db`` keeps only speech whose noise floor (:func:`~recipes.data.corpora.speech_floor_db`)
    is at most that (None: all), cached in ``floor_cache``; ``extra_noise`` adds noise entries
    (e.g. the mini corpus's) to the real ones.
    """
    from .corpora import load_corpora
    from .speech_folders import corpora_dataset

    return corpora_dataset(load_corpora(corpus_root), split, config, length, seed, max_floor_db, floor_cache,
                           extra_noise)


class RealWorldSeparationDataset(SeparationDataset):
    """Two-speaker (or more) mixtures of real sentences with the device channel of real recordings.

    Each :class:`~recipes.data.datasets.SeparationDataset` item (overlap, relative gains, optional
    noise and rooms) then goes through one drawn channel (:func:`~recipes.data.conditions.draw_channel`:
    colouration, high-pass, telephone band), applied to the mixture and every target alike, so
    telephone-band and high-passed mixtures are in the training data. Extra key: ``channel``.
    """

    def __init__(self, *args, conditions: ConditionConfig = ConditionConfig(clipping_probability=0.0,
                                                                         dc_offset_probability=0.0,
                                                                         silence_probability=0.0), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.conditions = conditions

    def make_item(self, rng: np.random.Generator) -> dict:
        item = super().make_item(rng)
        rate = self.config.sample_rate
        channel = draw_channel(rng, rate, self.conditions)
        for key in ("mixture", "noise"):
            item[key] = _to_tensor(apply_channel(item[key].numpy(), channel, rate))  # [1, T]
        targets = item["targets"].numpy()  # [S, 1, T]
        shaped = apply_channel(targets.reshape(-1, targets.shape[-1]), channel, rate)  # [S, T]
        item["targets"] = _to_tensor(shaped.reshape(targets.shape))  # [S, 1, T]
        item["channel"] = channel.describe()
        return item
