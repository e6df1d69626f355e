"""Acoustic echo scenarios: far-end speech through a nonlinear loudspeaker and a room, near-end talk.

A microphone signal is ``mic = near_end + echo + noise`` where
``echo = rir(t) * loudspeaker(delay(far_end))``. Scenarios:

* ``far_end_single_talk``: only the far end talks, ``near_end`` is exactly zero;
* ``near_end_single_talk``: the far end is silent, so ``far_end`` and ``echo`` are exactly zero;
* ``double_talk``: both talk; the signal-to-echo ratio (near-end vs echo power) is drawn from a range.

Loudspeaker models (memoryless): hard clipping at a random fraction of the peak, the asymmetric
sigmoid of Zhang & Wang (Interspeech 2018, "Deep learning for acoustic echo cancellation in noisy
and double-talk scenarios"), optionally followed by a random polynomial ``x + a2 x^2 + a3 x^3``.
The echo path may change within a clip (a short crossfade to a second RIR), and the bulk delay of
the far-end reference is drawn in ``delay_range_ms``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from speechkit.errors import ConfigError

from .audio import EPSILON, convolve, power, scale_to_snr
from .mixing import uniform

SCENARIOS = ("far_end_single_talk", "near_end_single_talk", "double_talk")


@dataclass(frozen=True)
class EchoConfig:
    """Settings of the echo-scenario generator."""

    sample_rate: int = 16000
    segment_seconds: float = 4.0
    scenario_weights: dict[str, float] = field(
        default_factory=lambda: {"far_end_single_talk": 0.25, "near_end_single_talk": 0.15, "double_talk": 0.6}
    )
    ser_range_db: tuple[float, float] = (-10.0, 10.0)
    delay_range_ms: tuple[float, float] = (0.0, 200.0)
    echo_path_change_probability: float = 0.2
    nonlinearity_probability: float = 0.6
    clip_fraction_range: tuple[float, float] = (0.3, 0.9)
    polynomial_probability: float = 0.3
    noise_probability: float = 0.5
    snr_range_db: tuple[float, float] = (10.0, 40.0)
    level_range_db: tuple[float, float] = (-35.0, -15.0)
    far_end_level_range_db: tuple[float, float] = (-30.0, -15.0)
    rir_source: str = "both"
    #: the loudspeaker's low-frequency roll-off (2nd-order high-pass, Hz; 0: none). A driver radiates
    #: no DC and little below its resonance: without it, the rectifying sigmoid model puts most of
    #: its "echo" energy below 50 Hz, where no far-end speech is and no loudspeaker plays.
    loudspeaker_highpass_hz: float = 100.0

    def __post_init__(self) -> None:
        unknown = set(self.scenario_weights) - set(SCENARIOS)
        if unknown:
            raise ConfigError(f"Unknown echo scenarios {sorted(unknown)}; use {list(SCENARIOS)}.")
        if sum(self.scenario_weights.values()) <= 0:
            raise ConfigError("Echo scenario weights must add up to a positive number.")
        if not 0.0 <= self.loudspeaker_highpass_hz < self.sample_rate / 2:
            raise ConfigError(f"loudspeaker_highpass_hz must be in [0, {self.sample_rate / 2:g}), "
                              f"got {self.loudspeaker_highpass_hz}")


def hard_clip(signal: np.ndarray, fraction: float) -> np.ndarray:
    """Clip ``signal`` symmetrically at ``fraction`` of its peak."""
    limit = fraction * float(np.max(np.abs(signal))) + EPSILON
    return np.clip(signal, -limit, limit)


def asymmetric_sigmoid(signal: np.ndarray) -> np.ndarray:
    """Zhang & Wang (2018) loudspeaker model on a peak-normalised input, rescaled to the input's peak.

    ``b = 1.5 x - 0.3 x^2``; ``y = 4 (2 / (1 + exp(-a b)) - 1)`` with ``a = 4`` if ``b > 0`` else ``0.5``.
    """
    peak = float(np.max(np.abs(signal))) + EPSILON
    normalised = signal / peak
    bent = 1.5 * normalised - 0.3 * normalised**2
    slope = np.where(bent > 0, 4.0, 0.5)
    output = 4.0 * (2.0 / (1.0 + np.exp(-slope * bent)) - 1.0)
    return (output * peak / (np.max(np.abs(output)) + EPSILON)).astype(np.float32)


def loudspeaker(signal: np.ndarray, rng: np.random.Generator, config: EchoConfig) -> tuple[np.ndarray, str]:
    """Apply a random memoryless loudspeaker nonlinearity; returns the output and its description."""
    if rng.random() >= config.nonlinearity_probability:
        return signal, "linear"
    if rng.random() < 0.5:
        fraction = uniform(rng, config.clip_fraction_range)
        output, description = hard_clip(signal, fraction), f"hard_clip {fraction:.2f}"
    else:
        output, description = asymmetric_sigmoid(signal), "sigmoid"
    if rng.random() < config.polynomial_probability:
        peak = float(np.max(np.abs(output))) + EPSILON
        second, third = uniform(rng, (-0.2, 0.2)), uniform(rng, (-0.3, 0.0))
        normalised = output / peak
        output = (normalised + second * normalised**2 + third * normalised**3) * peak
        description += f" + poly({second:.2f},{third:.2f})"
    return output.astype(np.float32), description


def loudspeaker_rolloff(signal: np.ndarray, config: EchoConfig) -> np.ndarray:
    """The driver's low-frequency roll-off: a 2nd-order Butterworth high-pass at ``loudspeaker_highpass_hz``."""
    if config.loudspeaker_highpass_hz <= 0:
        return signal
    from scipy.signal import butter, lfilter

    b, a = butter(2, config.loudspeaker_highpass_hz, btype="highpass", fs=config.sample_rate)
    return lfilter(b, a, signal, axis=-1).astype(np.float32)


