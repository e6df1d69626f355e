"""MossFormer building blocks: gated single-head attention with joint local/global attention.

S. Zhao and B. Ma, "MossFormer: Pushing the Performance Limit of Monaural Speech Separation using
Gated Single-Head Transformer with Convolution-Augmented Joint Self-Attentions", ICASSP 2023, and
its successor MossFormer2 (S. Zhao et al., ICASSP 2024, arXiv:2312.11825), whose layers these are.

Every block works on sequences ``[B, T, D]`` (time before features). Submodule names mirror the
official ClearerVoice release (``to_hidden.mdl.0.g``, ``to_hidden.mdl.3.sequential.1.conv.weight``,
``qk_offset_scale.gamma``, ...), so imported state dicts map one to one:

* :class:`ScaleNorm`: ``x / max(||x|| / sqrt(D), eps) * g`` with one learned scalar ``g``.
* :class:`ConvModule`: residual depthwise convolution along time (kernel 17, "same" padding).
* :class:`FFConvM`: norm -> Linear -> SiLU -> :class:`ConvModule` -> dropout.
* :class:`OffsetScale`: one projection turned into ``heads`` vectors by per-head scale and offset.
* :class:`RotaryEmbedding`: rotary position code on the first ``dim`` features (interleaved pairs,
  base 10000), fixed frequencies.
* :class:`ScaledSinusoidalEmbedding`: absolute sinusoidal position code times one learned scalar.
* :class:`MossFormerAttention`: token shift, gated attention unit whose attention is the sum of
  quadratic attention inside non-overlapping groups of ``group_size`` frames (weights
  ``relu(q.k / group_size)^2``) and linear attention over the whole sequence.

All of it exports with the legacy ONNX exporter with a dynamic time axis (no einops, no complex
numbers, the group padding computed from the traced length).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: ScaleNorm's floor on the scaled norm (the official value)
SCALE_NORM_EPS = 1e-5
#: base of the rotary and sinusoidal position codes
POSITION_BASE = 10000.0


class ScaleNorm(nn.Module):
    """``x [..., D] -> x / max(||x||_2 / sqrt(D), eps) * g`` (one learned gain ``g``)."""

    def __init__(self, dim: int, eps: float = SCALE_NORM_EPS) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., D] -> [..., D]``."""
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True) * self.scale  # [..., 1]
        return x / norm.clamp(min=self.eps) * self.g


class _ChannelsFirst(nn.Module):
    """``[B, T, D] -> [B, D, T]`` (a parameter-free step, kept so the depthwise conv sits at index 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)  # [B, T, D] -> [B, D, T]


class _DepthwiseConv1d(nn.Module):
    """Depthwise ``Conv1d`` without bias and with "same" padding (odd ``kernel_size``)."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2, groups=channels,
                              bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # [B, D, T]


