"""Pseudocomplex layers: complex-valued operations on paired real tensors (no complex dtypes).

Complex feature maps use the speechkit spectrum layout with the real and imaginary parts stacked in
a size-2 axis after the channels: ``[B, C, 2, F, N]`` (``F`` frequency bins, ``N`` frames), so a
spectrum from :class:`speechkit.frontend.STFT` is already a ``C``-channel complex feature map.

* :class:`ComplexConv2d`: ``(W_r + i W_i) * (x_r + i x_i)`` computed by ONE real
  :func:`~torch.nn.functional.conv2d` whose weight is the real 2x2 block form
  ``[[W_r, -W_i], [W_i, W_r]]`` interleaved to match the ``[C, 2]`` channel order. A complex conv
  of ``C_in -> C_out`` channels has ``2 * C_in * C_out * k_f * k_t`` real weights (half of a real
  conv on ``2 C_in -> 2 C_out`` stacked channels). The weight is stored as one tensor
  ``weight [2, C_out, C_in, k_f, k_t]`` (index 0 real, 1 imaginary) so the pair stays together in
  checkpoints, and the bias as ``bias [2, C_out]``. Along frequency the conv is "same"-padded;
  along time it is *valid*: the caller supplies :attr:`ComplexConv2d.time_context` past frames
  (zeros offline, a cache when streaming), which makes it causal.
* Split ("pseudocomplex") activations and norms, applied to real and imaginary parts separately:
  :class:`ComplexSplitActivation`, :class:`ComplexBatchNorm` (batch statistics per real channel),
  :class:`ComplexFrameNorm` (per-frame layer norm over channels, parts and frequency; causal and
  stateless in training too).
* :func:`compress_magnitude`: power-law magnitude compression keeping the phase.

Reference for split activations / pseudocomplex layers: C. Trabelsi et al., "Deep Complex
Networks", ICLR 2018; H.-S. Choi et al., "Phase-aware Speech Enhancement with Deep Complex U-Net",
ICLR 2019.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..frontend.compression import compress_spectrum
from .norms import NORM_EPS

#: activations accepted by :class:`ComplexSplitActivation`
COMPLEX_ACTIVATIONS = ("relu", "leaky_relu", "elu", "prelu", "tanh", "identity")
#: norms accepted by :func:`make_complex_norm`
COMPLEX_NORMS = ("batch", "frame", "none")
#: norms whose output at frame t depends only on frame t, in training as well as in inference
FRAME_LOCAL_NORMS = ("frame", "none")


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def _check_complex_features(x: torch.Tensor, channels: int, name: str) -> None:
    if torch.jit.is_tracing():
        return
    if x.dim() != 5 or x.shape[1] != channels or x.shape[2] != 2:
        raise ConfigError(
            f"{name} expects complex features [batch, {channels}, 2, freq, frames], got {tuple(x.shape)}"
        )


class ComplexConv2d(nn.Module):
    """Complex 2-D convolution over (frequency, time) on ``[B, C, 2, F, N]`` features.

    Args:
        in_channels: complex input channels ``C_in``.
        out_channels: complex output channels ``C_out``.
        kernel_size: ``(k_f, k_t)`` or one int for both; ``k_f`` must be odd (same padding).
        dilation: ``(d_f, d_t)`` or one int for both.
        bias: learn a complex bias.

    :meth:`forward_valid` takes ``x [B, C_in, 2, F, N + time_context]`` (the past context first)
    and returns ``[B, C_out, 2, F, N]``; :meth:`forward` left-pads ``time_context`` zero frames
    first (causal, same length).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        dilation: int | tuple[int, int] = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _pair(kernel_size)
        self.dilation = _pair(dilation)
        if self.in_channels <= 0 or self.out_channels <= 0:
            raise ConfigError(f"ComplexConv2d needs positive channel counts, got {in_channels} -> {out_channels}")
        if self.kernel_size[0] % 2 == 0:
            raise ConfigError(f"the frequency kernel size must be odd for same padding, got {self.kernel_size[0]}")
        self.weight = nn.Parameter(torch.empty(2, self.out_channels, self.in_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(2, self.out_channels)) if bias else None
        self.reset_parameters()

    @property
    def time_context(self) -> int:
        """Past frames each output frame needs besides its own: ``(k_t - 1) * d_t``."""
        return (self.kernel_size[1] - 1) * self.dilation[1]

    @property
    def freq_padding(self) -> int:
        """Zero bins padded on each side of the frequency axis."""
        return (self.kernel_size[0] - 1) * self.dilation[0] // 2

    def reset_parameters(self) -> None:
        """Variance-scaled uniform init: each of W_r, W_i like a real conv with ``2 * C_in`` inputs."""
        fan_in = 2 * self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -math.sqrt(3.0) * bound, math.sqrt(3.0) * bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def real_weight(self) -> torch.Tensor:
        """The equivalent real conv weight ``[2 C_out, 2 C_in, k_f, k_t]`` (channel order ``[C, 2]``)."""
        weight_real, weight_imag = self.weight[0], self.weight[1]  # [C_out, C_in, k_f, k_t] each
        real_row = torch.stack([weight_real, -weight_imag], dim=2)  # [C_out, C_in, 2, k_f, k_t]
        imag_row = torch.stack([weight_imag, weight_real], dim=2)  # [C_out, C_in, 2, k_f, k_t]
        block = torch.stack([real_row, imag_row], dim=1)  # [C_out, 2, C_in, 2, k_f, k_t]
        return block.reshape(2 * self.out_channels, 2 * self.in_channels, *self.kernel_size)  # [2C_out, 2C_in, k_f, k_t]

    def real_bias(self) -> torch.Tensor | None:
        """The equivalent real bias ``[2 C_out]`` in ``[C, 2]`` order."""
        if self.bias is None:
            return None
        return self.bias.transpose(0, 1).reshape(2 * self.out_channels)  # [2C_out]

    def forward_valid(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C_in, 2, F, N + time_context] -> [B, C_out, 2, F, N]`` (no time padding)."""
        return self._conv(x, self.dilation)

    def forward_taps(self, taps: torch.Tensor) -> torch.Tensor:
        """One output frame from its ``k_t`` input frames only: ``taps [B, C_in, 2, F, k_t] -> [B, C_out, 2, F, 1]``.

        ``taps[..., j]`` is input frame ``t - (k_t - 1 - j) * d_t``: the frames :meth:`forward_valid`
        would read for frame ``t``, gathered beforehand (a streaming step then touches ``k_t``
        frames of its history instead of all of them).
        """
        return self._conv(taps, (self.dilation[0], 1))

    def _conv(self, x: torch.Tensor, dilation: tuple[int, int]) -> torch.Tensor:
        _check_complex_features(x, self.in_channels, "ComplexConv2d")
        batch, _, _, freqs, frames = x.shape
        flat = x.reshape(batch, 2 * self.in_channels, freqs, frames)  # [B, 2C_in, F, N + ctx]
        flat = F.pad(flat, (0, 0, self.freq_padding, self.freq_padding))  # [B, 2C_in, F + 2p, N + ctx]
        out = F.conv2d(flat, self.real_weight(), self.real_bias(), dilation=dilation)  # [B, 2C_out, F, N]
        return out.reshape(batch, self.out_channels, 2, freqs, out.shape[-1])  # [B, C_out, 2, F, N]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Causal along time: ``x [B, C_in, 2, F, N] -> [B, C_out, 2, F, N]``."""
        padded = F.pad(x, (self.time_context, 0))  # [B, C_in, 2, F, N + ctx]
        return self.forward_valid(padded)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"dilation={self.dilation}, bias={self.bias is not None}"
        )


