"""Power-law magnitude compression of stacked complex spectra, and its exact inverse.

``c(X) = beta * |X| ** alpha * exp(i * angle(X))``: the magnitude is compressed, the phase kept.
SGMSE+ (Richter et al. 2023) trains on ``alpha = 0.5``, ``beta = 0.15``; a spectral network may
feed its input through ``alpha < 1``, ``beta = 1`` (the D3Net AEC's ``input_compression``).
:func:`decompress_spectrum` inverts :func:`compress_spectrum` to float precision for every bin
whose magnitude lies above ``floor``.

Spectra are real tensors with real/imag stacked at ``dim`` (default ``[..., 2, F, N]``).
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from .masks import COMPLEX_DIM, magnitude

#: magnitudes are clamped to at least this before negative powers (keeps zero bins at zero)
MAGNITUDE_FLOOR = 1e-12


def _check(alpha: float, beta: float) -> None:
    if not alpha > 0 or not beta > 0:
        raise ConfigError(f"compression needs alpha > 0 and beta > 0, got alpha={alpha}, beta={beta}")


def compress_spectrum(
    spec: torch.Tensor, alpha: float = 0.5, beta: float = 0.15, eps: float = 0.0, dim: int = COMPLEX_DIM
) -> torch.Tensor:
    """``beta * |X| ** alpha * exp(i angle X)`` of a stacked spectrum (same shape).

    ``eps`` is added to ``|X|^2`` before the square root (keeps gradients finite at zero; 0 keeps
    the map exactly invertible). ``alpha = beta = 1`` returns ``spec`` itself.
    """
    _check(alpha, beta)
    if alpha == 1.0 and beta == 1.0:
        return spec
    gain = magnitude(spec, eps, dim).clamp_min(MAGNITUDE_FLOOR).pow(alpha - 1.0).unsqueeze(dim)  # [..., 1, F, N]
    compressed = spec * gain
    return compressed if beta == 1.0 else beta * compressed


def decompress_spectrum(
    spec: torch.Tensor, alpha: float = 0.5, beta: float = 0.15, dim: int = COMPLEX_DIM
) -> torch.Tensor:
    """The inverse of :func:`compress_spectrum` (``eps = 0``): ``(|Y| / beta) ** (1 / alpha) * exp(i angle Y)``."""
    _check(alpha, beta)
    if alpha == 1.0 and beta == 1.0:
        return spec
    size = magnitude(spec, 0.0, dim).clamp_min(MAGNITUDE_FLOOR)  # [..., F, N]
    gain = (size / beta).pow(1.0 / alpha) / size  # [..., F, N]
    return spec * gain.unsqueeze(dim)  # [..., 2, F, N]


__all__ = ["MAGNITUDE_FLOOR", "compress_spectrum", "decompress_spectrum"]
