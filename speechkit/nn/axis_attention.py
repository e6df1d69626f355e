"""Full multi-head self-attention along one axis of a ``[B, C, L, Q]`` feature map.

The attention of TF-GridNet (Z.-Q. Wang et al., IEEE/ACM TASLP 2023) as TIGER uses it (the "F³A"
attention of M. Xu, K. Li et al., ICLR 2025): every one of the ``L`` positions is a token whose
embedding is all its ``Q`` positions on the other axis flattened with the channels. Per head,
queries and keys are a 1x1 conv ``C -> E`` + PReLU + channel layer norm (embedding ``E * Q``),
values a 1x1 conv ``C -> C / H`` + PReLU + norm; scores are ``softmax(q k^T / sqrt(E * Q))`` (full,
unmasked); the heads are concatenated, projected by a 1x1 conv + PReLU + norm, and the input is
added. Parameter names follow the reference (``Queries.h``, ``Keys.h``, ``Values.h``,
``attn_concat_proj``, each with ``conv``, ``act``, ``norm``).

Memory is ``O(L^2)`` per head; nothing is causal. Only real matmuls and softmax: exports to ONNX
with ``L`` and ``Q`` dynamic.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..errors import ConfigError
from .norms import ChannelLayerNorm

#: epsilon of the channel layer norms (TF-GridNet's LayerNormalization4D)
CHANNEL_NORM_EPS = 1e-5


def _projection(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 ``Conv2d`` + PReLU + channel layer norm, named ``conv``, ``act``, ``norm``."""
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, 1),
            act=nn.PReLU(),
            norm=ChannelLayerNorm(out_channels, eps=CHANNEL_NORM_EPS),
        )
    )


class AxisSelfAttention(nn.Module):
    """``[B, C, L, Q] -> [B, C, L, Q]``: attention across the ``L`` axis, embeddings over ``Q``.

    Args:
        channels: ``C`` (divisible by ``num_heads``).
        num_heads: ``H``.
        key_channels: ``E``, query/key channels per head.
    """

    def __init__(self, channels: int, num_heads: int = 4, key_channels: int = 4) -> None:
        super().__init__()
        if channels % num_heads:
            raise ConfigError(f"attention channels {channels} are not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.Queries = nn.ModuleList(_projection(channels, key_channels) for _ in range(num_heads))
        self.Keys = nn.ModuleList(_projection(channels, key_channels) for _ in range(num_heads))
        self.Values = nn.ModuleList(_projection(channels, channels // num_heads) for _ in range(num_heads))
        self.attn_concat_proj = _projection(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, L, Q] -> [B, C, L, Q]``."""
        batch, _, tokens, width = x.shape
        heads = []
        for queries, keys, values in zip(self.Queries, self.Keys, self.Values):
            query = queries(x).transpose(1, 2).flatten(2)  # [B, L, E*Q]
            key = keys(x).transpose(1, 2).flatten(2)  # [B, L, E*Q]
            value = values(x)  # [B, C/H, L, Q]
            value_channels = value.shape[1]
            value = value.transpose(1, 2).flatten(2)  # [B, L, C/H*Q]
            # sqrt(E * Q) as a tensor op, so an exported graph keeps Q dynamic
            root_width = torch.ones_like(query[0, 0]).sum().sqrt()
            weights = torch.softmax(torch.matmul(query, key.transpose(1, 2)) / root_width, dim=-1)  # [B, L, L]
            head = torch.matmul(weights, value)  # [B, L, C/H*Q]
            heads.append(head.reshape(batch, tokens, value_channels, width).transpose(1, 2))  # [B, C/H, L, Q]
        output = self.attn_concat_proj(torch.cat(heads, dim=1))  # [B, C, L, Q]
        return output + x


__all__ = ["AxisSelfAttention", "CHANNEL_NORM_EPS"]