class ComplexSplitActivation(nn.Module):
    """A real activation applied to the real and imaginary parts separately (same shape).

    ``"prelu"`` learns one slope per complex channel, shared by both parts.
    """

    def __init__(self, kind: str = "leaky_relu", channels: int = 1, negative_slope: float = 0.01) -> None:
        super().__init__()
        if kind not in COMPLEX_ACTIVATIONS:
            raise ConfigError(f"unknown activation {kind!r} (known: {', '.join(COMPLEX_ACTIVATIONS)})")
        self.kind = kind
        self.negative_slope = negative_slope
        self.slope = nn.Parameter(torch.full((channels,), 0.25)) if kind == "prelu" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, 2, F, N] -> [B, C, 2, F, N]``."""
        if self.kind == "relu":
            return torch.relu(x)
        if self.kind == "leaky_relu":
            return F.leaky_relu(x, self.negative_slope)
        if self.kind == "elu":
            return F.elu(x)
        if self.kind == "tanh":
            return torch.tanh(x)
        if self.kind == "prelu":
            slope = self.slope.reshape(1, -1, 1, 1, 1)  # [1, C, 1, 1, 1]
            return torch.where(x >= 0, x, slope * x)
        return x

    def extra_repr(self) -> str:
        return self.kind


class ComplexBatchNorm(nn.Module):
    """Split batch norm: :class:`~torch.nn.BatchNorm2d` over the ``2 C`` real channels.

    Real and imaginary parts are normalised separately (the "naive" complex batch norm of
    Trabelsi et al. without whitening). In eval mode it is a fixed per-channel affine map, so it is
    causal and stateless when streaming; in training it uses statistics over the batch, all
    frequencies and all frames (so training is not frame-local).
    """

    def __init__(self, channels: int, momentum: float = 0.1) -> None:
        super().__init__()
        self.channels = channels
        self.norm = nn.BatchNorm2d(2 * channels, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, 2, F, N] -> [B, C, 2, F, N]``."""
        batch, channels, _, freqs, frames = x.shape
        flat = x.reshape(batch, 2 * channels, freqs, frames)  # [B, 2C, F, N]
        return self.norm(flat).reshape(batch, channels, 2, freqs, frames)  # [B, C, 2, F, N]


