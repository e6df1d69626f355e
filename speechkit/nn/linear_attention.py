"""Efficient (linear) attention with locally emphasised queries and keys, offline or causal.

The attention of DeFTAN-II (D. Lee and J.-W. Choi, IEEE/ACM TASLP 2024), after "efficient
attention" (Shen et al., WACV 2021): for each head, the keys are normalised by a softmax over the
sequence and the queries by a softmax over their features; the summary ``softmax_L(K)^T V`` is a
``d x d`` matrix per head, so the cost is ``O(L d^2)`` instead of ``O(L^2 d)``:

    out = softmax_d(Q) @ (softmax_L(K)^T V) / sqrt(d)

Queries and keys come from a *locally emphasised* input (a width-3 conv to ``2 C`` channels and a
gated linear unit), the values from the input itself.

**Causal form** (``causal=True``): the softmax over the sequence becomes a softmax over the prefix,
``S_t = sum_{s<=t} exp(k_s) v_s^T / sum_{s<=t} exp(k_s)`` (per key feature), which is the offline
summary of the frames seen so far. It is computed by cumulative sums in chunks of ``chunk``
positions (inside a chunk by a masked ``chunk x chunk`` product, across chunks through the running
sums), and it streams with two explicit state tensors, the running numerator ``[N, h, d, d]`` and
denominator ``[N, h, d]``. Key logits are clamped to ``[-logit_bound, logit_bound]`` before the
exponential so the running sums never overflow in float32 (a fixed bound keeps offline and
streamed sums identical; it only changes keys beyond the bound). The sums never forget: after
very long streams new frames move the summary less and less, as the offline softmax would.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .split_dense import TimeConv1d


class PreNorm(nn.Module):
    """``fn(LayerNorm(x), caches)`` over ``x [N, L, C]`` (the residual is added by the caller)."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def cache_shapes(self, items: int) -> list[tuple[int, ...]]:
        """The wrapped module's cache shapes."""
        return self.fn.cache_shapes(items)

    def forward(self, x: torch.Tensor, caches: Sequence[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x [N, L, C] -> [N, L, C]`` and the wrapped module's new caches."""
        return self.fn(self.norm(x), caches)


def causal_linear_attention(
    queries: torch.Tensor,
    key_weights: torch.Tensor,
    values: torch.Tensor,
    numerator: torch.Tensor,
    denominator: torch.Tensor,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prefix-normalised linear attention continuing from running sums.

    Args:
        queries: feature-softmaxed queries ``[N, h, L, d]``.
        key_weights: ``exp`` of the (clamped) key logits ``[N, h, L, d]``.
        values: ``[N, h, L, d_v]``.
        numerator: running ``sum exp(k_s) v_s^T`` ``[N, h, d, d_v]`` of earlier positions.
        denominator: running ``sum exp(k_s)`` ``[N, h, d]`` of earlier positions.
        chunk: positions handled by one masked product.

    Returns:
        ``out [N, h, L, d_v]`` (unscaled) and the updated numerator and denominator.
    """
    outputs = []
    length = queries.shape[2]
    for start in range(0, length, chunk):
        query = queries[:, :, start : start + chunk]  # [N, h, c, d]
        weight = key_weights[:, :, start : start + chunk]  # [N, h, c, d]
        value = values[:, :, start : start + chunk]  # [N, h, c, d_v]
        size = query.shape[2]
        prefix = denominator.unsqueeze(2) + torch.cumsum(weight, dim=2)  # [N, h, c, d]
        scaled = query / prefix  # [N, h, c, d]
        earlier = torch.matmul(scaled, numerator)  # [N, h, c, d_v]
        mask = torch.ones(size, size, dtype=query.dtype, device=query.device).tril()  # [c, c]
        within = torch.matmul(torch.matmul(scaled, weight.transpose(-1, -2)) * mask, value)  # [N, h, c, d_v]
        outputs.append(earlier + within)
        numerator = numerator + torch.matmul(weight.transpose(-1, -2), value)  # [N, h, d, d_v]
        denominator = prefix[:, :, -1]  # [N, h, d]
    output = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)  # [N, h, L, d_v]
    return output, numerator, denominator


class EfficientLinearAttention(nn.Module):
    """Multi-head efficient attention with locally emphasised Q/K over ``x [N, L, C]``.

    Module tree (state-dict keys of the reference): ``cv_qk.0`` (Conv1d ``C -> 2C``, k=3, no
    bias; a GLU follows), ``to_q``/``to_k``/``to_v`` (Linear ``C -> h d``, no bias), ``to_out.0``
    (Linear ``h d -> C``; dropout follows).

    Args:
        dim: input/output channels ``C``.
        heads: number of heads ``h``.
        head_dim: features per head ``d``.
        dropout: dropout on the summary (offline) or attention output (causal) and after ``to_out``.
        causal: prefix-normalised causal attention along the sequence (see the module docstring).
        chunk: positions per masked product in the causal form.
        logit_bound: clamp of the key logits in the causal form.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float = 0.0, causal: bool = False,
                 chunk: int = 64, logit_bound: float = 20.0) -> None:
        super().__init__()
        if heads < 1 or head_dim < 1 or chunk < 1 or not logit_bound > 0:
            raise ConfigError("EfficientLinearAttention needs positive heads, head_dim, chunk and logit_bound")
        inner = heads * head_dim
        self.heads = heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5
        self.causal = causal
        self.chunk = chunk
        self.logit_bound = float(logit_bound)
        self.cv_qk = nn.ModuleList([TimeConv1d(dim, 2 * dim, 3, bias=False, causal=causal)])
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.att_drop = nn.Dropout(dropout)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(dropout)])

    def cache_shapes(self, items: int) -> list[tuple[int, ...]]:
        """Causal: the Q/K conv history, the running numerator and denominator; else ``[]``."""
        if not self.causal:
            return []
        return [
            *self.cv_qk[0].cache_shapes(items),
            (items, self.heads, self.head_dim, self.head_dim),
            (items, self.heads, self.head_dim),
        ]

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)  # [N, h, L, d]

    def forward(self, x: torch.Tensor, caches: Sequence[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x [N, L, C] -> [N, L, C]`` and the new caches (causal form only)."""
        conv_caches = None
        if self.causal and caches is not None:
            if len(caches) != 3:
                raise ConfigError(f"causal attention expects 3 cache tensors, got {len(caches)}")
            conv_caches = [caches[0]]
        emphasised, new_caches = self.cv_qk[0](x.transpose(1, 2), conv_caches)  # [N, 2C, L]
        value_part, gate = emphasised.chunk(2, dim=1)
        local = (value_part * torch.sigmoid(gate)).transpose(1, 2)  # [N, L, C] (GLU)
        queries = F.softmax(self._heads(self.to_q(local)), dim=-1)  # [N, h, L, d]
        keys = self._heads(self.to_k(local))  # [N, h, L, d]
        values = self._heads(self.to_v(x))  # [N, h, L, d]
        if not self.causal:
            summary = torch.matmul(F.softmax(keys, dim=2).transpose(-1, -2), values) * self.scale  # [N, h, d, d]
            attended = torch.matmul(queries, self.att_drop(summary))  # [N, h, L, d]
        else:
            if caches is None:
                numerator = x.new_zeros(x.shape[0], self.heads, self.head_dim, self.head_dim)
                denominator = x.new_zeros(x.shape[0], self.heads, self.head_dim)
            else:
                numerator, denominator = caches[1], caches[2]
            key_weights = torch.exp(keys.clamp(-self.logit_bound, self.logit_bound))  # [N, h, L, d]
            attended, numerator, denominator = causal_linear_attention(
                queries, key_weights, values, numerator, denominator, self.chunk
            )  # [N, h, L, d]
            attended = self.att_drop(attended * self.scale)
            new_caches = [*new_caches, numerator, denominator]
        merged = attended.transpose(1, 2).reshape(x.shape[0], x.shape[1], self.heads * self.head_dim)  # [N, L, h d]
        return self.to_out[1](self.to_out[0](merged)), new_caches


__all__ = ["EfficientLinearAttention", "PreNorm", "causal_linear_attention"]
