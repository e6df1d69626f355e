"""NCSN++: the U-Net score network of Song et al., ICLR 2021, in the configuration SGMSE+ uses.

Y. Song, J. Sohl-Dickstein, D. P. Kingma, A. Kumar, S. Ermon, B. Poole, "Score-Based Generative
Modeling through Stochastic Differential Equations", ICLR 2021; adapted to complex spectrograms
by J. Richter, S. Welker, J.-M. Lemercier, B. Lay, T. Gerkmann, "Speech Enhancement and
Dereverberation with Diffusion-Based Generative Models", IEEE/ACM TASLP 31, 2023.

Building blocks:

* :func:`fir_downsample` / :func:`fir_upsample`: 2x resampling with a separable FIR filter
  (``[1, 3, 3, 1]``), as depthwise convolutions (real ops only, ONNX-exportable);
* :class:`GaussianFourierEmbedding`: fixed random Fourier features of ``log t``;
* :class:`BigGANResBlock`: GroupNorm -> swish -> 3x3 conv (+ time embedding) -> GroupNorm ->
  swish -> dropout -> 3x3 conv, optional FIR up/down sampling inside, skip scaled by 1/sqrt(2);
* :class:`PositionAttention`: single-head self-attention over all H x W positions (1x1 Q/K/V);
* :class:`NCSNppUNet`: the U-Net with "input_skip" progressive input (the input, FIR-downsampled,
  projected and summed into every level), "output_skip" progressive output (a per-level
  GroupNorm -> swish -> 3x3 conv pyramid, FIR-upsampled and summed) and the output divided by
  the diffusion time ``t`` before a final 1x1 convolution (the reference ``ncsnpp`` backbone of
  the 16 kHz models). Without the progressive paths (``input_skip=False, output_skip=False``:
  the reference's ``progressive = progressive_input = "none"``) the last level ends in
  GroupNorm -> swish -> 3x3 conv instead; the reference ``ncsnpp_48k`` backbone (EARS 48 kHz
  models) uses that layout and divides by ``t`` after the 1x1 convolution
  (``scale_after_output_layer=True``).

Tensors are ``[B, C, H, W]`` (for spectrograms H is frequency, W is frames). H and W must be
divisible by ``2 ** (levels - 1)``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

#: GroupNorm epsilon of every norm in the network
NORM_EPS = 1e-6


def fir_kernel_2d(taps: Sequence[float]) -> torch.Tensor:
    """The separable 2-D FIR kernel ``outer(taps, taps)`` normalised to unit sum, ``[K, K]``."""
    line = torch.tensor([float(tap) for tap in taps], dtype=torch.float32)
    kernel = torch.outer(line, line)  # [K, K]
    return kernel / kernel.sum()


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with ``min(channels // 4, 32)`` groups (the NCSN++ convention)."""
    return nn.GroupNorm(num_groups=min(channels // 4, 32), num_channels=channels, eps=NORM_EPS)


def _depthwise(x: torch.Tensor, kernel: torch.Tensor, stride: int) -> torch.Tensor:
    """The same 2-D filter on every channel (channels folded into the batch: a fixed kernel shape exports)."""
    weight = kernel.flip(0, 1).to(x.dtype)[None, None]  # [1, 1, K, K]
    filtered = F.conv2d(x.flatten(0, 1).unsqueeze(1), weight, stride=stride)  # [B*C, 1, H', W']
    return filtered.reshape(x.shape[0], x.shape[1], filtered.shape[-2], filtered.shape[-1])  # [B, C, H', W']


def fir_downsample(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Filter with ``kernel [K, K]`` and keep every second sample: ``[B, C, H, W] -> [B, C, H/2, W/2]``."""
    pad = kernel.shape[0] - 2
    padded = F.pad(x, ((pad + 1) // 2, pad // 2, (pad + 1) // 2, pad // 2))  # [B, C, H + p, W + p]
    return _depthwise(padded, kernel, stride=2)  # [B, C, H/2, W/2]


def fir_upsample(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Insert zeros after every sample and filter with ``4 * kernel``: ``[B, C, H, W] -> [B, C, 2H, 2W]``."""
    pad = kernel.shape[0] - 2
    zeros = torch.zeros_like(x)
    wide = torch.stack((x, zeros), dim=-1).flatten(-2)  # [B, C, H, 2W]
    tall = torch.stack((wide, torch.zeros_like(wide)), dim=-2).flatten(-3, -2)  # [B, C, 2H, 2W]
    before, after = (pad + 1) // 2 + 1, pad // 2
    padded = F.pad(tall, (before, after, before, after))  # [B, C, 2H + p + 2, 2W + p + 2]
    return _depthwise(padded, 4.0 * kernel, stride=1)  # [B, C, 2H, 2W]


class GaussianFourierEmbedding(nn.Module):
    """``[sin(2 pi w s), cos(2 pi w s)]`` of a scalar ``s`` per item with fixed ``w ~ N(0, scale^2)``.

    ``w`` is a persistent buffer (stored in checkpoints, never trained).
    """

    def __init__(self, size: int, scale: float) -> None:
        super().__init__()
        self.register_buffer("frequencies", torch.randn(size) * scale)

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        """``value [B] -> [B, 2 * size]``."""
        phase = value[:, None] * self.frequencies[None, :] * (2.0 * math.pi)  # [B, size]
        return torch.cat((torch.sin(phase), torch.cos(phase)), dim=-1)  # [B, 2 * size]


class BigGANResBlock(nn.Module):
    """BigGAN-style residual block with time conditioning and optional FIR resampling.

    Args:
        in_channels / out_channels: channels in and out.
        embedding_dim: size of the time embedding added after the first convolution.
        resample: ``"none"``, ``"up"`` (2x FIR upsampling) or ``"down"`` (2x FIR downsampling).
        fir_taps: the 1-D FIR filter taps.
        dropout: dropout probability between the convolutions.
        skip_rescale: divide the residual sum by sqrt(2).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        embedding_dim: int,
        resample: str = "none",
        fir_taps: Sequence[float] = (1, 3, 3, 1),
        dropout: float = 0.0,
        skip_rescale: bool = True,
    ) -> None:
        super().__init__()
        if resample not in ("none", "up", "down"):
            raise ConfigError(f"BigGANResBlock resample must be none, up or down, got {resample!r}")
        self.resample = resample
        self.skip_rescale = skip_rescale
        self.norm_in = group_norm(in_channels)
        self.conv_in = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embedding_proj = nn.Linear(embedding_dim, out_channels)
        self.norm_out = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv_out = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        needs_skip = in_channels != out_channels or resample != "none"
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if needs_skip else None
        self.register_buffer("fir_kernel", fir_kernel_2d(fir_taps), persistent=False)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            return fir_upsample(x, self.fir_kernel)  # [B, C, 2H, 2W]
        if self.resample == "down":
            return fir_downsample(x, self.fir_kernel)  # [B, C, H/2, W/2]
        return x

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """``x [B, C_in, H, W]``, ``embedding [B, E]`` -> ``[B, C_out, H', W']``."""
        hidden = self._resample(F.silu(self.norm_in(x)))
        x = self._resample(x)
        hidden = self.conv_in(hidden)  # [B, C_out, H', W']
        hidden = hidden + self.embedding_proj(F.silu(embedding))[:, :, None, None]
        hidden = self.conv_out(self.dropout(F.silu(self.norm_out(hidden))))
        if self.skip is not None:
            x = self.skip(x)  # [B, C_out, H', W']
        total = x + hidden
        return total / math.sqrt(2.0) if self.skip_rescale else total


class PositionAttention(nn.Module):
    """Single-head self-attention over all ``H * W`` positions, residual (scaled by 1/sqrt(2))."""

    def __init__(self, channels: int, skip_rescale: bool = True) -> None:
        super().__init__()
        self.skip_rescale = skip_rescale
        self.norm = group_norm(channels)
        self.query = nn.Conv2d(channels, channels, 1)
        self.key = nn.Conv2d(channels, channels, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.output = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C, H, W]``."""
        batch, channels, height, width = x.shape
        normed = self.norm(x)
        query = self.query(normed).flatten(2)  # [B, C, HW]
        key = self.key(normed).flatten(2)  # [B, C, HW]
        value = self.value(normed).flatten(2)  # [B, C, HW]
        weights = torch.softmax(query.transpose(1, 2) @ key * (int(channels) ** -0.5), dim=-1)  # [B, HW, HW]
        attended = (value @ weights.transpose(1, 2)).reshape(batch, channels, height, width)  # [B, C, H, W]
        total = x + self.output(attended)
        return total / math.sqrt(2.0) if self.skip_rescale else total


class PyramidCombine(nn.Module):
    """Project the downsampled input pyramid with a 1x1 convolution and add it to the features."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, pyramid: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """``pyramid [B, C_p, H, W]``, ``features [B, C, H, W]`` -> ``[B, C, H, W]``."""
        return self.proj(pyramid) + features


class _DownLevel(nn.Module):
    def __init__(self, blocks: list[nn.Module], attentions: list[nn.Module], downsample: nn.Module | None,
                 combine: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attentions = nn.ModuleList(attentions)
        self.downsample = downsample
        self.combine = combine


class _UpLevel(nn.Module):
    def __init__(self, blocks: list[nn.Module], attention: nn.Module | None, output_norm: nn.Module | None,
                 output_conv: nn.Module | None, upsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attention = attention
        self.output_norm = output_norm
        self.output_conv = output_conv
        self.upsample = upsample


class NCSNppUNet(nn.Module):
    """The NCSN++ U-Net: ``(x [B, C_in, H, W], t [B]) -> [B, C_out, H, W]`` (output divided by ``t``).

    Args:
        in_channels: input channels (4 for SGMSE+: real/imag of the state and of the condition).
        out_channels: channels of the final 1x1 convolution (2: real/imag of the score).
        height: the input height H (frequency bins); attention sits at the levels whose height
            is in ``attention_resolutions``.
        base_channels: channels of the first level (``nf``).
        channel_multipliers: channels of each level as multiples of ``base_channels``.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_resolutions: heights at which attention follows each residual block.
        fir_taps: taps of the resampling FIR filter.
        fourier_scale: std of the Gaussian Fourier frequencies of the time embedding.
        dropout: dropout inside the residual blocks.
        skip_rescale: scale residual sums by 1/sqrt(2).
        centered: False maps the input ``x`` to ``2 x - 1`` first (for data in [0, 1]).
        input_skip: the "input_skip" progressive input (False: none, reference ``"none"``).
        output_skip: the "output_skip" progressive output (False: a final GroupNorm -> swish ->
            3x3 conv on the last level, reference ``"none"``).
        scale_after_output_layer: divide by ``t`` after the final 1x1 convolution (reference
            ``ncsnpp_48k``) instead of before it (``ncsnpp``).
    """

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 2,
        height: int = 256,
        base_channels: int = 128,
        channel_multipliers: Sequence[int] = (1, 1, 2, 2, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16,),
        fir_taps: Sequence[float] = (1, 3, 3, 1),
        fourier_scale: float = 16.0,
        dropout: float = 0.0,
        skip_rescale: bool = True,
        centered: bool = True,
        input_skip: bool = True,
        output_skip: bool = True,
        scale_after_output_layer: bool = False,
    ) -> None:
        super().__init__()
        levels = len(channel_multipliers)
        if height % 2 ** (levels - 1):
            raise ConfigError(f"NCSN++ height {height} is not divisible by 2**{levels - 1}")
        self.centered = centered
        self.output_skip = output_skip
        self.scale_after_output_layer = scale_after_output_layer
        self.num_levels = levels
        embedding_dim = 4 * base_channels
        self.time_fourier = GaussianFourierEmbedding(base_channels, fourier_scale)
        self.time_dense_in = nn.Linear(2 * base_channels, embedding_dim)
        self.time_dense_out = nn.Linear(embedding_dim, embedding_dim)
        self.register_buffer("fir_kernel", fir_kernel_2d(fir_taps), persistent=False)

        def block(channels_in: int, channels_out: int | None = None, resample: str = "none") -> BigGANResBlock:
            return BigGANResBlock(channels_in, channels_out or channels_in, embedding_dim, resample, fir_taps,
                                  dropout, skip_rescale)

        self.input_conv = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        skip_channels = [base_channels]
        channels = base_channels
        down_levels = []
        for level, multiplier in enumerate(channel_multipliers):
            attend = height // 2**level in attention_resolutions
            blocks, attentions = [], []
            for _ in range(num_res_blocks):
                blocks.append(block(channels, base_channels * multiplier))
                channels = base_channels * multiplier
                if attend:
                    attentions.append(PositionAttention(channels, skip_rescale))
                skip_channels.append(channels)
            downsample = combine = None
            if level != levels - 1:
                downsample = block(channels, resample="down")
                combine = PyramidCombine(in_channels, channels) if input_skip else None
                skip_channels.append(channels)
            down_levels.append(_DownLevel(blocks, attentions, downsample, combine))
        self.down_levels = nn.ModuleList(down_levels)

        self.middle_in = block(channels)
        self.middle_attention = PositionAttention(channels, skip_rescale)
        self.middle_out = block(channels)

        up_levels = []
        for level in reversed(range(levels)):
            width = base_channels * channel_multipliers[level]
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(block(channels + skip_channels.pop(), width))
                channels = width
            attention = PositionAttention(channels, skip_rescale) if height // 2**level in attention_resolutions else None
            upsample = block(channels, resample="up") if level != 0 else None
            output_norm = group_norm(channels) if output_skip else None
            output_conv = nn.Conv2d(channels, in_channels, 3, padding=1) if output_skip else None
            up_levels.append(_UpLevel(blocks, attention, output_norm, output_conv, upsample))
        self.up_levels = nn.ModuleList(up_levels)
        self.final_norm = None if output_skip else group_norm(channels)
        self.final_conv = None if output_skip else nn.Conv2d(channels, in_channels, 3, padding=1)
        self.output_layer = nn.Conv2d(in_channels, out_channels, 1)

    def flat_modules(self) -> list[nn.Module]:
        """Every parametrised sub-module in the reference implementation's construction order.

        That order (time embedding, input conv, per level: blocks with their attention, then the
        downsampling block and the pyramid projection; middle; per level upwards: blocks, attention,
        output norm and conv, upsampling block; without ``output_skip`` the final norm and conv) is
        how reference checkpoints index their modules; the final ``output_layer`` is not part of it.
        """
        modules: list[nn.Module] = [self.time_fourier, self.time_dense_in, self.time_dense_out, self.input_conv]
        for down in self.down_levels:
            for index, block in enumerate(down.blocks):
                modules.append(block)
                if len(down.attentions):
                    modules.append(down.attentions[index])
            if down.downsample is not None:
                modules.append(down.downsample)
            if down.combine is not None:
                modules.append(down.combine)
        modules += [self.middle_in, self.middle_attention, self.middle_out]
        for up in self.up_levels:
            modules += list(up.blocks)
            if up.attention is not None:
                modules.append(up.attention)
            if up.output_norm is not None:
                modules += [up.output_norm, up.output_conv]
            if up.upsample is not None:
                modules.append(up.upsample)
        if self.final_norm is not None:
            modules += [self.final_norm, self.final_conv]
        return modules

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """``x [B, C_in, H, W]``, ``time [B]`` (> 0) -> ``[B, C_out, H, W]``."""
        embedding = self.time_fourier(torch.log(time))  # [B, 2 nf]
        embedding = self.time_dense_out(F.silu(self.time_dense_in(embedding)))  # [B, 4 nf]
        if not self.centered:
            x = 2.0 * x - 1.0
        pyramid_in = x
        skips = [self.input_conv(x)]  # [B, nf, H, W]
        for down in self.down_levels:
            for index, block in enumerate(down.blocks):
                hidden = block(skips[-1], embedding)
                if len(down.attentions):
                    hidden = down.attentions[index](hidden)
                skips.append(hidden)
            if down.downsample is not None:
                hidden = down.downsample(skips[-1], embedding)  # [B, C, H/2, W/2]
                if down.combine is not None:
                    pyramid_in = fir_downsample(pyramid_in, self.fir_kernel)  # [B, C_in, H/2, W/2]
                    hidden = down.combine(pyramid_in, hidden)
                skips.append(hidden)
        hidden = self.middle_out(self.middle_attention(self.middle_in(skips[-1], embedding)), embedding)
        pyramid = None
        for up in self.up_levels:
            for block in up.blocks:
                hidden = block(torch.cat((hidden, skips.pop()), dim=1), embedding)  # [B, C + C_skip, H, W] -> [B, C, H, W]
            if up.attention is not None:
                hidden = up.attention(hidden)
            if up.output_conv is not None and up.output_norm is not None:
                level_out = up.output_conv(F.silu(up.output_norm(hidden)))  # [B, C_in, H, W]
                pyramid = level_out if pyramid is None else fir_upsample(pyramid, self.fir_kernel) + level_out
            if up.upsample is not None:
                hidden = up.upsample(hidden, embedding)  # [B, C, 2H, 2W]
        if self.final_conv is not None and self.final_norm is not None:
            pyramid = self.final_conv(F.silu(self.final_norm(hidden)))  # [B, C_in, H, W]
        time = time.reshape(-1, 1, 1, 1)
        if self.scale_after_output_layer:
            return self.output_layer(pyramid) / time  # [B, C_out, H, W]
        return self.output_layer(pyramid / time)  # [B, C_out, H, W]


__all__ = [
    "BigGANResBlock",
    "GaussianFourierEmbedding",
    "NCSNppUNet",
    "PositionAttention",
    "PyramidCombine",
    "fir_downsample",
    "fir_kernel_2d",
    "fir_upsample",
    "group_norm",
]
