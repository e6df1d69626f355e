"""Band split and band merge of a stacked complex spectrum (TIGER, BSRNN style).

:class:`BandSplit` cuts a spectrum ``[B, 2, F, T]`` (real/imag stacked) into contiguous bands of
bins, normalises each band frame by frame (layer norm over its ``2 * width`` values) and projects
it to ``features`` channels: ``[B, features, n_bands, T]``. :class:`BandMerge` is the inverse map:
per band, a norm and a projection from ``features`` back to ``out_channels`` values per bin,
concatenated over the bands: ``[B, out_channels, F, T]`` (``out_channels = 2`` for one complex mask
or spectrum, ``2 * S`` for S sources).

Bands are ``(start, end)`` bin ranges that cover ``0 .. F`` exactly once, in order. Build them from
edges in Hz (:func:`bands_from_hz`) or bin widths (:func:`bands_from_widths`); :func:`check_bands`
validates any list. Both modules are frame-local (no context across frames), so they suit causal
and chunked models alike.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError

Band = tuple[int, int]


def check_bands(bands: Sequence[Sequence[int]], num_freqs: int) -> tuple[Band, ...]:
    """``bands`` as ``((start, end), ...)`` after checking they tile ``0 .. num_freqs`` exactly once, in order."""
    checked = tuple((int(start), int(end)) for start, end in bands)
    if not checked:
        raise ConfigError("a band split needs at least one band")
    position = 0
    for start, end in checked:
        if start != position or end <= start:
            raise ConfigError(
                f"bands must be contiguous and non-empty from bin 0; got ({start}, {end}) after bin {position}"
            )
        position = end
    if position != num_freqs:
        raise ConfigError(f"bands end at bin {position}, but the spectrum has {num_freqs} bins")
    return checked


def bands_from_widths(widths: Sequence[int], num_freqs: int) -> tuple[Band, ...]:
    """Bands of the given widths in bins, from bin 0; the widths must add up to ``num_freqs``."""
    bands, start = [], 0
    for width in widths:
        bands.append((start, start + int(width)))
        start += int(width)
    return check_bands(bands, num_freqs)


def bands_from_hz(edges_hz: Sequence[float], sample_rate: int, n_fft: int) -> tuple[Band, ...]:
    """Bands between the interior band edges ``edges_hz`` (Hz, increasing, in ``(0, sample_rate / 2)``).

    Edge ``f`` becomes bin ``round(f * n_fft / sample_rate)``; the first band starts at bin 0 and
    the last ends at the Nyquist bin (inclusive). Edges that fall on the same bin are an error.
    """
    num_freqs = n_fft // 2 + 1
    nyquist = sample_rate / 2
    if any(not 0 < edge < nyquist for edge in edges_hz):
        raise ConfigError(f"band edges must lie strictly between 0 and {nyquist:g} Hz, got {list(edges_hz)}")
    bins = [0, *(round(edge * n_fft / sample_rate) for edge in edges_hz), num_freqs]
    if any(later <= earlier for earlier, later in zip(bins, bins[1:])):
        raise ConfigError(
            f"band edges {list(edges_hz)} Hz give empty or unordered bands at n_fft={n_fft} (bins {bins})"
        )
    return check_bands(list(zip(bins, bins[1:])), num_freqs)


class BandSplit(nn.Module):
    """``[B, 2, F, T]`` -> ``[B, features, n_bands, T]``: per band a frame-wise layer norm and a linear map.

    Args:
        bands: ``(start, end)`` bin ranges tiling ``0 .. num_freqs`` (:func:`check_bands`).
        num_freqs: bins ``F`` of the input spectrum.
        features: output channels per band.
    """

    def __init__(self, bands: Sequence[Sequence[int]], num_freqs: int, features: int) -> None:
        super().__init__()
        self.bands = check_bands(bands, num_freqs)
        self.num_freqs = int(num_freqs)
        self.norms = nn.ModuleList(nn.LayerNorm(2 * (end - start)) for start, end in self.bands)
        self.projections = nn.ModuleList(nn.Linear(2 * (end - start), features) for start, end in self.bands)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """``spec [B, 2, F, T]`` -> ``[B, features, n_bands, T]``."""
        if spec.dim() != 4 or spec.shape[1] != 2 or spec.shape[2] != self.num_freqs:
            raise ConfigError(f"BandSplit expects [batch, 2, {self.num_freqs}, frames], got {tuple(spec.shape)}")
        batch, _, _, frames = spec.shape
        outputs = []
        for (start, end), norm, projection in zip(self.bands, self.norms, self.projections):
            band = spec[:, :, start:end].reshape(batch, 2 * (end - start), frames)  # [B, 2*w, T]
            band = projection(norm(band.transpose(1, 2)))  # [B, T, features]
            outputs.append(band.transpose(1, 2))  # [B, features, T]
        return torch.stack(outputs, dim=2)  # [B, features, n_bands, T]


class BandMerge(nn.Module):
    """``[B, features, n_bands, T]`` -> ``[B, out_channels, F, T]``: per band a norm and a linear map to its bins.

    Args:
        bands: the :class:`BandSplit` bands.
        num_freqs: bins ``F`` of the output.
        features: input channels per band.
        out_channels: values per bin (2: one complex mask/spectrum; 2 * S for S sources).
    """

    def __init__(self, bands: Sequence[Sequence[int]], num_freqs: int, features: int, out_channels: int = 2) -> None:
        super().__init__()
        self.bands = check_bands(bands, num_freqs)
        self.out_channels = int(out_channels)
        self.features = int(features)
        self.norms = nn.ModuleList(nn.LayerNorm(features) for _ in self.bands)
        self.projections = nn.ModuleList(
            nn.Linear(features, self.out_channels * (end - start)) for start, end in self.bands
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``features [B, N, n_bands, T]`` -> ``[B, out_channels, F, T]``."""
        if features.dim() != 4 or features.shape[1] != self.features or features.shape[2] != len(self.bands):
            raise ConfigError(
                f"BandMerge expects [batch, {self.features}, {len(self.bands)}, frames], got {tuple(features.shape)}"
            )
        batch, _, _, frames = features.shape
        outputs = []
        for index, ((start, end), norm, projection) in enumerate(zip(self.bands, self.norms, self.projections)):
            band = projection(norm(features[:, :, index].transpose(1, 2)))  # [B, T, out*w]
            band = band.transpose(1, 2).reshape(batch, self.out_channels, end - start, frames)  # [B, out, w, T]
            outputs.append(band)
        return torch.cat(outputs, dim=2)  # [B, out_channels, F, T]


__all__ = ["BandMerge", "BandSplit", "bands_from_hz", "bands_from_widths", "check_bands"]
