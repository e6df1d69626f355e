"""Layer norms over ``[B, C, T]`` feature maps: global, true cumulative (streamable), channel-wise.

All three have a learned per-channel gain ``gamma`` and bias ``beta`` (shape ``[C]``, the names
asteroid uses) and ``eps = 1e-8`` inside the square root, as in Conv-TasNet (Luo & Mesgarani,
IEEE/ACM TASLP 2019, section II-D):

- :class:`GlobalLayerNorm` ("gLN"): mean and variance over channels and *all* frames.
  Non-causal.
- :class:`CumulativeLayerNorm` ("cLN" in the paper, ``cgLN`` in asteroid): mean and variance over
  channels and every frame up to and including the current one. Causal; streams with an explicit
  running-sum state.
- :class:`ChannelLayerNorm` ("chanLN", asteroid's ``cLN``): mean and variance over channels of each
  frame separately. Causal and stateless.

Use :func:`make_norm` to build one by name.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

#: eps added to the variance before the square root
NORM_EPS = 1e-8

#: norm names accepted by :func:`make_norm`
NORM_TYPES = ("gLN", "cLN", "chanLN")

#: norms whose output at frame t depends on no frame after t
CAUSAL_NORM_TYPES = ("cLN", "chanLN")


def cumulative_moments(x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Running mean and variance of ``x [N, C, T, ...]`` over the channels, any axes after time and
    every frame up to each frame (time is axis 2), continuing ``state [N, 3]`` (sum, sum of squares,
    frames seen). Returns the mean and variance ``[N, 1, T, 1...]`` and the new state.
    """
    dims = (1,) + tuple(range(3, x.dim()))
    values_per_frame = x[:1, :, :1].numel()
    trailing = (1,) * (x.dim() - 3)
    frame_sum = x.sum(dim=dims, keepdim=True)  # [N, 1, T, 1...]
    frame_pow_sum = x.pow(2).sum(dim=dims, keepdim=True)  # [N, 1, T, 1...]
    cum_sum = torch.cumsum(frame_sum, dim=2) + state[:, 0:1].reshape(-1, 1, 1, *trailing)  # [N, 1, T, 1...]
    cum_pow_sum = torch.cumsum(frame_pow_sum, dim=2) + state[:, 1:2].reshape(-1, 1, 1, *trailing)  # [N, 1, T, 1...]
    cum_frames = torch.cumsum(torch.ones_like(frame_sum), dim=2) + state[:, 2:3].reshape(-1, 1, 1, *trailing)
    count = cum_frames * values_per_frame  # [N, 1, T, 1...]
    cum_mean = cum_sum / count
    cum_var = (cum_pow_sum / count - cum_mean.pow(2)).clamp(min=0.0)
    last = (slice(None), 0, -1) + (0,) * len(trailing)
    new_state = torch.stack([cum_sum[last], cum_pow_sum[last], cum_frames[last]], dim=1)  # [N, 3]
    return cum_mean, cum_var, new_state


class _AffineNorm(nn.Module):
    """Shared gain/bias parameters; subclasses compute the normalised features."""

    def __init__(self, num_channels: int, eps: float = NORM_EPS) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = float(eps)
        self.gamma = nn.Parameter(torch.ones(num_channels))
        self.beta = nn.Parameter(torch.zeros(num_channels))

    def _affine(self, normed: torch.Tensor) -> torch.Tensor:
        """``gamma * normed + beta`` per channel of ``[B, C, ...]`` (any number of trailing axes)."""
        if normed.dim() == 3:
            return self.gamma[:, None] * normed + self.beta[:, None]
        shape = (self.num_channels,) + (1,) * (normed.dim() - 2)
        return self.gamma.reshape(shape) * normed + self.beta.reshape(shape)


class GlobalLayerNorm(_AffineNorm):
    """gLN: normalise ``[B, C, T]`` by the mean and variance over channels and all frames."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, T] -> [B, C, T]``."""
        mean = x.mean(dim=(1, 2), keepdim=True)  # [B, 1, 1]
        var = (x - mean).pow(2).mean(dim=(1, 2), keepdim=True)  # [B, 1, 1]
        return self._affine((x - mean) / torch.sqrt(var + self.eps))


class ChannelLayerNorm(_AffineNorm):
    """chanLN: normalise each frame of ``[B, C, T]`` by its own mean and variance over channels.

    Also takes ``[B, C, X, Y]`` (or more axes): each position is normalised over the channels
    (TF-GridNet's / TIGER's ``LayerNormalization4D``, with ``eps=1e-5`` there).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, T] -> [B, C, T]`` (or ``[B, C, X, Y] -> [B, C, X, Y]``)."""
        mean = x.mean(dim=1, keepdim=True)  # [B, 1, T]
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)  # [B, 1, T]
        return self._affine((x - mean) / torch.sqrt(var + self.eps))


class CumulativeLayerNorm(_AffineNorm):
    """cLN: normalise frame t by the mean and variance over channels and frames ``0..t``.

    Streaming state (one tensor ``[B, 3]``): the running sum of the features, the running sum of
    their squares, and the number of frames seen so far. ``forward`` on a whole signal equals
    ``forward_step`` applied chunk by chunk from :meth:`initial_state`.
    """

    def initial_state(self, batch_size: int, device: torch.device | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Zero running statistics ``[batch_size, 3]`` (sum, sum of squares, frame count)."""
        return torch.zeros(batch_size, 3, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, T] -> [B, C, T]`` (offline, from an empty history)."""
        output, _ = self.forward_step(x, self.initial_state(x.shape[0], x.device, x.dtype))
        return output

    def forward_step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalise ``x [B, C, T]`` continuing the history in ``state [B, 3]``; return the new state."""
        if x.shape[-1] == 1:
            return self._forward_frame(x, state)
        cum_mean, cum_var, new_state = cumulative_moments(x, state)  # [B, 1, T] twice, [B, 3]
        return self._affine((x - cum_mean) / torch.sqrt(cum_var + self.eps)), new_state

    def _forward_frame(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward_step` for one frame ``x [B, C, 1]``: no cumulative sums (fewer ops per streaming step)."""
        frame_stats = torch.cat(
            [x.sum(dim=1), (x * x).sum(dim=1), torch.ones_like(x[:, 0])], dim=1
        )  # [B, 3]: sum, sum of squares, one frame
        new_state = state + frame_stats  # [B, 3]
        moments = new_state[:, :2, None] / (new_state[:, 2:3, None] * self.num_channels)  # [B, 2, 1]
        cum_mean = moments[:, 0:1]  # [B, 1, 1]
        cum_var = (moments[:, 1:2] - cum_mean * cum_mean).clamp(min=0.0)  # [B, 1, 1]
        return self._affine((x - cum_mean) / torch.sqrt(cum_var + self.eps)), new_state


def make_norm(norm_type: str, num_channels: int) -> nn.Module:
    """Build a norm by name: ``"gLN"``, ``"cLN"`` (true cumulative) or ``"chanLN"`` (per frame)."""
    if norm_type == "gLN":
        return GlobalLayerNorm(num_channels)
    if norm_type == "cLN":
        return CumulativeLayerNorm(num_channels)
    if norm_type == "chanLN":
        return ChannelLayerNorm(num_channels)
    raise ConfigError(f"unknown norm_type {norm_type!r}; use one of {', '.join(NORM_TYPES)}")
