"""Multi-scale selective attention (MSA): a U-shaped depthwise-conv block over ``[B, N, L]``.

The sequence block of TIGER (M. Xu, K. Li et al., "TIGER: Time-frequency Interleaved Gain
Extraction and Reconstruction for Efficient Speech Separation", ICLR 2025, section 3.3), in the
form of the TDANet/A-FRCNN U-conv block it builds on:

1. a 1x1 projection ``N -> C`` with global layer norm and PReLU;
2. ``depth`` levels of depthwise convs (kernel 5): level 0 keeps the length, every further level
   halves it (stride 2);
3. a *global* feature: every level average-pooled to the coarsest length and summed, then a
   small conv MLP;
4. each level fused with the global feature (:class:`SelectiveFusion`: ``local * sigmoid(gate) +
   embedding`` with the global terms resized to the level's length);
5. a top-down path of :class:`SelectiveFusion` blocks (depthwise kernel 5) back to full length,
   then a 1x1 projection ``C -> N`` and the block's input added.

Faithful quirks of the reference implementation: the top-down path starts by fusing level
``depth - 2`` with level ``depth - 3`` (not with the coarsest level), so the coarsest fused level
is never used (it is not computed here, but its fusion parameters exist so reference checkpoints
load key-complete); the pooled and resized lengths follow ``adaptive_avg_pool1d`` and nearest
interpolation exactly, written with gathers of a cumulative sum (:func:`adaptive_average_pool`)
and integer indices (:func:`nearest_resize`) so the block exports to ONNX with a dynamic length.

Global layer norm here is ``GroupNorm(1, C, eps=1e-8)`` (parameters ``weight``/``bias``); every
norm spans the whole sequence, so the block is not causal.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .conv import ShortSequenceDepthwiseConv1d

#: epsilon of the block's global layer norms
GLOBAL_NORM_EPS = 1e-8
#: kernel size of the depthwise convs of the levels, the MLP and the top-down fusion
DEPTHWISE_KERNEL = 5


def adaptive_average_pool(x: torch.Tensor, length: torch.Tensor | int, exportable: bool | None = None) -> torch.Tensor:
    """``adaptive_avg_pool1d(x, length)`` for ``x [..., L]`` -> ``[..., length]``, ONNX-exportable.

    Output ``i`` averages inputs ``floor(i L / length) .. ceil((i + 1) L / length) - 1`` (PyTorch's
    bins, also when ``length`` does not divide ``L``). Eager mode calls PyTorch's own kernel; while
    tracing for ONNX (where that operator cannot export with such sizes) the bins are taken as
    differences of a cumulative sum, equal to float rounding. ``exportable`` forces one path
    (default: the exportable one exactly while tracing).
    """
    if not (torch.jit.is_tracing() if exportable is None else exportable):
        return F.adaptive_avg_pool1d(x, int(length))
    size = x.shape[-1]
    index = torch.arange(length, device=x.device)  # [length]
    start = torch.div(index * size, length, rounding_mode="floor")  # [length]
    end = torch.div((index + 1) * size + length - 1, length, rounding_mode="floor")  # [length]
    cumulative = F.pad(torch.cumsum(x, dim=-1), (1, 0))  # [..., L + 1]
    total = cumulative.index_select(-1, end) - cumulative.index_select(-1, start)  # [..., length]
    return total / (end - start).to(x.dtype)


def nearest_resize(x: torch.Tensor, length: torch.Tensor | int, exportable: bool | None = None) -> torch.Tensor:
    """``F.interpolate(x, length, mode="nearest")`` for ``x [B, C, L]`` -> ``[B, C, length]``, ONNX-exportable.

    Output ``i`` is input ``floor(i L / length)``. Eager mode calls PyTorch's own kernel; while
    tracing for ONNX the indices are computed in integers and gathered (the same indices for every
    length this block produces, where PyTorch's float scale never lands next to an integer).
    ``exportable`` forces one path (default: the exportable one exactly while tracing).
    """
    if not (torch.jit.is_tracing() if exportable is None else exportable):
        return F.interpolate(x, size=int(length), mode="nearest")
    size = x.shape[-1]
    index = torch.div(torch.arange(length, device=x.device) * size, length, rounding_mode="floor")  # [length]
    return x.index_select(-1, index)  # [B, C, length]


class ConvNorm(nn.Module):
    """``Conv1d`` followed by a global layer norm (``conv``, ``norm``), optionally a PReLU (``act``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1, bias: bool = True, activation: bool = False) -> None:
        super().__init__()
        padding = (kernel_size - 1) // 2
        if groups > 1 and groups == in_channels == out_channels:  # depthwise over the block's short sequences
            self.conv: nn.Conv1d = ShortSequenceDepthwiseConv1d(out_channels, kernel_size, stride, padding, bias)
        else:
            self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                  groups=groups, bias=bias)
        self.norm = nn.GroupNorm(1, out_channels, eps=GLOBAL_NORM_EPS)
        self.act = nn.PReLU() if activation else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, L] -> [B, C_out, ceil(L / stride)]``."""
        y = self.norm(self.conv(x))  # [B, C_out, L']
        return self.act(y) if self.act is not None else y


class SelectiveFusion(nn.Module):
    """``local_embedding(local) * sigmoid(global_gate(other)) + global_embedding(other)``.

    ``other`` (any length) is brought to the length of ``local`` by nearest resizing after its
    depthwise convs. Parameter names follow the reference (``local_embedding``,
    ``global_embedding``, ``global_act`` = the gate), each a bias-free depthwise :class:`ConvNorm`.
    """

    def __init__(self, channels: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.local_embedding = ConvNorm(channels, channels, kernel_size, groups=channels, bias=False)
        self.global_embedding = ConvNorm(channels, channels, kernel_size, groups=channels, bias=False)
        self.global_act = ConvNorm(channels, channels, kernel_size, groups=channels, bias=False)

    def forward(self, local: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """``local [B, C, L]``, ``other [B, C, L']`` -> ``[B, C, L]``."""
        length = local.shape[-1]
        gate = nearest_resize(torch.sigmoid(self.global_act(other)), length)  # [B, C, L]
        embedding = nearest_resize(self.global_embedding(other), length)  # [B, C, L]
        return self.local_embedding(local) * gate + embedding


class GlobalMLP(nn.Module):
    """The global branch: 1x1 ConvNorm, depthwise conv (k=5), ReLU, dropout, 1x1 ConvNorm, dropout.

    Names follow the reference: ``fc1``, ``dwconv``, ``fc2`` (the 1x1 ConvNorms have no bias).
    """

    def __init__(self, channels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.fc1 = ConvNorm(channels, channels, 1, bias=False)
        self.dwconv = ShortSequenceDepthwiseConv1d(channels, DEPTHWISE_KERNEL, padding=DEPTHWISE_KERNEL // 2)
        self.fc2 = ConvNorm(channels, channels, 1, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, L] -> [B, C, L]``."""
        hidden = self.dropout(torch.relu(self.dwconv(self.fc1(x))))  # [B, C, L]
        return self.dropout(self.fc2(hidden))


class MultiScaleBlock(nn.Module):
    """The multi-scale selective-attention block ``[B, N, L] -> [B, N, L]`` (module docstring).

    Args:
        features: ``N``, channels in and out.
        hidden_channels: ``C``, channels inside the block.
        depth: ``D``, number of levels (at least 3; level ``k`` has length ``ceil(L / 2**k)``).
        dropout: dropout of the global MLP (training only).
    """

    def __init__(self, features: int, hidden_channels: int, depth: int, dropout: float = 0.1) -> None:
        super().__init__()
        if depth < 3:
            raise ConfigError(f"the multi-scale block needs a depth of at least 3, got {depth}")
        self.depth = depth
        self.proj_1x1 = ConvNorm(features, hidden_channels, 1, activation=True)
        self.spp_dw = nn.ModuleList(
            ConvNorm(hidden_channels, hidden_channels, DEPTHWISE_KERNEL, stride=1 if level == 0 else 2,
                     groups=hidden_channels)
            for level in range(depth)
        )
        self.globalatt = GlobalMLP(hidden_channels, dropout)
        # one fusion per level; the coarsest one (index depth - 1) only exists for checkpoint layout
        self.loc_glo_fus = nn.ModuleList(SelectiveFusion(hidden_channels) for _ in range(depth))
        self.last_layer = nn.ModuleList(SelectiveFusion(hidden_channels, DEPTHWISE_KERNEL) for _ in range(depth - 1))
        self.res_conv = nn.Conv1d(hidden_channels, features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, N, L] -> [B, N, L]``."""
        levels = [self.spp_dw[0](self.proj_1x1(x))]  # [B, C, L]
        for level in range(1, self.depth):
            levels.append(self.spp_dw[level](levels[-1]))  # [B, C, ceil(L / 2**level)]
        coarsest = levels[-1].shape[-1]
        pooled = adaptive_average_pool(levels[0], coarsest)  # [B, C, L_coarsest]
        for level in levels[1:-1]:
            pooled = pooled + adaptive_average_pool(level, coarsest)  # [B, C, L_coarsest]
        pooled = pooled + levels[-1]
        global_features = self.globalatt(pooled)  # [B, C, L_coarsest]
        # the coarsest level's fusion never reaches the output (reference behaviour): skipped
        fused = [self.loc_glo_fus[level](levels[level], global_features) for level in range(self.depth - 1)]
        expanded = self.last_layer[self.depth - 2](fused[self.depth - 2], fused[self.depth - 3])  # [B, C, L_{D-2}]
        for level in range(self.depth - 3, -1, -1):
            expanded = self.last_layer[level](fused[level], expanded)  # [B, C, L_level]
        return self.res_conv(expanded) + x


__all__ = [
    "ConvNorm",
    "GlobalMLP",
    "MultiScaleBlock",
    "SelectiveFusion",
    "adaptive_average_pool",
    "nearest_resize",
]
