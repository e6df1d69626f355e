"""Recording conditions that real use brings, as training-time augmentations with stated ranges.

Each function takes and returns float32 ``[1, T]`` numpy arrays and draws only from the ``rng``
it is given, so an item is reproducible from its seed. Which side they apply to follows what an
enhancer should learn:

* the channel (microphone colouration, a high-pass, telephone band-limiting) changes the speech
  and the noise alike, so it is applied to the mixture *and* the target: the model must keep the
  colour it hears, not invent a studio voice (transparency);
* faults (clipping, DC offset) are applied to the mixture only: the target is what the talker
  said, without the fault;
* silence stretches are cut into the speech before mixing, so pauses of pure noise are common
  (the model must suppress noise there, not pump it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speechkit.errors import ConfigError

from .audio import resample


@dataclass(frozen=True)
class ConditionConfig:
    """Probabilities and ranges of each condition (a probability of 0 turns it off)."""

    colouration_probability: float = 0.5
    eq_bands: tuple[int, int] = (1, 3)  # peaking filters per item
    eq_gain_db: tuple[float, float] = (-8.0, 8.0)
    eq_frequency_hz: tuple[float, float] = (150.0, 6000.0)
    highpass_probability: float = 0.3
    highpass_hz: tuple[float, float] = (50.0, 300.0)
    telephone_probability: float = 0.15  # 8 kHz telephone-band content in a 16 kHz file
    clipping_probability: float = 0.05
    clipping_level: tuple[float, float] = (0.3, 0.9)  # fraction of the peak kept
    dc_offset_probability: float = 0.05
    dc_offset: tuple[float, float] = (0.001, 0.02)  # of full scale
    silence_probability: float = 0.25
    silence_seconds: tuple[float, float] = (0.3, 1.5)

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if name.endswith("probability") and not 0.0 <= value <= 1.0:
                raise ConfigError(f"ConditionConfig.{name} must be in [0, 1], got {value}")


def _biquad_peaking(frequency: float, gain_db: float, quality: float, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """RBJ audio-EQ-cookbook peaking filter coefficients ``(b, a)``."""
    amplitude = 10.0 ** (gain_db / 40.0)
    omega = 2.0 * np.pi * frequency / sample_rate
    alpha = np.sin(omega) / (2.0 * quality)
    b = np.array([1.0 + alpha * amplitude, -2.0 * np.cos(omega), 1.0 - alpha * amplitude])
    a = np.array([1.0 + alpha / amplitude, -2.0 * np.cos(omega), 1.0 - alpha / amplitude])
    return b / a[0], a / a[0]


def random_colouration(rng: np.random.Generator, sample_rate: int, config: ConditionConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """A random microphone colouration: peaking filters (and perhaps a high-pass) as ``(b, a)`` pairs."""
    from scipy.signal import butter

    filters = []
    for _band in range(int(rng.integers(config.eq_bands[0], config.eq_bands[1] + 1))):
        frequency = float(np.exp(rng.uniform(np.log(config.eq_frequency_hz[0]), np.log(config.eq_frequency_hz[1]))))
        frequency = min(frequency, 0.45 * sample_rate)  # above Nyquist the peaking filter is unstable (8 kHz)
        filters.append(_biquad_peaking(frequency, rng.uniform(*config.eq_gain_db), rng.uniform(0.5, 2.0), sample_rate))
    if rng.random() < config.highpass_probability:
        cutoff = float(rng.uniform(*config.highpass_hz))
        b, a = butter(2, cutoff, btype="highpass", fs=sample_rate)
        filters.append((np.asarray(b), np.asarray(a)))
    return filters


def apply_filters(audio: np.ndarray, filters: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Run ``audio [C, T]`` through each IIR filter ``(b, a)`` in turn."""
    from scipy.signal import lfilter

    output = audio.astype(np.float64)
    for b, a in filters:
        output = lfilter(b, a, output, axis=-1)
    return output.astype(np.float32)


