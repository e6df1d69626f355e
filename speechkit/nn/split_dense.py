"""Time-streamable convolutions, single-group norms and split dense blocks.

Split dense block (D. Lee and J.-W. Choi, "DeFTAN-II: Efficient Multichannel Speech Enhancement
with Subgroup Processing", IEEE/ACM TASLP 2024): the ``C_in = groups * C_out`` input channels are
split into ``groups`` strided subgroups (channels ``g, g + groups, g + 2 groups, ...``); block 0
maps subgroup 0 to ``C_out`` channels (conv, single-group norm, PReLU) and block ``g`` maps
``[output of block g-1, subgroup g]`` (``2 C_out`` channels) to ``C_out``. The output is the last
block's. Subgroups are processed one after another instead of all at once, which costs less.

Time axis convention: every module here takes feature maps whose axis 2 is time (``[N, C, T]``
sequences along time, or ``[B, C, T, F]`` spectrogram features). With ``causal=True`` the time
axis is padded on the left only and each module streams with explicit cache tensors:
``forward(x, cache)`` returns ``(y, new_cache)``; offline, the caches start at zero, so a stream of
steps equals the offline output. With ``causal=False`` the padding is centred and no cache exists
(``forward`` returns an empty cache list). A module whose axis 2 is *not* time (e.g. the frequency
axis of a per-frame transformer) is simply built with ``causal=False``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .norms import cumulative_moments


def _take(caches: Sequence[torch.Tensor] | None, count: int) -> list[torch.Tensor | None]:
    """``count`` caches from ``caches`` (None: ``count`` Nones, the offline zero start)."""
    if caches is None:
        return [None] * count
    if len(caches) != count:
        raise ConfigError(f"expected {count} cache tensor(s), got {len(caches)}")
    return list(caches)


def _time_history(x: torch.Tensor, cache: torch.Tensor | None, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[cache, x]`` along time (axis 2; zeros when ``cache`` is None) and its last ``context`` frames."""
    if cache is None:
        shape = list(x.shape)
        shape[2] = context
        cache = x.new_zeros(shape)
    extended = torch.cat([cache, x], dim=2)  # [N, C, context + T, ...]
    return extended, extended[:, :, extended.shape[2] - context :]


