"""Datasets whose model input has several channels: microphone arrays (:class:`MultichannelDataset`)
and echo cancellation (:class:`EchoDataset`: microphone plus far-end reference).

Re-exported by :mod:`recipes.data.datasets`; items are built as described there.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from speechkit.errors import ConfigError

from .audio import convolve, scale_to_snr
from .echo import EchoConfig, make_echo_scenario
from .minicorpus import CorpusEntry, load_noise_segment
from .mixing import apply_gain_without_clipping, direct_path_only, mix_at_snr, reverberate, uniform
from .mixing_base import (
    MixingDataset,
    ReverbConfig,
    _noise_segment,
    _pick,
    _pick_distinct_speakers,
    _RirSource,
    _segment_samples,
    _speech_segment,
    _to_tensor,
    noise_weights,
)
from .rooms import ArrayRoomConfig, ShoeboxConfig, simulate_array_room, simulate_shoebox

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

    default_config = MultichannelConfig()

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

    default_config = EchoConfig()

    def __init__(
        self,
        speech: list[CorpusEntry],
        noise: list[CorpusEntry],
        config: EchoConfig | None = None,
        length: int = 10000,
        seed: int = 0,
        rirs: list[CorpusEntry] | None = None,
    ) -> None:
        super().__init__(length, seed)
        self.config = config or self.default_config
        if not noise:
            raise ConfigError("The echo dataset needs noise entries (for its background-noise scenarios).")
        _pick_distinct_speakers(speech, 2, np.random.default_rng(0))
        self.speech, self.noise = speech, noise
        self.noise_weights = noise_weights(noise)
        reverb = ReverbConfig(probability=1.0, source=self.config.rir_source, shoebox=ECHO_SHOEBOX)
        self.rir_source = _RirSource(reverb, self.config.sample_rate, rirs or [])

    def make_item(self, rng: np.random.Generator) -> dict:
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


@dataclass(frozen=True)
class ArrayRoomMixingConfig:
    """Microphone-array mixtures for complex spectral mapping (DeFTAN-II style), target = direct path.

    A talker, ``point_noise_range`` point noise sources (each its own real recording) and, with
    ``diffuse_probability``, a diffuse-like field (one recording, ``diffuse_sources`` independent
    segments from as many positions around the room), in a simulated room around a circular array
    (``room``) or, with ``measured_probability``, a ``mic_count``-mic sub-array (``mic_stride`` x 3 cm)
    of the measured 32-channel office line (point noise only). SNR: reverberant speech against all
    noise over all microphones. Target: the talker's direct path at the reference microphone
    (microphone 0), ``targets [1, 1, T]``.
    """

    sample_rate: int = 16000
    segment_seconds: float = 4.0
    mic_count: int = 4
    snr_range_db: tuple[float, float] = (-5.0, 15.0)
    level_range_db: tuple[float, float] = (-35.0, -15.0)
    point_noise_range: tuple[int, int] = (1, 2)
    diffuse_probability: float = 0.5
    diffuse_sources: int = 4
    diffuse_to_point_db: tuple[float, float] = (-5.0, 5.0)
    measured_probability: float = 0.0
    mic_stride: int = 2
    room: ArrayRoomConfig = field(default_factory=ArrayRoomConfig)


class ArrayRoomDataset(MixingDataset):
    """Array mixtures of :class:`ArrayRoomMixingConfig`.

    Item keys: ``mixture [M, T]``, ``targets [1, 1, T]`` (direct-path speech at microphone 0),
    ``noise [M, T]``, ``snr_db``, ``rt60`` (nominal; 0 for measured), ``array``, ``speech_id``,
    ``noise_id``, ``index``.
    """

    default_config = ArrayRoomMixingConfig()

    def __init__(
        self,
        speech: list[CorpusEntry],
        noise: list[CorpusEntry],
        config: ArrayRoomMixingConfig = ArrayRoomMixingConfig(),
        length: int = 10000,
        seed: int = 0,
        rirs: list[CorpusEntry] | None = None,
    ) -> None:
        super().__init__(length, seed)
        if not speech or not noise:
            raise ConfigError("The array dataset needs speech and noise entries.")
        if config.measured_probability > 0 and not rirs:
            raise ConfigError("measured_probability > 0 needs the measured RIR files (rirs).")
        self.speech, self.noise, self.config = speech, noise, config
        self.noise_weights = noise_weights(noise)
        self.rir_source = _RirSource(ReverbConfig(source="measured"), config.sample_rate, rirs) if rirs else None

    def _point_noise(self, rng: np.random.Generator, length: int, responses: np.ndarray) -> tuple[np.ndarray, str]:
        """One noise recording rendered through ``responses [M, L]``: ``[M, T]`` and its id."""
        entry, segment = _noise_segment(self.noise, self.noise_weights, self.config.sample_rate, length, rng)
        return convolve(segment, responses), entry.id  # [1, T] -> [M, T]

    def _diffuse_noise(self, rng: np.random.Generator, length: int, responses: np.ndarray) -> tuple[np.ndarray, str]:
        """One noise recording from ``len(responses)`` positions (independent segments): ``[M, T]`` and its id."""
        entry, _ = _noise_segment(self.noise, self.noise_weights, self.config.sample_rate, length, rng)
        field_noise = sum(
            convolve(load_noise_segment(entry, self.config.sample_rate, length, rng), response)
            for response in responses
        )  # [M, T]
        return field_noise, entry.id

    def make_item(self, rng: np.random.Generator) -> dict:
        config = self.config
        length = _segment_samples(config)
        points = int(rng.integers(config.point_noise_range[0], config.point_noise_range[1] + 1))
        measured = self.rir_source is not None and rng.random() < config.measured_probability
        diffuse = not measured and rng.random() < config.diffuse_probability
        if measured:
            responses = self.rir_source.bank.sample(rng, config.mic_count, 2, config.mic_stride)  # [2, M, L]
            speech_rir, direct_rir, noise_rirs = responses[0], direct_path_only(responses[0]), responses[1:]
            points, rt60, array = 1, 0.0, f"measured stride={config.mic_stride}"
        else:
            room = simulate_array_room(rng, config.sample_rate, config.mic_count,
                                       points + (config.diffuse_sources if diffuse else 0), config.room)
            speech_rir, direct_rir, noise_rirs = room["speech"], room["direct"], room["noise"]
            rt60, array = room["parameters"]["rt60"], f"circular rt60={room['parameters']['rt60']:.2f}"
        speech_entry = _pick(self.speech, rng)
        speech = _speech_segment(speech_entry, config.sample_rate, length, rng)  # [1, T]
        image = convolve(speech, speech_rir)  # [M, T]
        target = convolve(speech, direct_rir[:1])  # [1, T]
        noise = np.zeros_like(image)  # [M, T]
        noise_ids = []
        for index in range(points):
            point_noise, noise_id = self._point_noise(rng, length, noise_rirs[index])  # [M, T]
            noise += scale_to_snr(image, point_noise, 0.0)
            noise_ids.append(noise_id)
        if diffuse:
            field_noise, noise_id = self._diffuse_noise(rng, length, noise_rirs[points:points + config.diffuse_sources])
            ratio = uniform(rng, config.diffuse_to_point_db)
            noise += scale_to_snr(noise, field_noise, -ratio) if points else field_noise
            noise_ids.append(f"diffuse:{noise_id}")
        snr = uniform(rng, config.snr_range_db)
        mixture, noise = mix_at_snr(image, noise, snr)
        scaled, _gain = apply_gain_without_clipping(
            {"mixture": mixture, "target": target, "noise": noise}, "mixture", uniform(rng, config.level_range_db)
        )
        return {
            "mixture": _to_tensor(scaled["mixture"]),  # [M, T]
            "targets": _to_tensor(scaled["target"][None]),  # [1, T] -> [1, 1, T]
            "noise": _to_tensor(scaled["noise"]),  # [M, T]
            "snr_db": float(snr),
            "rt60": float(rt60),
            "array": array,
            "speech_id": speech_entry.id,
            "noise_id": "+".join(noise_ids),
        }
