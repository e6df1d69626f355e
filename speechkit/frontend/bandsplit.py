"""Band split and band merge of a stacked complex spectrum (TIGER, BSRNN style).

:class:`BandSplit` cuts a spectrum ``[B, 2, F, T]`` (real/imag stacked) into contiguous bands of
bins, normalises each band frame by frame (layer norm over its ``2 * width`` values) and projects
it to ``features`` channels: ``[B, features, n_bands, T]``. :class:`BandMerge` is the inverse map:
per band, a norm and a projection from ``features`` back to ``out_channels`` values per bin,
concatenated over the bands: ``[B, out_channels, F, T]`` (``out_channels = 2`` for one complex mask
or spectrum, ``2 * S`` for S sources).

Bands are ``(start, end)`` bin ranges that cover ``0 .. F`` exactly once, in order. Build them from
edges in Hz (:func:`bands_from_hz`), bin widths (:func:`bands_from_widths`) or a table of band
widths in Hz with a count each (:func:`bands_from_width_table`, TIGER's rule); :func:`check_bands`
validates any list. With the default ``norm="frame"`` both modules are frame-local (no context
across frames), so they suit causal and chunked models alike; ``BandSplit(norm="sequence")``
normalises each band over all its frames (``GroupNorm(1, 2 * width)``, TIGER's bottleneck) and
``BandMerge(head="prelu")`` is a PReLU followed by a grouped 1x1 projection (TIGER's mask head).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError

Band = tuple[int, int]

#: :class:`BandSplit` norms: per frame (layer norm) or over the whole band sequence (GroupNorm(1, .))
SPLIT_NORMS = ("frame", "sequence")
#: :class:`BandMerge` heads: layer norm + linear, or PReLU + grouped 1x1 projection
MERGE_HEADS = ("norm", "prelu")


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


def bands_from_width_table(
    table: Sequence[tuple[float, int]], sample_rate: int, n_fft: int
) -> tuple[Band, ...]:
    """Bands from ``((width_hz, count), ...)``, low to high, plus one band of the bins left over.

    Each width becomes ``floor(width_hz / (sample_rate / 2) * F)`` bins (``F = n_fft // 2 + 1``);
    ``count`` bands of it follow each other from bin 0, and the bins above the last one form a
    final band (TIGER, Xu et al. ICLR 2025: ``((25, 40), (100, 10), (250, 8), (500, 8))`` at
    16 kHz with ``n_fft = 640`` gives 40 x 1, 10 x 4, 8 x 10, 8 x 20 bins and 1 left over, 67 bands).
    """
    num_freqs = n_fft // 2 + 1
    widths: list[int] = []
    for width_hz, count in table:
        width = math.floor(float(width_hz) / (sample_rate / 2) * num_freqs)
        if width < 1 or int(count) < 1:
            raise ConfigError(
                f"a band of {width_hz:g} Hz is {width} bins at {sample_rate} Hz with n_fft={n_fft} "
                f"(count {count}); widths and counts must be at least 1"
            )
        widths.extend([width] * int(count))
    if sum(widths) > num_freqs:
        raise ConfigError(
            f"the band table {list(table)} needs {sum(widths)} bins, more than the {num_freqs} of n_fft={n_fft}"
        )
    if sum(widths) < num_freqs:
        widths.append(num_freqs - sum(widths))
    return bands_from_widths(widths, num_freqs)


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
    """``[B, 2, F, T]`` -> ``[B, features, n_bands, T]``: per band a norm and a linear map.

    Args:
        bands: ``(start, end)`` bin ranges tiling ``0 .. num_freqs`` (:func:`check_bands`).
        num_freqs: bins ``F`` of the input spectrum.
        features: output channels per band.
        norm: ``"frame"`` (layer norm over the ``2 * width`` values of each frame, the default) or
            ``"sequence"`` (``GroupNorm(1, 2 * width)``: one mean and variance over the band's
            values in all frames; not frame-local).
        eps: the norm's epsilon (default: PyTorch's 1e-5).
    """

    def __init__(self, bands: Sequence[Sequence[int]], num_freqs: int, features: int, norm: str = "frame",
                 eps: float = 1e-5) -> None:
        super().__init__()
        if norm not in SPLIT_NORMS:
            raise ConfigError(f"unknown BandSplit norm {norm!r} (known: {', '.join(SPLIT_NORMS)})")
        self.bands = check_bands(bands, num_freqs)
        self.num_freqs = int(num_freqs)
        self.norm = norm
        if norm == "frame":
            self.norms = nn.ModuleList(nn.LayerNorm(2 * (end - start), eps=eps) for start, end in self.bands)
        else:
            self.norms = nn.ModuleList(nn.GroupNorm(1, 2 * (end - start), eps=eps) for start, end in self.bands)
        self.projections = nn.ModuleList(nn.Linear(2 * (end - start), features) for start, end in self.bands)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """``spec [B, 2, F, T]`` -> ``[B, features, n_bands, T]``."""
        if spec.dim() != 4 or spec.shape[1] != 2 or spec.shape[2] != self.num_freqs:
            raise ConfigError(f"BandSplit expects [batch, 2, {self.num_freqs}, frames], got {tuple(spec.shape)}")
        batch, _, _, frames = spec.shape
        outputs = []
        for (start, end), norm, projection in zip(self.bands, self.norms, self.projections):
            band = spec[:, :, start:end].reshape(batch, 2 * (end - start), frames)  # [B, 2*w, T]
            if self.norm == "frame":
                band = projection(norm(band.transpose(1, 2)))  # [B, T, features]
            else:
                band = projection(norm(band).transpose(1, 2))  # [B, T, features]
            outputs.append(band.transpose(1, 2))  # [B, features, T]
        return torch.stack(outputs, dim=2)  # [B, features, n_bands, T]


class BandMerge(nn.Module):
    """``[B, features, n_bands, T]`` -> ``[B, out_channels, F, T]``: per band a norm and a linear map to its bins.

    Args:
        bands: the :class:`BandSplit` bands.
        num_freqs: bins ``F`` of the output.
        features: input channels per band.
        out_channels: values per bin (2: one complex mask/spectrum; 2 * S for S sources).
        head: ``"norm"`` (layer norm, then a linear map; ``norms.i`` / ``projections.i``) or
            ``"prelu"`` (a one-parameter PReLU, then a 1x1 ``Conv1d`` with ``groups`` groups;
            ``activations.i`` / ``projections.i``).
        groups: groups of the ``"prelu"`` head's projection (divides ``features`` and ``out_channels``).
    """

    def __init__(self, bands: Sequence[Sequence[int]], num_freqs: int, features: int, out_channels: int = 2,
                 head: str = "norm", groups: int = 1) -> None:
        super().__init__()
        if head not in MERGE_HEADS:
            raise ConfigError(f"unknown BandMerge head {head!r} (known: {', '.join(MERGE_HEADS)})")
        if head == "norm" and groups != 1:
            raise ConfigError("BandMerge groups apply to the 'prelu' head only")
        if features % groups or out_channels % groups:
            raise ConfigError(f"BandMerge groups {groups} must divide features {features} and out_channels {out_channels}")
        self.bands = check_bands(bands, num_freqs)
        self.out_channels = int(out_channels)
        self.features = int(features)
        self.head = head
        if head == "norm":
            self.norms = nn.ModuleList(nn.LayerNorm(features) for _ in self.bands)
            self.projections = nn.ModuleList(
                nn.Linear(features, self.out_channels * (end - start)) for start, end in self.bands
            )
        else:
            self.activations = nn.ModuleList(nn.PReLU() for _ in self.bands)
            self.projections = nn.ModuleList(
                nn.Conv1d(features, self.out_channels * (end - start), 1, groups=groups) for start, end in self.bands
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``features [B, N, n_bands, T]`` -> ``[B, out_channels, F, T]``."""
        if features.dim() != 4 or features.shape[1] != self.features or features.shape[2] != len(self.bands):
            raise ConfigError(
                f"BandMerge expects [batch, {self.features}, {len(self.bands)}, frames], got {tuple(features.shape)}"
            )
        batch, _, _, frames = features.shape
        outputs = []
        heads = self.norms if self.head == "norm" else self.activations
        for index, ((start, end), head, projection) in enumerate(zip(self.bands, heads, self.projections)):
            if self.head == "norm":
                band = projection(head(features[:, :, index].transpose(1, 2))).transpose(1, 2)  # [B, out*w, T]
            else:
                band = projection(head(features[:, :, index]))  # [B, out*w, T]
            band = band.reshape(batch, self.out_channels, end - start, frames)  # [B, out, w, T]
            outputs.append(band)
        return torch.cat(outputs, dim=2)  # [B, out_channels, F, T]


__all__ = [
    "MERGE_HEADS",
    "SPLIT_NORMS",
    "BandMerge",
    "BandSplit",
    "bands_from_hz",
    "bands_from_width_table",
    "bands_from_widths",
    "check_bands",
]