def delay(signal: np.ndarray, samples: int) -> np.ndarray:
    """Delay ``signal[C, T]`` by ``samples`` (zeros in front, same length)."""
    if samples <= 0:
        return signal
    output = np.zeros_like(signal)
    output[:, samples:] = signal[:, : signal.shape[-1] - samples]
    return output


def render_echo(
    loudspeaker_signal: np.ndarray,
    first_response: np.ndarray,
    second_response: np.ndarray | None,
    change_sample: int,
    sample_rate: int,
) -> np.ndarray:
    """Echo ``[1, T]`` of ``loudspeaker_signal[1, T]``; the path switches at ``change_sample`` (10 ms crossfade)."""
    echo = convolve(loudspeaker_signal, first_response)  # [1, T] * [1, L] -> [1, T]
    if second_response is None or change_sample < 0:
        return echo
    changed = convolve(loudspeaker_signal, second_response)  # -> [1, T]
    ramp_length = int(0.01 * sample_rate)
    weight = np.clip((np.arange(echo.shape[-1]) - change_sample) / ramp_length, 0.0, 1.0)
    return (echo * (1.0 - weight) + changed * weight).astype(np.float32)


def make_echo_scenario(
    rng: np.random.Generator,
    config: EchoConfig,
    far_speech: np.ndarray,
    near_speech: np.ndarray,
    noise: np.ndarray,
    responses: np.ndarray,
) -> dict:
    """Build one echo item (numpy) from unit-free ``[1, T]`` inputs and two RIRs ``[2, 1, L]``.

    Returns a dict with ``mic``, ``far_end``, ``near_end``, ``echo``, ``noise`` (``[1, T]`` each,
    levels applied) and the scenario parameters.
    """
    names = sorted(config.scenario_weights)
    weights = np.array([config.scenario_weights[name] for name in names], dtype=np.float64)
    scenario = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    length = far_speech.shape[-1]
    near = near_speech / (np.sqrt(power(near_speech)) + EPSILON)
    far = far_speech / (np.sqrt(power(far_speech)) + EPSILON)
    delay_samples = int(round(uniform(rng, config.delay_range_ms) * 1e-3 * config.sample_rate))
    driven, nonlinearity = loudspeaker(far, rng, config)
    driven = loudspeaker_rolloff(driven, config)
    change = -1
    if rng.random() < config.echo_path_change_probability:
        change = int(rng.integers(length // 4, 3 * length // 4))
    echo = render_echo(delay(driven, delay_samples), responses[0], responses[1] if change >= 0 else None,
                       change, config.sample_rate)
    ser = uniform(rng, config.ser_range_db)
    echo = echo * np.sqrt(power(near) / (10.0 ** (ser / 10.0)) / (power(echo) + EPSILON))
    if scenario == "far_end_single_talk":
        near = np.zeros_like(near)
        ser = float("-inf")
    elif scenario == "near_end_single_talk":
        far, echo = np.zeros_like(far), np.zeros_like(echo)
        ser, nonlinearity, change, delay_samples = float("inf"), "none", -1, 0
    without_noise = near + echo
    snr = float("inf")
    noise_out = np.zeros_like(near)
    if rng.random() < config.noise_probability:
        snr = uniform(rng, config.snr_range_db)
        noise_out = scale_to_snr(without_noise, noise, snr)
    mic = without_noise + noise_out
    gain = 10.0 ** (uniform(rng, config.level_range_db) / 20.0) / (np.sqrt(power(mic)) + EPSILON)
    peak = float(max(np.max(np.abs(mic)), np.max(np.abs(near)), np.max(np.abs(echo)))) * gain
    if peak > 0.99:
        gain *= 0.99 / peak
    far_gain = 10.0 ** (uniform(rng, config.far_end_level_range_db) / 20.0) / (np.sqrt(power(far)) + EPSILON)
    far_gain = min(far_gain, 0.99 / (float(np.max(np.abs(far))) + EPSILON))
    return {
        "mic": (mic * gain).astype(np.float32),
        "far_end": (far * far_gain).astype(np.float32),
        "near_end": (near * gain).astype(np.float32),
        "echo": (echo * gain).astype(np.float32),
        "noise": (noise_out * gain).astype(np.float32),
        "scenario": scenario,
        "ser_db": float(ser),
        "snr_db": float(snr),
        "delay_ms": 1e3 * delay_samples / config.sample_rate,
        "echo_path_change_sample": int(change),
        "nonlinearity": nonlinearity,
    }