def telephone_band(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """``audio [C, T]`` through an 8 kHz channel and back: nothing above 4 kHz, as an upsampled 8 kHz file."""
    if sample_rate <= 8000:
        return audio.astype(np.float32)
    narrow = resample(audio, sample_rate, 8000)  # [C, T * 8000 / sr]
    wide = resample(narrow, 8000, sample_rate)  # [C, ~T]
    output = np.zeros_like(audio, dtype=np.float32)
    length = min(audio.shape[-1], wide.shape[-1])
    output[:, :length] = wide[:, :length]
    return output


def clip(audio: np.ndarray, rng: np.random.Generator, config: ConditionConfig) -> np.ndarray:
    """Hard-clip ``audio`` at a random fraction of its peak (an overdriven input stage)."""
    peak = float(np.max(np.abs(audio))) + 1e-12
    level = peak * float(rng.uniform(*config.clipping_level))
    return np.clip(audio, -level, level).astype(np.float32)


def dc_offset(audio: np.ndarray, rng: np.random.Generator, config: ConditionConfig) -> np.ndarray:
    """Add a constant offset of random sign, a fraction of full scale (a cheap converter's bias)."""
    offset = float(rng.uniform(*config.dc_offset)) * float(rng.choice([-1.0, 1.0]))
    return (audio + offset).astype(np.float32)


def cut_silence(speech: np.ndarray, rng: np.random.Generator, sample_rate: int, config: ConditionConfig) -> np.ndarray:
    """Zero one random stretch of ``speech [C, T]`` (with 5 ms fades), leaving pure noise there."""
    length = speech.shape[-1]
    stretch = min(length // 2, int(rng.uniform(*config.silence_seconds) * sample_rate))
    if stretch <= 0:
        return speech
    start = int(rng.integers(0, length - stretch + 1))
    gain = np.ones(length, np.float32)
    gain[start : start + stretch] = 0.0
    fade = min(stretch // 2, int(0.005 * sample_rate))
    if fade > 1:
        ramp = np.linspace(1.0, 0.0, fade, dtype=np.float32)
        gain[start : start + fade] = ramp
        gain[start + stretch - fade : start + stretch] = ramp[::-1]
    return (speech * gain).astype(np.float32)


@dataclass
class ChannelDraw:
    """What one item's channel does (shared by mixture and target) and which faults hit the mixture."""

    filters: list[tuple[np.ndarray, np.ndarray]]
    telephone: bool
    clipped: bool
    dc: bool

    def describe(self) -> str:
        """Short tags for per-condition evaluation, e.g. ``"eq+telephone"`` ("" when untouched)."""
        tags = (["eq"] if self.filters else []) + (["telephone"] if self.telephone else [])
        tags += (["clipped"] if self.clipped else []) + (["dc"] if self.dc else [])
        return "+".join(tags)


def draw_channel(rng: np.random.Generator, sample_rate: int, config: ConditionConfig) -> ChannelDraw:
    """Draw the channel conditions of one item."""
    filters = random_colouration(rng, sample_rate, config) if rng.random() < config.colouration_probability else []
    return ChannelDraw(
        filters=filters,
        telephone=bool(rng.random() < config.telephone_probability),
        clipped=bool(rng.random() < config.clipping_probability),
        dc=bool(rng.random() < config.dc_offset_probability),
    )


def apply_channel(audio: np.ndarray, draw: ChannelDraw, sample_rate: int) -> np.ndarray:
    """The linear channel of ``draw`` (colouration, telephone band) on ``audio [C, T]``."""
    if draw.filters:
        audio = apply_filters(audio, draw.filters)
    if draw.telephone:
        audio = telephone_band(audio, sample_rate)
    return audio


def apply_faults(mixture: np.ndarray, draw: ChannelDraw, rng: np.random.Generator, config: ConditionConfig) -> np.ndarray:
    """The faults of ``draw`` (clipping, DC offset) on the mixture."""
    if draw.clipped:
        mixture = clip(mixture, rng, config)
    if draw.dc:
        mixture = dc_offset(mixture, rng, config)
    return mixture
