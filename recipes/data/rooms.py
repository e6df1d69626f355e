"""Room impulse responses: measured 32-channel office RIRs and pyroomacoustics shoebox rooms.

The measured set (``rirs/office_32ch_linear``, 48 kHz, 32-mic uniform linear array with 3 cm
spacing, 9 source positions, T60 about 40 ms) is resampled once per bank to the working rate.
Simulated rooms use the image source method (pyroomacoustics, ``speechkit[train]`` extra) with
a random size, RT60 and positions; the reflection order is capped to keep generation fast, so
long RT60 tails are approximated by the late part of the capped image set.

Measured responses end where their decay meets the measurement noise floor
(:func:`truncate_at_noise_floor`): the office set decays within about 100 ms to a flat floor only
11-26 dB below its first 50 ms (4-12 % of the energy in the 400 ms after), and convolving speech
with that floor adds a noise-modulated copy of the source that no room produces (an echo path
no canceller can model, "reverberation" that is mostly noise).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechkit._optional import require
from speechkit.errors import ConfigError

from .audio import read_audio
from .mixing import uniform

MEASURED_MIC_SPACING_METRES = 0.03
MEASURED_MIC_COUNT = 32
#: analysis window of the energy envelope that finds where a response meets its noise floor
FLOOR_WINDOW_SECONDS = 0.005
#: the tail over which the noise floor is measured (the last quarter of the response)
FLOOR_TAIL_FRACTION = 0.25
#: a response ends where its envelope first falls to this many dB above the noise floor
FLOOR_MARGIN_DB = 3.0
#: a tail counts as a noise floor when its two halves differ by less than this many dB (flat)
FLOOR_FLATNESS_DB = 3.0
#: half-cosine fade-out before the cut
FLOOR_FADE_SECONDS = 0.005


def truncate_at_noise_floor(response: np.ndarray, sample_rate: int) -> np.ndarray:
    """Cut a measured response ``[mics, samples]`` where its decay meets the measurement noise floor.

    The floor is the mean power of the last :data:`FLOOR_TAIL_FRACTION` of the response (all mics
    together, so every mic is cut at the same sample and the array stays consistent). A tail whose
    two halves differ by :data:`FLOOR_FLATNESS_DB` or more is still decaying: then the response is
    returned unchanged. Otherwise it ends at the first :data:`FLOOR_WINDOW_SECONDS` window after
    the envelope's peak whose power is within :data:`FLOOR_MARGIN_DB` of the floor, with a
    half-cosine fade of :data:`FLOOR_FADE_SECONDS` before the cut.
    """
    power = (np.asarray(response, dtype=np.float64) ** 2).sum(axis=0)  # [mics, T] -> [T]
    window = max(1, int(round(FLOOR_WINDOW_SECONDS * sample_rate)))
    windows = len(power) // window
    tail = int(windows * FLOOR_TAIL_FRACTION)
    if tail < 2:
        return response
    envelope = power[: windows * window].reshape(windows, window).mean(axis=1)  # [windows]
    first_half, second_half = envelope[-tail : -tail // 2].mean(), envelope[-tail // 2 :].mean()
    if not (first_half > 0 and second_half > 0) or abs(10 * np.log10(first_half / second_half)) >= FLOOR_FLATNESS_DB:
        return response
    floor = envelope[-tail:].mean()
    peak = int(np.argmax(envelope))
    below = np.flatnonzero(envelope[peak:] <= floor * 10 ** (FLOOR_MARGIN_DB / 10))
    if not below.size:
        return response
    cut = (peak + int(below[0])) * window
    fade = min(cut, max(1, int(round(FLOOR_FADE_SECONDS * sample_rate))))
    truncated = np.array(response[..., :cut], copy=True)
    truncated[..., cut - fade :] *= 0.5 * (1 + np.cos(np.pi * np.arange(1, fade + 1) / fade))  # 1 -> 0
    return truncated


class MeasuredRirBank:
    """The measured multichannel RIRs at one sample rate, loaded lazily on first use.

    Args:
        paths: one multichannel RIR file per source position.
        sample_rate: working rate; files are resampled with soxr.
        max_seconds: RIRs are cut to this length first (the office tail is short), then where
            their decay meets the measurement noise floor (:func:`truncate_at_noise_floor`).
    """

    def __init__(self, paths: list[str | Path], sample_rate: int, max_seconds: float = 0.5) -> None:
        if not paths:
            raise ConfigError("A measured RIR bank needs at least one RIR file.")
        self.paths = [Path(path) for path in paths]
        self.sample_rate = sample_rate
        self.max_seconds = max_seconds
        self._responses: list[np.ndarray] | None = None

    def responses(self) -> list[np.ndarray]:
        """All RIRs as ``[mics, samples]`` arrays at ``sample_rate``."""
        if self._responses is None:
            length = int(self.max_seconds * self.sample_rate)
            responses = [
                truncate_at_noise_floor(read_audio(path, self.sample_rate)[:, :length], self.sample_rate)
                for path in self.paths
            ]
            longest = max(response.shape[-1] for response in responses)  # one length: positions stack
            self._responses = [np.pad(response, ((0, 0), (0, longest - response.shape[-1]))) for response in responses]
        return self._responses

    def __len__(self) -> int:
        return len(self.paths)

    def sample(
        self,
        rng: np.random.Generator,
        mic_count: int = 1,
        source_count: int = 1,
        mic_stride: int = 1,
    ) -> np.ndarray:
        """RIRs ``[source_count, mic_count, samples]`` from distinct random source positions.

        The ``mic_count`` microphones are a contiguous sub-array (every ``mic_stride``-th mic) at
        a random position along the 32-mic line.
        """
        responses = self.responses()
        if source_count > len(responses):
            raise ConfigError(
                f"Asked for {source_count} distinct source positions but the bank has {len(responses)}."
            )
        span = (mic_count - 1) * mic_stride + 1
        mic_total = responses[0].shape[0]
        if span > mic_total:
            raise ConfigError(f"A {mic_count}-mic sub-array with stride {mic_stride} does not fit {mic_total} mics.")
        first_mic = int(rng.integers(0, mic_total - span + 1))
        mics = np.arange(first_mic, first_mic + span, mic_stride)
        positions = rng.choice(len(responses), size=source_count, replace=False)
        return np.stack([responses[int(p)][mics] for p in positions])  # -> [sources, mics, samples]


@dataclass(frozen=True)
class ShoeboxConfig:
    """Random shoebox room parameters (metres, seconds)."""

    room_size_min: tuple[float, float, float] = (3.0, 3.0, 2.4)
    room_size_max: tuple[float, float, float] = (10.0, 8.0, 3.5)
    rt60_range: tuple[float, float] = (0.2, 0.7)
    max_order: int = 12
    mic_spacing: float = 0.05
    source_distance_range: tuple[float, float] = (0.5, 2.5)
    wall_margin: float = 0.4
    max_seconds: float = 0.8


def simulate_shoebox(
    rng: np.random.Generator,
    sample_rate: int,
    mic_count: int = 1,
    source_count: int = 1,
    config: ShoeboxConfig = ShoeboxConfig(),
) -> tuple[np.ndarray, dict]:
    """RIRs ``[source_count, mic_count, samples]`` of a random shoebox room and its parameters.

    The microphones form a linear array with ``config.mic_spacing`` in a random orientation;
    each source is placed at a random distance and direction from the array centre.
    """
    pyroomacoustics = require("pyroomacoustics", "train", "simulated rooms")
    size = np.array([uniform(rng, (low, high)) for low, high in zip(config.room_size_min, config.room_size_max)])
    rt60 = uniform(rng, config.rt60_range)
    try:
        absorption, order = pyroomacoustics.inverse_sabine(rt60, size)
    except ValueError:  # RT60 too short for this room: use the most absorbing walls
        absorption, order = 0.99, 0
    margin = config.wall_margin + (mic_count - 1) * config.mic_spacing / 2
    centre = np.array([uniform(rng, (margin, size[0] - margin)), uniform(rng, (margin, size[1] - margin)),
                       uniform(rng, (1.0, min(1.8, size[2] - 0.3)))])
    angle = uniform(rng, (0.0, np.pi))
    offsets = (np.arange(mic_count) - (mic_count - 1) / 2) * config.mic_spacing
    mics = centre[:, None] + np.stack([offsets * np.cos(angle), offsets * np.sin(angle), 0 * offsets])  # [3, M]
    room = pyroomacoustics.ShoeBox(
        size, fs=sample_rate, materials=pyroomacoustics.Material(float(absorption)),
        max_order=int(min(order, config.max_order)),
    )
    sources = []
    for _ in range(source_count):
        for _attempt in range(50):
            distance = uniform(rng, config.source_distance_range)
            direction = uniform(rng, (0.0, 2 * np.pi))
            position = centre + np.array([distance * np.cos(direction), distance * np.sin(direction),
                                          uniform(rng, (-0.3, 0.3))])
            if np.all(position > config.wall_margin * 0.5) and np.all(position < size - config.wall_margin * 0.5):
                break
        else:  # no random position fitted: put the source in the middle of the room
            position = size / 2
        sources.append(position)
        room.add_source(position)
    room.add_microphone_array(mics)
    room.compute_rir()
    length = min(int(config.max_seconds * sample_rate), max(len(room.rir[m][s]) for m in range(mic_count)
                                                             for s in range(source_count)))
    responses = np.zeros((source_count, mic_count, length), dtype=np.float32)
    for mic in range(mic_count):
        for source in range(source_count):
            response = np.asarray(room.rir[mic][source], dtype=np.float32)[:length]
            responses[source, mic, : response.shape[0]] = response
    parameters = {"room_size": [float(v) for v in size], "rt60": float(rt60),
                  "max_order": int(min(order, config.max_order))}
    return responses, parameters


@dataclass(frozen=True)
class ArrayRoomConfig:
    """Shoebox rooms around a uniform circular array (the DeFTAN-II data generator's ranges).

    Room 5-10 x 5-10 x 3-4 m, RT60 0.2-1.2 s, array radius 10 cm, talker 0.75-2.0 m from the array
    centre (the DNS configuration; 0.75-2.5 m for WSJCAM0). The reference renders the late tail by
    ray tracing (about 5 s per room here); ``ray_tracing=False`` (default, for on-the-fly mixing
    on a CPU) uses the image sources up to ``max_order`` only, so the longest tails are shorter
    than the nominal RT60 (items report the nominal value; a nominal 1.2 s room measured about
    0.7 s with order 20).
    """

    room_size_min: tuple[float, float, float] = (5.0, 5.0, 3.0)
    room_size_max: tuple[float, float, float] = (10.0, 10.0, 4.0)
    rt60_range: tuple[float, float] = (0.2, 1.2)
    array_radius: float = 0.1
    source_distance_range: tuple[float, float] = (0.75, 2.0)
    max_order: int = 24
    ray_tracing: bool = False
    wall_margin: float = 0.5
    max_seconds: float = 1.0


def circular_array(centre: np.ndarray, count: int, radius: float, rotation: float = 0.0) -> np.ndarray:
    """Positions ``[3, count]`` of a horizontal uniform circular array (microphone 0 at ``rotation``)."""
    angles = rotation + 2.0 * np.pi * np.arange(count) / count
    return centre[:, None] + np.stack([radius * np.cos(angles), radius * np.sin(angles), 0.0 * angles])


def _random_position(rng: np.random.Generator, size: np.ndarray, margin: float) -> np.ndarray:
    return np.array([uniform(rng, (margin, size[0] - margin)), uniform(rng, (margin, size[1] - margin)),
                     uniform(rng, (1.0, min(2.0, size[2] - 0.3)))])


def simulate_array_room(
    rng: np.random.Generator,
    sample_rate: int,
    mic_count: int,
    noise_sources: int = 1,
    config: ArrayRoomConfig = ArrayRoomConfig(),
) -> dict:
    """A random room around a circular array: talker and noise-source responses, talker direct path.

    Returns ``{"speech": [M, L], "direct": [M, L], "noise": [noise_sources, M, L], "parameters": {...}}``.
    ``direct`` is the same talker rendered with reflection order 0 (the direct path only), aligned
    with ``speech``; noise sources stand anywhere in the room (not nearer than 0.5 m to the array).
    """
    pyroomacoustics = require("pyroomacoustics", "train", "simulated rooms")
    size = np.array([uniform(rng, (low, high)) for low, high in zip(config.room_size_min, config.room_size_max)])
    rt60 = uniform(rng, config.rt60_range)
    try:
        absorption, order = pyroomacoustics.inverse_sabine(rt60, size)
    except ValueError:  # RT60 too short for this room: the most absorbing walls
        absorption, order = 0.99, 0
    margin = config.wall_margin + config.array_radius
    centre = _random_position(rng, size, margin)
    mics = circular_array(centre, mic_count, config.array_radius, uniform(rng, (0.0, 2 * np.pi)))  # [3, M]
    for _attempt in range(50):
        distance, direction = uniform(rng, config.source_distance_range), uniform(rng, (0.0, 2 * np.pi))
        talker = centre + np.array([distance * np.cos(direction), distance * np.sin(direction),
                                    uniform(rng, (-0.3, 0.3))])
        if np.all(talker > config.wall_margin * 0.5) and np.all(talker < size - config.wall_margin * 0.5):
            break
    else:  # no random position fitted: the talker at the nearest allowed distance along x
        talker = centre + np.array([config.source_distance_range[0], 0.0, 0.0])
    noise_positions = []
    for _ in range(noise_sources):
        for _attempt in range(50):
            position = _random_position(rng, size, config.wall_margin * 0.5)
            if np.linalg.norm(position - centre) > 0.5:
                break
        noise_positions.append(position)
    rooms = {}
    for name, reflection_order, sources in (("full", int(min(order, config.max_order)), [talker, *noise_positions]),
                                            ("direct", 0, [talker])):
        ray_tracing = bool(config.ray_tracing and name == "full")  # the direct path has no late tail
        room = pyroomacoustics.ShoeBox(size, fs=sample_rate, materials=pyroomacoustics.Material(float(absorption)),
                                       max_order=reflection_order, ray_tracing=ray_tracing,
                                       air_absorption=bool(config.ray_tracing))  # same air on both paths
        for position in sources:
            room.add_source(position)
        room.add_microphone_array(mics)
        room.compute_rir()
        rooms[name] = room
    length = int(config.max_seconds * sample_rate)

    def responses(room, source: int) -> np.ndarray:
        out = np.zeros((mic_count, length), dtype=np.float32)
        for mic in range(mic_count):
            response = np.asarray(room.rir[mic][source], dtype=np.float32)[:length]
            out[mic, : response.shape[0]] = response
        return out  # [M, L]

    speech = responses(rooms["full"], 0)
    noise = np.stack([responses(rooms["full"], 1 + index) for index in range(noise_sources)]) if noise_sources \
        else np.zeros((0, mic_count, length), dtype=np.float32)
    parameters = {"room_size": [float(v) for v in size], "rt60": float(rt60),
                  "max_order": int(min(order, config.max_order)), "talker_distance": float(np.linalg.norm(
                      talker - centre)), "ray_tracing": bool(config.ray_tracing)}
    return {"speech": speech, "direct": responses(rooms["direct"], 0), "noise": noise, "parameters": parameters}
