"""Sampling in the compressed-spectrum domain of a score network export (SGMSE+), in numpy.

A sampler export whose metadata says ``score_domain = "compressed_stft"`` has a score network over
compressed complex spectra ``[1, 2, F, frames]`` (real/imag stacked), not over waveforms. For each
window ``[C, N]`` (one channel at a time) :class:`SpectralSampler` does what the PyTorch model's
``forward`` does: divide by the peak magnitude, take the centred STFT (reflect padding, periodic
Hann window of ``n_fft``), compress ``beta |X| ** alpha e^{i angle X}``, pad the frames to a
multiple of ``frame_multiple`` (zeros or reflection), run :func:`realtime.sampler.pc_sample` with
noise drawn from the stream's generator, decompress (padded frames kept, as the reference), invert
(overlap-add divided by the window-sum-square envelope, cut to the window length) and restore the
peak. Settings come from the export's ``config``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import RealtimeError
from .sampler import Schedule, ScoreFunction, draw_noise, pc_sample

#: peaks below this are treated as silence (as the PyTorch model)
PEAK_FLOOR = 1e-8
#: magnitudes are clamped to at least this before negative powers (as the PyTorch front end)
MAGNITUDE_FLOOR = 1e-12


def periodic_hann(length: int) -> np.ndarray:
    """The periodic Hann window of ``length`` samples."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)).astype(np.float64)


def centered_stft(signal: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """``[T] -> [2, F, N]`` (real/imag stacked), ``N = 1 + T // hop_length``, reflect-padded centred frames."""
    half = n_fft // 2
    if signal.shape[-1] <= half:
        raise RealtimeError(f"a window of {signal.shape[-1]} samples is too short for n_fft={n_fft}")
    padded = np.pad(signal.astype(np.float64), (half, half), mode="reflect")
    frames = 1 + signal.shape[-1] // hop_length
    index = np.arange(n_fft)[None, :] + hop_length * np.arange(frames)[:, None]  # [N, n_fft]
    spectrum = np.fft.rfft(padded[index] * periodic_hann(n_fft), axis=-1).T  # [F, N]
    return np.stack((spectrum.real, spectrum.imag))  # [2, F, N]


def centered_istft(spec: np.ndarray, n_fft: int, hop_length: int, length: int) -> np.ndarray:
    """Inverse of :func:`centered_stft`: ``[2, F, N] -> [length]``."""
    window = periodic_hann(n_fft)
    frames = np.fft.irfft(spec[0] + 1j * spec[1], n=n_fft, axis=0).T * window  # [N, n_fft]
    total = n_fft + hop_length * (frames.shape[0] - 1)
    signal, envelope = np.zeros(total), np.zeros(total)
    for index, frame in enumerate(frames):
        start = index * hop_length
        signal[start : start + n_fft] += frame
        envelope[start : start + n_fft] += window**2
    half = n_fft // 2
    signal = signal[half : half + length] / np.maximum(envelope[half : half + length], 1e-11)
    return np.pad(signal, (0, max(0, length - signal.shape[0])))


def compress(spec: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """``beta |X| ** alpha e^{i angle X}`` of a stacked ``[2, F, N]`` spectrum."""
    size = np.maximum(np.sqrt(spec[0] ** 2 + spec[1] ** 2), MAGNITUDE_FLOOR)
    return spec * (beta * size ** (alpha - 1.0))


def decompress(spec: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Inverse of :func:`compress`."""
    size = np.maximum(np.sqrt(spec[0] ** 2 + spec[1] ** 2), MAGNITUDE_FLOOR)
    return spec * ((size / beta) ** (1.0 / alpha) / size)


class SpectralSampler:
    """Enhance windows with a compressed-spectrum score network (see the module docstring).

    Args:
        config: the export's ``config`` metadata (``n_fft``, ``hop_length``, ``compression_alpha``,
            ``compression_beta``, ``frame_multiple``, ``pad_mode``).
        schedule: the sampler schedule.
        score: the score network ``(x [2, F, N], condition [2, F, N], t) -> score``.
    """

    def __init__(self, config: Mapping[str, Any], schedule: Schedule, score: ScoreFunction) -> None:
        try:
            self.n_fft, self.hop_length = int(config["n_fft"]), int(config["hop_length"])
            self.alpha, self.beta = float(config["compression_alpha"]), float(config["compression_beta"])
            self.frame_multiple, self.pad_mode = int(config["frame_multiple"]), str(config["pad_mode"])
        except (KeyError, TypeError, ValueError) as error:
            raise RealtimeError(f"a compressed-spectrum sampler export needs its STFT settings ({error})") from error
        self.schedule = schedule
        self.score = score

    def spectrum(self, signal: np.ndarray) -> np.ndarray:
        """Compressed spectrum ``[2, F, N]`` of a peak-normalised ``[T]`` signal."""
        return compress(centered_stft(signal, self.n_fft, self.hop_length), self.alpha, self.beta)

    def pad_frames(self, spec: np.ndarray) -> np.ndarray:
        """Frames padded to a multiple of ``frame_multiple``."""
        missing = (-spec.shape[-1]) % self.frame_multiple
        mode = "constant" if self.pad_mode == "zero" else "reflect"
        return np.pad(spec, ((0, 0), (0, 0), (0, missing)), mode=mode) if missing else spec

    def process(self, window: np.ndarray, generator: np.random.Generator,
                noise: np.ndarray | None = None) -> np.ndarray:
        """Enhanced ``[C, N]`` of ``window [C, N]`` (channels one after another; ``noise`` for one channel)."""
        outputs = []
        for channel in window:
            peak = max(float(np.abs(channel).max()), PEAK_FLOOR)
            condition = self.spectrum(channel / peak)
            padded = self.pad_frames(condition).astype(np.float32)  # [2, F, N']
            draws = noise if noise is not None else draw_noise(self.schedule, padded.shape, generator)
            sample = pc_sample(self.score, padded, self.schedule, draws)  # [2, F, N'], padded frames kept
            estimate = decompress(sample.astype(np.float64), self.alpha, self.beta)
            outputs.append(centered_istft(estimate, self.n_fft, self.hop_length, channel.shape[-1]) * peak)
        return np.stack(outputs).astype(np.float32)  # [C, N]