class ComplexFrameNorm(nn.Module):
    """Per-frame layer norm: mean and variance over channels, both parts and all frequencies.

    Each frame is normalised by its own statistics, so the layer is causal and stateless in training
    and inference alike; the affine gain and bias are per (channel, part): ``gamma, beta [C, 2]``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.gamma = nn.Parameter(torch.ones(channels, 2))
        self.beta = nn.Parameter(torch.zeros(channels, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, 2, F, N] -> [B, C, 2, F, N]``."""
        mean = x.mean(dim=(1, 2, 3), keepdim=True)  # [B, 1, 1, 1, N]
        var = (x - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True)  # [B, 1, 1, 1, N]
        normed = (x - mean) / torch.sqrt(var + NORM_EPS)
        return self.gamma[None, :, :, None, None] * normed + self.beta[None, :, :, None, None]


def make_complex_norm(kind: str, channels: int) -> nn.Module:
    """A pseudocomplex norm by name: ``"batch"``, ``"frame"`` or ``"none"`` (identity)."""
    if kind == "batch":
        return ComplexBatchNorm(channels)
    if kind == "frame":
        return ComplexFrameNorm(channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"unknown complex norm {kind!r} (known: {', '.join(COMPLEX_NORMS)})")


def compress_magnitude(spec: torch.Tensor, exponent: float, eps: float = 1e-8, dim: int = -3) -> torch.Tensor:
    """Power-law magnitude compression keeping the phase: ``X |X|^(exponent - 1)`` (same shape).

    ``spec`` has real and imaginary parts stacked at ``dim`` (default: ``[..., 2, F, N]``);
    ``exponent = 1`` returns ``spec`` unchanged. ``eps`` keeps the result finite at ``|X| = 0``.
    """
    return compress_spectrum(spec, exponent, 1.0, eps, dim)


__all__ = [
    "COMPLEX_ACTIVATIONS",
    "COMPLEX_NORMS",
    "FRAME_LOCAL_NORMS",
    "ComplexBatchNorm",
    "ComplexConv2d",
    "ComplexFrameNorm",
    "ComplexSplitActivation",
    "compress_magnitude",
    "make_complex_norm",
]