class TimeConv1d(nn.Conv1d):
    """Conv1d over ``[N, C, T]``, length-preserving; causal (left-padded, cached) or centred.

    Parameters are exactly ``nn.Conv1d``'s (``weight [C_out, C_in, k]``, ``bias``), so state dicts
    of plain convs load unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1,
                 bias: bool = True, causal: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation, bias=bias)
        self.causal = causal
        self.context = (kernel_size - 1) * dilation
        if not causal and self.context % 2:
            raise ConfigError(f"a centred conv needs an even context (kernel_size-1)*dilation, got {self.context}")

    def cache_shapes(self, items: int) -> list[tuple[int, ...]]:
        """``[(items, C_in, context)]`` when causal, else ``[]``."""
        return [(items, self.in_channels, self.context)] if self.causal and self.context else []

    def forward(self, x: torch.Tensor, caches: Sequence[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x [N, C_in, T] -> [N, C_out, T]`` and the new cache list."""
        if not self.causal or not self.context:
            padded = F.pad(x, (self.context // 2, self.context // 2))  # [N, C_in, T + context]
            return F.conv1d(padded, self.weight, self.bias, dilation=self.dilation), []
        (cache,) = _take(caches, 1)
        extended, new_cache = _time_history(x, cache, self.context)  # [N, C_in, context + T]
        return F.conv1d(extended, self.weight, self.bias, dilation=self.dilation), [new_cache]


class TimeConvTranspose1d(nn.ConvTranspose1d):
    """Stride-1 transposed conv over ``[N, C, L]``: ``L`` positions back to ``L + k - 1`` (centred use)
    or, causal, output ``t`` from positions ``t - k + 1 .. t`` with the first ``L`` outputs kept.

    Parameters are ``nn.ConvTranspose1d``'s (``weight [C_in, C_out, k]``). The causal form runs as a
    Conv1d with the flipped, transposed kernel over the cached last ``k - 1`` positions.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, causal: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size)
        self.causal = causal
        self.context = kernel_size - 1

    def cache_shapes(self, items: int) -> list[tuple[int, ...]]:
        """``[(items, C_in, k - 1)]`` when causal, else ``[]``."""
        return [(items, self.in_channels, self.context)] if self.causal and self.context else []

    def forward(self, x: torch.Tensor, caches: Sequence[torch.Tensor] | None = None  # type: ignore[override]
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Centred: ``[N, C_in, L] -> [N, C_out, L + k - 1]``; causal: ``-> [N, C_out, L]``; new caches."""
        if not self.causal or not self.context:
            return F.conv_transpose1d(x, self.weight, self.bias), []
        (cache,) = _take(caches, 1)
        extended, new_cache = _time_history(x, cache, self.context)  # [N, C_in, k - 1 + L]
        kernel = self.weight.transpose(0, 1).flip(-1)  # [C_out, C_in, k]
        return F.conv1d(extended, kernel, self.bias), [new_cache]


class TimeConv2d(nn.Conv2d):
    """Conv2d over ``[B, C, T, F]`` keeping T and F: frequency centred, time causal (cached) or centred."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int] = (3, 3),
                 causal: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size)
        self.causal = causal
        self.context = kernel_size[0] - 1
        if (kernel_size[1] - 1) % 2 or (not causal and self.context % 2):
            raise ConfigError(f"TimeConv2d needs odd centred kernel sizes, got {kernel_size}")

    def cache_shapes(self, items: int, num_freqs: int) -> list[tuple[int, ...]]:
        """``[(B, C_in, k_t - 1, F)]`` when causal, else ``[]``."""
        return [(items, self.in_channels, self.context, num_freqs)] if self.causal and self.context else []

    def forward(self, x: torch.Tensor, caches: Sequence[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x [B, C_in, T, F] -> [B, C_out, T, F]`` and the new cache list."""
        freq_pad = (self.kernel_size[1] - 1) // 2
        if not self.causal or not self.context:
            padded = F.pad(x, (freq_pad, freq_pad, self.context // 2, self.context // 2))  # [B, C_in, T + ctx, F + 2p]
            return F.conv2d(padded, self.weight, self.bias), []
        (cache,) = _take(caches, 1)
        extended, new_cache = _time_history(x, cache, self.context)  # [B, C_in, ctx + T, F]
        return F.conv2d(F.pad(extended, (freq_pad, freq_pad)), self.weight, self.bias), [new_cache]


#: where a :class:`SingleGroupNorm` takes its statistics along time
TIME_STATISTICS = ("all", "frame", "cumulative")


class SingleGroupNorm(nn.Module):
    """``GroupNorm(1, C)`` (statistics over every non-batch axis), per frame, or cumulative along time (axis 2).

    ``time_statistics``: ``"all"`` is :func:`torch.nn.functional.group_norm` with one group (the
    statistics span the whole time axis: non-causal). ``"frame"`` takes the mean and variance over
    the channels and any axes after time, separately for each frame: causal and stateless, but it
    removes each frame's level. ``"cumulative"`` takes them over every frame so far (Conv-TasNet's
    cLN, :func:`speechkit.nn.norms.cumulative_moments`): causal, keeps the frame levels, and streams
    with a ``[N, 3]`` running-sum cache. Parameters ``weight``/``bias`` ``[C]`` as ``nn.GroupNorm``'s,
    so every form loads the same weights.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, time_statistics: str = "all") -> None:
        super().__init__()
        if time_statistics not in TIME_STATISTICS:
            raise ConfigError(f"time_statistics must be one of {', '.join(TIME_STATISTICS)}, got {time_statistics!r}")
        self.num_channels = num_channels
        self.eps = eps
        self.time_statistics = time_statistics
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def cache_shapes(self, items: int) -> list[tuple[int, ...]]:
        """``[(items, 3)]`` (running sums) when cumulative, else ``[]``."""
        return [(items, 3)] if self.time_statistics == "cumulative" else []

    def forward(self, x: torch.Tensor, caches: Sequence[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x [N, C, T, ...] -> same shape`` and the new cache list."""
        affine_shape = (1, self.num_channels) + (1,) * (x.dim() - 2)
        if self.time_statistics == "all":
            return F.group_norm(x, 1, self.weight, self.bias, self.eps), []
        new_caches: list[torch.Tensor] = []
        if self.time_statistics == "frame":
            dims = (1,) + tuple(range(3, x.dim()))
            mean = x.mean(dim=dims, keepdim=True)  # [N, 1, T, 1...]
            var = (x - mean).pow(2).mean(dim=dims, keepdim=True)  # [N, 1, T, 1...]
        else:
            (state,) = _take(caches, 1)
            state = x.new_zeros(x.shape[0], 3) if state is None else state
            mean, var, new_state = cumulative_moments(x, state)  # [N, 1, T, 1...] twice, [N, 3]
            new_caches = [new_state]
        normed = (x - mean) / torch.sqrt(var + self.eps)
        return normed * self.weight.reshape(affine_shape) + self.bias.reshape(affine_shape), new_caches


class SplitDenseBlock(nn.Module):
    """Split dense block: ``[N, groups * C_out, T(, F)] -> [N, C_out, T(, F)]`` (see the module docstring).

    Block ``g`` is ``blocks[g] = [conv (k=3 or 3x3), SingleGroupNorm, PReLU(C_out)]``, the module
    tree (and state-dict keys ``blocks.g.0/1/2``) of the reference implementation.

    Args:
        in_channels: ``groups * out_channels``.
        out_channels: channels of every block output.
        groups: number of strided subgroups.
        dims: 1 (``[N, C, T]``, Conv1d k=3) or 2 (``[B, C, T, F]``, Conv2d 3x3).
        causal: causal along time (axis 2): left padding, streaming caches, causal norms.
        eps: norm epsilon.
        causal_norm: the norms' time statistics when causal, ``"frame"`` or ``"cumulative"``
            (:class:`SingleGroupNorm`); ``"all"`` otherwise.
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int, dims: int = 1,
                 causal: bool = False, eps: float = 1e-5, causal_norm: str = "cumulative") -> None:
        super().__init__()
        if in_channels != groups * out_channels:
            raise ConfigError(f"a split dense block needs in_channels = groups * out_channels, got "
                              f"{in_channels} != {groups} * {out_channels}")
        self.groups = groups
        self.dims = dims
        blocks = []
        for index in range(groups):
            block_in = out_channels * (2 if index else 1)
            conv: nn.Module = (TimeConv1d(block_in, out_channels, 3, causal=causal) if dims == 1
                               else TimeConv2d(block_in, out_channels, (3, 3), causal=causal))
            norm = SingleGroupNorm(out_channels, eps, causal_norm if causal else "all")
            blocks.append(nn.ModuleList([conv, norm, nn.PReLU(out_channels)]))
        self.blocks = nn.ModuleList(blocks)

    def cache_shapes(self, items: int, num_freqs: int = 0) -> list[tuple[int, ...]]:
        """Per block (causal): the conv's time history, then the norm's running sums if cumulative."""
        shapes: list[tuple[int, ...]] = []
        for conv, norm, _ in self.blocks:  # type: ignore[misc]
            shapes.extend(conv.cache_shapes(items) if self.dims == 1 else conv.cache_shapes(items, num_freqs))
            shapes.extend(norm.cache_shapes(items))
        return shapes

    def forward(self, x: torch.Tensor, caches: Sequence[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x [N, groups * C_out, T(, F)] -> [N, C_out, T(, F)]`` and the new caches."""
        first_conv, first_norm = self.blocks[0][0], self.blocks[0][1]
        conv_count = len(first_conv.cache_shapes(1) if self.dims == 1 else first_conv.cache_shapes(1, 1))
        per_block = conv_count + len(first_norm.cache_shapes(1))
        caches = _take(caches, per_block * self.groups) if caches is not None else None
        new_caches: list[torch.Tensor] = []
        subgroup = x[:, 0 :: self.groups]  # [N, C_out, T(, F)]
        output = subgroup
        for index, (conv, norm, activation) in enumerate(self.blocks):  # type: ignore[misc]
            block_caches = None if caches is None else caches[index * per_block : (index + 1) * per_block]
            output, conv_new = conv(subgroup, None if block_caches is None else block_caches[:conv_count])
            output, norm_new = norm(output, None if block_caches is None else block_caches[conv_count:])
            output = activation(output)  # [N, C_out, T(, F)]
            new_caches.extend(conv_new + norm_new)
            if index + 1 < self.groups:
                subgroup = torch.cat([output, x[:, index + 1 :: self.groups]], dim=1)  # [N, 2 C_out, T(, F)]
        return output, new_caches


__all__ = ["TIME_STATISTICS", "SingleGroupNorm", "SplitDenseBlock", "TimeConv1d", "TimeConv2d", "TimeConvTranspose1d"]
