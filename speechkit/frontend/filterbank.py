"""Learned 1-D analysis/synthesis filterbank (the Conv-TasNet encoder and decoder).

Luo & Mesgarani, "Conv-TasNet: Surpassing Ideal Time-Frequency Magnitude Masking for Speech
Separation", IEEE/ACM TASLP 27(8), 2019, section II-B: the encoder is a strided Conv1d
``1 -> n_filters`` with kernel ``kernel_size`` and no bias; the decoder is the transposed
convolution ``n_filters -> 1``. Each holds one free parameter ``filterbank._filters
[n_filters, 1, kernel_size]`` (asteroid's name, so converted checkpoints map one to one).

Framing follows :mod:`speechkit.frontend.framing`: offline the signal is ``causal_pad``-ed and the
synthesis ``causal_crop``-ped, so frame t covers samples ``[t*stride - (kernel_size - stride),
t*stride + stride)``; streaming uses ``analysis_step`` / ``overlap_add_step`` with explicit state
and reproduces the offline output delayed by ``kernel_size - stride`` samples.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from . import framing


class FreeFilterbank(nn.Module):
    """``n_filters`` unconstrained learned filters of ``kernel_size`` taps (Xavier-normal init)."""

    def __init__(self, n_filters: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        if not 0 < stride <= kernel_size:
            raise ConfigError(f"filterbank stride must be in 1..kernel_size={kernel_size}, got {stride}")
        self.n_filters = n_filters
        self.kernel_size = kernel_size
        self.stride = stride
        self._filters = nn.Parameter(torch.empty(n_filters, 1, kernel_size))
        nn.init.xavier_normal_(self._filters)

    def filters(self) -> torch.Tensor:
        """The filters ``[n_filters, 1, kernel_size]``."""
        return self._filters


class _LearnedFilterbankModule(nn.Module):
    """What the encoder and decoder share: one :class:`FreeFilterbank` and its ``kernel_size`` / ``stride``."""

    def __init__(self, n_filters: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.filterbank = FreeFilterbank(n_filters, kernel_size, stride)

    @property
    def kernel_size(self) -> int:
        """Filter length (window) in samples."""
        return self.filterbank.kernel_size

    @property
    def stride(self) -> int:
        """Hop between frames in samples."""
        return self.filterbank.stride


class LearnedEncoder(_LearnedFilterbankModule):
    """Waveform ``[..., T]`` -> learned representation ``[..., N, n_frames]``."""

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``[..., T] -> [..., N, causal_num_frames(T)]`` with the causal framing convention."""
        leading = waveform.shape[:-1]
        flat = waveform.reshape(-1, 1, waveform.shape[-1])  # [B', 1, T]
        padded = framing.causal_pad(flat, self.kernel_size, self.stride)  # [B', 1, (F-1)*stride + L]
        features = F.conv1d(padded, self.filterbank.filters(), stride=self.stride)  # [B', N, F]
        return features.reshape(*leading, *features.shape[-2:])  # [..., N, F]

    def initial_state(self, batch_size: int, device: torch.device | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Zero analysis buffer ``[batch_size, kernel_size - stride]``."""
        shape = framing.analysis_state_shape((batch_size,), self.kernel_size, self.stride)
        return torch.zeros(shape, device=device, dtype=dtype)

    def forward_step(self, block: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Streaming analysis of ``k`` hops.

        ``block [B, k * stride]`` and buffer ``[B, L - stride]`` -> frames ``[B, N, k]``, new buffer.
        """
        frames, new_state = framing.analysis_step(block, state)  # frames [B, L - stride + k * stride]
        features = F.conv1d(frames[:, None, :], self.filterbank.filters(), stride=self.stride)  # [B, N, k]
        return features, new_state


class LearnedDecoder(_LearnedFilterbankModule):
    """Learned representation ``[..., N, n_frames]`` -> waveform ``[..., T]`` by transposed conv."""

    def forward(self, features: torch.Tensor, length: int) -> torch.Tensor:
        """``[..., N, F] -> [..., length]``: overlap-add synthesis, cropped as ``causal_crop``."""
        leading = features.shape[:-2]
        flat = features.reshape(-1, *features.shape[-2:])  # [B', N, F]
        full = F.conv_transpose1d(flat, self.filterbank.filters(), stride=self.stride)  # [B', 1, (F-1)*stride + L]
        waveform = framing.causal_crop(full[:, 0], self.kernel_size, self.stride, length)  # [B', length]
        return waveform.reshape(*leading, waveform.shape[-1])  # [..., length]

    def initial_state(self, leading: tuple[int, ...], device: torch.device | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Zero overlap-add buffer ``[*leading, kernel_size - stride]``."""
        shape = framing.synthesis_state_shape(leading, self.kernel_size, self.stride)
        return torch.zeros(shape, device=device, dtype=dtype)

    def forward_step(self, frames: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Streaming synthesis of ``k`` frames.

        ``frames [..., N, k]`` and buffer ``[..., L - stride]`` -> the ``k * stride`` samples that
        are now final ``[..., k * stride]``, new buffer.
        """
        leading = frames.shape[:-2]
        num_frames = frames.shape[-1]
        flat = frames.reshape(-1, *frames.shape[-2:])  # [B', N, k]
        synthesised = F.conv_transpose1d(flat, self.filterbank.filters(), stride=self.stride)  # [B', 1, (k-1)*stride + L]
        synthesised = synthesised.reshape(*leading, synthesised.shape[-1])  # [..., (k-1)*stride + L]
        return framing.overlap_add_step(synthesised, state, num_frames * self.stride)
