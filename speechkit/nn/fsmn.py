"""Gated dilated FSMN: MossFormer2's "RNN-free recurrent" module.

S. Zhao et al., "MossFormer2: Combining Transformer and RNN-Free Recurrent Network for Enhanced
Time-Domain Monaural Speech Separation", ICASSP 2024 (arXiv:2312.11825), section 2: a feedforward
sequential memory network (FSMN) whose memory is a dilated dense network of depthwise convolutions
along time, gated by a second branch and wrapped in bottleneck 1x1 convolutions.

Sequences are ``[B, T, D]``. Submodule names mirror the official ClearerVoice release
(``conv1.0``, ``norm1``, ``gated_fsmn.{to_u,to_v}``, ``gated_fsmn.fsmn.{linear,project}``,
``gated_fsmn.fsmn.conv.{conv1,norm1,prelu1,conv2,...}``, ``norm2``, ``conv2``) and the memory
convolutions keep its ``Conv2d`` weight shape ``[C, layer + 1, 2 * lorder - 1, 1]``.

Not causal: the memory kernels are symmetric (``lorder - 1`` frames of look-ahead per layer, times
the dilation) and the instance norms take their statistics over the whole segment.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .mossformer import FFConvM


class DilatedDenseNet(nn.Module):
    """Dense stack of ``depth`` depthwise time convolutions with dilations 1, 2, 4, ...

    Layer ``i`` reads the concatenation ``[out_{i-1}, ..., out_0, x]`` (``C * (i + 1)`` channels)
    through a grouped ``Conv2d`` with ``C`` groups (each output channel sees ``i + 1`` adjacent
    input channels of that concatenation), kernel ``(2 * lorder - 1, 1)`` and symmetric zero
    padding, then ``InstanceNorm2d`` (affine) and a per-channel ``PReLU``. Returns the last layer's
    output.
    """

    def __init__(self, channels: int, depth: int = 2, lorder: int = 20) -> None:
        super().__init__()
        self.depth = depth
        self.kernel_size = 2 * lorder - 1
        self.paddings = []
        for index in range(depth):
            dilation = 2**index
            self.paddings.append((self.kernel_size - 1) * dilation // 2)  # symmetric "same" padding
            setattr(self, f"conv{index + 1}", nn.Conv2d(
                channels * (index + 1), channels, (self.kernel_size, 1), dilation=(dilation, 1), groups=channels,
                bias=False,
            ))
            setattr(self, f"norm{index + 1}", nn.InstanceNorm2d(channels, affine=True))
            setattr(self, f"prelu{index + 1}", nn.PReLU(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, 1] -> [B, C, T, 1]``."""
        skip = x
        out = x
        for index in range(self.depth):
            padded = F.pad(skip, (0, 0, self.paddings[index], self.paddings[index]))  # [B, C(i+1), T + 2p, 1]
            out = getattr(self, f"conv{index + 1}")(padded)  # [B, C, T, 1]
            out = getattr(self, f"prelu{index + 1}")(getattr(self, f"norm{index + 1}")(out))
            skip = torch.cat((out, skip), dim=1)  # [B, C(i+2), T, 1]
        return out


class UniDeepFsmnDilated(nn.Module):
    """FSMN memory: ``x + memory(project(relu(linear(x))))`` on ``[B, T, D]``."""

    def __init__(self, dim: int, hidden_size: int, lorder: int = 20, depth: int = 2) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, hidden_size)
        self.project = nn.Linear(hidden_size, dim, bias=False)
        self.conv = DilatedDenseNet(dim, depth, lorder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, D] -> [B, T, D]``."""
        projected = self.project(F.relu(self.linear(x)))  # [B, T, D]
        memory = self.conv(projected.transpose(1, 2)[..., None])  # [B, D, T, 1]
        return x + memory[..., 0].transpose(1, 2)  # [B, T, D]


class GatedFSMN(nn.Module):
    """``v * fsmn(u) + x`` with ``u = to_u(x)``, ``v = to_v(x)`` (:class:`FFConvM` with LayerNorm)."""

    def __init__(self, dim: int, lorder: int = 20, depth: int = 2, dropout: float = 0.1,
                 conv_kernel_size: int = 17) -> None:
        super().__init__()
        self.to_u = FFConvM(dim, dim, "layernorm", dropout, conv_kernel_size)
        self.to_v = FFConvM(dim, dim, "layernorm", dropout, conv_kernel_size)
        self.fsmn = UniDeepFsmnDilated(dim, dim, lorder, depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, D] -> [B, T, D]``."""
        return self.to_v(x) * self.fsmn(self.to_u(x)) + x


class GatedFSMNBlock(nn.Module):
    """The recurrent module of one MossFormer2 layer: bottleneck, gated FSMN, expansion, residual.

    ``x [B, T, dim]``: 1x1 conv ``dim -> inner`` + PReLU, LayerNorm, :class:`GatedFSMN`, LayerNorm,
    1x1 conv ``inner -> dim``, plus ``x``.
    """

    def __init__(self, dim: int, inner_channels: int = 256, lorder: int = 20, depth: int = 2,
                 dropout: float = 0.1, conv_kernel_size: int = 17) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv1d(dim, inner_channels, 1), nn.PReLU())
        self.norm1 = nn.LayerNorm(inner_channels)
        self.gated_fsmn = GatedFSMN(inner_channels, lorder, depth, dropout, conv_kernel_size)
        self.norm2 = nn.LayerNorm(inner_channels)
        self.conv2 = nn.Conv1d(inner_channels, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, dim] -> [B, T, dim]``."""
        hidden = self.conv1(x.transpose(1, 2)).transpose(1, 2)  # [B, T, inner]
        hidden = self.norm2(self.gated_fsmn(self.norm1(hidden)))  # [B, T, inner]
        return self.conv2(hidden.transpose(1, 2)).transpose(1, 2) + x  # [B, T, dim]