class ConvModule(nn.Module):
    """Residual depthwise convolution along time: ``x + dwconv(x)`` on ``[B, T, D]``."""

    def __init__(self, channels: int, kernel_size: int = 17) -> None:
        super().__init__()
        self.sequential = nn.Sequential(_ChannelsFirst(), _DepthwiseConv1d(channels, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, D] -> [B, T, D]``."""
        return x + self.sequential(x).transpose(1, 2)  # [B, D, T] -> [B, T, D]


class FFConvM(nn.Module):
    """``norm -> Linear(dim_in, dim_out) -> SiLU -> ConvModule -> Dropout`` on ``[B, T, dim_in]``.

    ``norm`` is ``"scalenorm"`` (:class:`ScaleNorm`, the attention's) or ``"layernorm"``
    (``nn.LayerNorm``, the gated FSMN's).
    """

    def __init__(self, dim_in: int, dim_out: int, norm: str = "scalenorm", dropout: float = 0.1,
                 conv_kernel_size: int = 17) -> None:
        super().__init__()
        norm_layer = ScaleNorm(dim_in) if norm == "scalenorm" else nn.LayerNorm(dim_in)
        self.mdl = nn.Sequential(
            norm_layer, nn.Linear(dim_in, dim_out), nn.SiLU(), ConvModule(dim_out, conv_kernel_size),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, dim_in] -> [B, T, dim_out]``."""
        return self.mdl(x)


class OffsetScale(nn.Module):
    """``x [..., D] -> heads`` tensors ``x * gamma[h] + beta[h]`` (gamma initialised N(0, 0.02))."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.empty(heads, dim))
        self.beta = nn.Parameter(torch.zeros(heads, dim))
        nn.init.normal_(self.gamma, std=0.02)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[..., D] -> heads x [..., D]``."""
        out = x[..., None, :] * self.gamma + self.beta  # [..., heads, D]
        return out.unbind(dim=-2)


class RotaryEmbedding(nn.Module):
    """Rotary position code on the first ``dim`` features of ``[B, T, D]`` (adjacent pairs rotated).

    Frequencies ``base^(-2i/dim)`` for ``i < dim/2`` (a constant buffer, not saved); pair ``(2i, 2i+1)``
    at position ``t`` is rotated by the angle ``t * freq_i``. One instance is shared by every layer.
    The pair swap ``(a, b) -> (-b, a)`` is a product with a constant signed permutation matrix (exact,
    and free of reshapes, so an exported graph keeps a dynamic time axis).
    """

    def __init__(self, dim: int, base: float = POSITION_BASE) -> None:
        super().__init__()
        self.dim = dim
        # each frequency twice, once per feature of its pair: [f0, f0, f1, f1, ...]
        self.register_buffer("pair_freqs", rotary_frequencies(dim, base).repeat_interleave(2), persistent=False)
        swap = torch.zeros(dim, dim)
        even = torch.arange(0, dim, 2)
        swap[even + 1, even] = -1.0  # output 2i takes -x[2i + 1]
        swap[even, even + 1] = 1.0  # output 2i + 1 takes x[2i]
        self.register_buffer("pair_swap", swap, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, D] -> [B, T, D]`` (features ``>= dim`` pass unchanged)."""
        positions = torch.arange(x.shape[-2], device=x.device, dtype=self.pair_freqs.dtype)  # [T]
        angles = (positions[:, None] * self.pair_freqs).to(x.dtype)  # [T, dim]
        rotated, rest = x[..., : self.dim], x[..., self.dim :]
        swapped = torch.matmul(rotated, self.pair_swap.to(x.dtype))  # [B, T, dim]: pairs (a, b) -> (-b, a)
        return torch.cat((rotated * angles.cos() + swapped * angles.sin(), rest), dim=-1)


def rotary_frequencies(dim: int, base: float = POSITION_BASE) -> torch.Tensor:
    """The ``dim / 2`` rotary frequencies ``base^(-2i/dim)`` (float32)."""
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32)[: dim // 2] / dim))


class ScaledSinusoidalEmbedding(nn.Module):
    """Absolute sinusoidal position code ``[T, D] = [sin(t f), cos(t f)] * scale`` (one learned ``scale``)."""

    def __init__(self, dim: int, base: float = POSITION_BASE) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.register_buffer("inv_freq", rotary_frequencies(dim, base), persistent=False)

    def forward(self, num_frames: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """The code ``[D, num_frames]`` in ``like``'s dtype and device (channels first, to add to ``[B, D, T]``)."""
        positions = torch.arange(num_frames, device=like.device, dtype=self.inv_freq.dtype)  # [T]
        angles = positions[:, None] * self.inv_freq  # [T, D / 2]
        code = torch.cat((angles.sin(), angles.cos()), dim=-1) * self.scale  # [T, D]
        return code.transpose(0, 1).to(like.dtype)  # [D, T]


class MossFormerAttention(nn.Module):
    """One MossFormer block: gated attention unit with joint local/global single-head attention.

    ``x [B, T, dim] -> x + to_out((att_u * v) * sigmoid(att_v * u))`` where ``v, u`` come from
    ``to_hidden`` (``hidden_dim / 2`` each) and ``att_*`` is the quadratic attention within groups
    of ``group_size`` frames plus the linear attention over all frames, both with rotary-coded
    queries and keys from ``to_qk`` through :class:`OffsetScale` (4 heads). The first half of the
    channels is delayed by one frame first (token shift).
    """

    def __init__(self, dim: int, rotary: RotaryEmbedding, group_size: int = 256, query_key_dim: int = 128,
                 expansion_factor: float = 4.0, dropout: float = 0.1, conv_kernel_size: int = 17) -> None:
        super().__init__()
        hidden_dim = int(dim * expansion_factor)
        self.group_size = group_size
        self.rotary_pos_emb = rotary
        self.dropout = nn.Dropout(dropout)
        self.to_hidden = FFConvM(dim, hidden_dim, "scalenorm", dropout, conv_kernel_size)
        self.to_qk = FFConvM(dim, query_key_dim, "scalenorm", dropout, conv_kernel_size)
        self.qk_offset_scale = OffsetScale(query_key_dim, heads=4)
        self.to_out = FFConvM(hidden_dim // 2, dim, "scalenorm", dropout, conv_kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, dim] -> [B, T, dim]``."""
        shifted, passed = x.chunk(2, dim=-1)
        shifted = F.pad(shifted, (0, 0, 1, -1))  # [B, T, D/2]: frame t holds frame t - 1
        x_shift = torch.cat((shifted, passed), dim=-1)  # [B, T, dim]
        v, u = self.to_hidden(x_shift).chunk(2, dim=-1)  # 2 x [B, T, hidden / 2]
        quad_q, lin_q, quad_k, lin_k = (
            self.rotary_pos_emb(part) for part in self.qk_offset_scale(self.to_qk(x_shift))
        )  # 4 x [B, T, qk]
        att_v, att_u = self._attention(quad_q, lin_q, quad_k, lin_k, v, u)
        return x + self.to_out((att_u * v) * torch.sigmoid(att_v * u))

    def _attention(self, quad_q: torch.Tensor, lin_q: torch.Tensor, quad_k: torch.Tensor, lin_k: torch.Tensor,
                   v: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint attention of ``v`` and ``u``: local quadratic (grouped) + global linear; ``[B, T, E]`` each."""
        batch, num_frames = v.shape[0], v.shape[1]
        group = self.group_size
        # global linear attention: (k^T v) / T applied to q
        lin_kv = torch.matmul(lin_k.transpose(1, 2), v) / num_frames  # [B, qk, E]
        lin_ku = torch.matmul(lin_k.transpose(1, 2), u) / num_frames  # [B, qk, E]
        lin_v, lin_u = torch.matmul(lin_q, lin_kv), torch.matmul(lin_q, lin_ku)  # [B, T, E] each
        # local quadratic attention in groups of `group` frames; zero-padded frames get zero weight
        padding = (group - num_frames % group) % group
        num_groups = (num_frames + padding) // group
        grouped = [
            F.pad(part, (0, 0, 0, padding)).reshape(batch, num_groups, group, part.shape[-1])
            for part in (quad_q, quad_k, v, u)
        ]  # 4 x [B, G, group, *]
        q_groups, k_groups, v_groups, u_groups = grouped
        similarity = torch.matmul(q_groups, k_groups.transpose(-1, -2)) / group  # [B, G, group, group]
        weights = self.dropout(F.relu(similarity) ** 2)
        padded_frames = num_groups * group
        quad_v = torch.matmul(weights, v_groups).reshape(batch, padded_frames, v.shape[-1])[:, :num_frames]  # [B, T, E]
        quad_u = torch.matmul(weights, u_groups).reshape(batch, padded_frames, u.shape[-1])[:, :num_frames]  # [B, T, E]
        return quad_v + lin_v, quad_u + lin_u
