"""Deterministic dynamic mixing in numpy: enhancement, separation, reverberation helpers.

Every random choice of item ``index`` comes from ``item_rng(seed, epoch, index)``, a generator
seeded by the tuple itself, so DataLoader workers, DDP ranks and re-runs produce identical items
no matter which process builds them or in which order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speechkit.errors import ConfigError

from .audio import EPSILON, convolve, fit_length, power, scale_to_snr


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Random generator of one item, independent of worker, rank and call order."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def uniform(rng: np.random.Generator, value_range: tuple[float, float]) -> float:
    """One uniform draw from ``value_range`` (a degenerate range returns its value)."""
    low, high = float(value_range[0]), float(value_range[1])
    if high < low:
        raise ConfigError(f"Range {value_range} has its upper bound below its lower bound.")
    return low if high == low else float(rng.uniform(low, high))


def random_crop(audio: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``length``-sample window of ``audio[C, T]``; shorter audio is placed at a random offset."""
    total = audio.shape[-1]
    if total >= length:
        start = int(rng.integers(0, total - length + 1))
        return np.ascontiguousarray(audio[:, start : start + length])
    offset = int(rng.integers(0, length - total + 1))
    return fit_length(audio, length, offset)


def apply_gain_without_clipping(
    signals: dict[str, np.ndarray], reference: str, level_db: float, peak_limit: float = 0.99
) -> tuple[dict[str, np.ndarray], float]:
    """Scale every signal by one gain so ``signals[reference]`` has RMS ``level_db`` dBFS.

    If that would make any signal peak above ``peak_limit`` the gain is lowered to prevent it;
    ratios between signals (SNRs) are unchanged. Returns the scaled signals and the gain used.
    """
    gain = 10.0 ** (level_db / 20.0) / (np.sqrt(power(signals[reference])) + EPSILON)
    peak = max(float(np.max(np.abs(signal))) for signal in signals.values()) * gain
    if peak > peak_limit:
        gain *= peak_limit / peak
    return {name: (signal * gain).astype(np.float32) for name, signal in signals.items()}, float(gain)


def early_reverb_split(impulse_response: np.ndarray, sample_rate: int, early_ms: float) -> np.ndarray:
    """The direct path and early reflections of ``impulse_response[M, L]``.

    Keeps everything up to ``early_ms`` after the direct-path peak (the strongest tap over all
    channels), with a short half-cosine fade so the cut adds no click.
    """
    direct = int(np.argmax(np.max(np.abs(impulse_response), axis=0)))
    cut = min(impulse_response.shape[-1], direct + int(round(early_ms * 1e-3 * sample_rate)))
    early = np.zeros_like(impulse_response)
    early[:, :cut] = impulse_response[:, :cut]
    fade = min(cut - direct, max(1, int(0.005 * sample_rate)))
    if fade > 1:
        early[:, cut - fade : cut] *= 0.5 * (1.0 + np.cos(np.linspace(0.0, np.pi, fade)))
    return early


def direct_path_only(impulse_response: np.ndarray) -> np.ndarray:
    """A delayed, scaled unit impulse at the direct-path peak of ``impulse_response[M, L]`` (per channel)."""
    dry = np.zeros_like(impulse_response)
    reference = int(np.argmax(np.max(np.abs(impulse_response), axis=0)))
    for channel in range(impulse_response.shape[0]):
        window = impulse_response[channel, max(0, reference - 8) : reference + 8]
        peak = int(np.argmax(np.abs(window))) + max(0, reference - 8)
        dry[channel, peak] = impulse_response[channel, peak]
    return dry


def reverberate(
    speech: np.ndarray,
    impulse_response: np.ndarray,
    sample_rate: int,
    target: str,
    early_ms: float = 50.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Convolve mono ``speech[1, T]`` with ``impulse_response[M, L]``.

    Returns ``(reverberant[M, T], target[M, T])`` where the target is ``"early"`` (direct path +
    reflections up to ``early_ms``), ``"direct"`` (the direct path only: delayed and attenuated
    dry speech), ``"dry"`` (the unprocessed dry speech on every channel, not time-aligned to
    the direct path) or ``"reverberant"`` (the full image).
    """
    reverberant = convolve(speech, impulse_response)  # [1, T] * [M, L] -> [M, T]
    if target == "reverberant":
        return reverberant, reverberant.copy()
    if target == "early":
        return reverberant, convolve(speech, early_reverb_split(impulse_response, sample_rate, early_ms))
    if target == "direct":
        return reverberant, convolve(speech, direct_path_only(impulse_response))
    if target == "dry":
        return reverberant, np.repeat(speech, impulse_response.shape[0], axis=0)  # [1, T] -> [M, T]
    raise ConfigError(f"Reverberation target must be early, direct, dry or reverberant, not {target!r}.")


@dataclass(frozen=True)
class OverlapLayout:
    """Where each of ``count`` sources starts and how long it is, in samples."""

    starts: tuple[int, ...]
    lengths: tuple[int, ...]


def overlap_layout(count: int, total_length: int, overlap_ratio: float) -> OverlapLayout:
    """Chain ``count`` equally long sources so consecutive ones overlap by ``overlap_ratio``.

    With source length ``L`` and ratio ``r``: ``L * (count - (count - 1) * r) == total_length``;
    source ``k`` starts at ``k * L * (1 - r)``. ``r == 1`` is full overlap (every source spans
    the whole mixture); ``r == 0`` puts them one after another.
    """
    if not 0.0 <= overlap_ratio <= 1.0:
        raise ConfigError(f"Overlap ratio must be between 0 and 1, not {overlap_ratio}.")
    source_length = int(total_length / (count - (count - 1) * overlap_ratio))
    hop = source_length * (1.0 - overlap_ratio)
    starts = tuple(int(round(k * hop)) for k in range(count))
    lengths = tuple(min(source_length, total_length - start) for start in starts)
    return OverlapLayout(starts=starts, lengths=lengths)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, target_snr_db: float) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(mixture, scaled_noise)`` with ``snr(speech, scaled_noise) == target_snr_db``."""
    scaled = scale_to_snr(speech, noise, target_snr_db)
    return (speech + scaled).astype(np.float32), scaled
