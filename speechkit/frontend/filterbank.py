"""Learned 1-D analysis/synthesis filterbank (the Conv-TasNet encoder and decoder).

Luo & Mesgarani, "Conv-TasNet: Surpassing Ideal Time-Frequency Magnitude Masking for Speech
Separation", IEEE/ACM TASLP 27(8), 2019, section II-B: the encoder is a strided Conv1d
``1 -> n_filters`` with kernel ``kernel_size`` and no bias; the decoder is the transposed
convolution ``n_filters -> 1``. Each holds one free parameter ``filterbank._filters
[n_filters, 1, kernel_size]`` (asteroid's name, so converted checkpoints map one to one).

A multichannel encoder (``in_channels = M > 1``) is the strided Conv1d ``M -> n_filters`` of the
multi-channel Conv-TasNet (R. Gu et al., "End-to-End Multi-Channel Speech Separation",
arXiv:1905.06286, 2019): its filters ``[n_filters, M, kernel_size]`` mix the microphones inside each
frame, so inter-channel time and level differences reach the mask estimator.

Framing follows :mod:`speechkit.frontend.framing`: offline the signal is ``causal_pad``-ed and the
synthesis ``causal_crop``-ped, so frame t covers samples ``[t*stride - (kernel_size - stride),
t*stride + stride)``; streaming uses ``analysis_step`` / ``overlap_add_step`` with explicit state
and reproduces the offline output delayed by ``kernel_size - stride`` samples. ``framing="asteroid"``
frames like asteroid's ``Encoder``/``Decoder`` instead (no padding, synthesis padded or cropped to
the input length; offline only), so converted asteroid models reproduce asteroid's output;
``framing="unpadded"`` is the same convention for other models that frame this way (MossFormer2).

The encoder output is linear by default (Conv-TasNet); ``activation="relu"`` rectifies it (the
non-negative representation of MossFormer2, S. Zhao et al., ICASSP 2024, and of the original
TasNet encoder), offline and streaming alike.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from . import framing
from .framing import check_framing

#: encoder output non-linearities: "linear" (none, Conv-TasNet) or "relu" (MossFormer2)
ENCODER_ACTIVATIONS = ("linear", "relu")


class FreeFilterbank(nn.Module):
    """``n_filters`` unconstrained learned filters of ``kernel_size`` taps over ``in_channels`` (Xavier-normal init)."""

    def __init__(self, n_filters: int, kernel_size: int, stride: int, in_channels: int = 1) -> None:
        super().__init__()
        if not 0 < stride <= kernel_size:
            raise ConfigError(f"filterbank stride must be in 1..kernel_size={kernel_size}, got {stride}")
        if in_channels < 1:
            raise ConfigError(f"filterbank in_channels must be positive, got {in_channels}")
        self.n_filters = n_filters
        self.kernel_size = kernel_size
        self.stride = stride
        self.in_channels = in_channels
        self._filters = nn.Parameter(torch.empty(n_filters, in_channels, kernel_size))
        nn.init.xavier_normal_(self._filters)

    def filters(self) -> torch.Tensor:
        """The filters ``[n_filters, in_channels, kernel_size]``."""
        return self._filters


class _LearnedFilterbankModule(nn.Module):
    """What the encoder and decoder share: one :class:`FreeFilterbank`, its ``kernel_size`` / ``stride``
    and the offline ``framing`` (:data:`speechkit.frontend.framing.FRAMINGS`; streaming is always causal)."""

    def __init__(
        self, n_filters: int, kernel_size: int, stride: int, in_channels: int = 1, framing: str = "causal"
    ) -> None:
        super().__init__()
        self.filterbank = FreeFilterbank(n_filters, kernel_size, stride, in_channels)
        self.framing = check_framing(framing)

    @property
    def kernel_size(self) -> int:
        """Filter length (window) in samples."""
        return self.filterbank.kernel_size

    @property
    def stride(self) -> int:
        """Hop between frames in samples."""
        return self.filterbank.stride


class LearnedEncoder(_LearnedFilterbankModule):
    """Waveform ``[..., T]`` (or ``[..., M, T]`` with ``in_channels = M > 1``) -> ``[..., N, n_frames]``.

    ``activation`` (:data:`ENCODER_ACTIVATIONS`) is applied to the filter outputs: ``"linear"``
    (default) leaves them as they are, ``"relu"`` keeps their positive part.
    """

    def __init__(
        self, n_filters: int, kernel_size: int, stride: int, in_channels: int = 1, framing: str = "causal",
        activation: str = "linear",
    ) -> None:
        super().__init__(n_filters, kernel_size, stride, in_channels, framing)
        if activation not in ENCODER_ACTIVATIONS:
            raise ConfigError(f"unknown encoder activation {activation!r}; use one of {', '.join(ENCODER_ACTIVATIONS)}")
        self.activation = activation

    def _activate(self, features: torch.Tensor) -> torch.Tensor:
        return F.relu(features) if self.activation == "relu" else features

    @property
    def in_channels(self) -> int:
        """Input channels the filters mix (1: a single-channel filterbank)."""
        return self.filterbank.in_channels

    def _channel_axes(self) -> int:
        return 1 if self.in_channels > 1 else 0

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``[..., (M,) T] -> [..., N, n_frames]``: ``causal_num_frames(T)`` frames with the causal framing,
        ``(T - kernel_size) // stride + 1`` with asteroid's."""
        channel_axes = self._channel_axes()
        if channel_axes and (waveform.dim() < 2 or waveform.shape[-2] != self.in_channels):
            raise ConfigError(
                f"this encoder mixes {self.in_channels} channels; got input of shape {tuple(waveform.shape)}"
            )
        leading = waveform.shape[: waveform.dim() - 1 - channel_axes]
        flat = waveform.reshape(-1, self.in_channels, waveform.shape[-1])  # [B', M, T]
        padded = framing.analysis_pad(flat, self.kernel_size, self.stride, self.framing)  # [B', M, >= (F-1)*stride + L]
        features = self._activate(F.conv1d(padded, self.filterbank.filters(), stride=self.stride))  # [B', N, F]
        return features.reshape(*leading, *features.shape[-2:])  # [..., N, F]

    def initial_state(self, batch_size: int, device: torch.device | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Zero analysis buffer ``[batch_size, (M,) kernel_size - stride]`` (streaming needs the causal framing)."""
        if self.framing != "causal":
            raise ConfigError(f"the {self.framing} framing is offline only; streaming needs framing='causal'")
        leading = (batch_size, self.in_channels) if self._channel_axes() else (batch_size,)
        shape = framing.analysis_state_shape(leading, self.kernel_size, self.stride)
        return torch.zeros(shape, device=device, dtype=dtype)

    def forward_step(self, block: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Streaming analysis of ``k`` hops.

        ``block [B, (M,) k * stride]`` and buffer ``[B, (M,) L - stride]`` -> frames ``[B, N, k]``, new buffer.
        """
        frames, new_state = framing.analysis_step(block, state)  # frames [B, (M,) L - stride + k * stride]
        if not self._channel_axes():
            frames = frames[:, None, :]  # [B, W] -> [B, 1, W]
        features = self._activate(F.conv1d(frames, self.filterbank.filters(), stride=self.stride))  # [B, N, k]
        return features, new_state


class LearnedDecoder(_LearnedFilterbankModule):
    """Learned representation ``[..., N, n_frames]`` -> waveform ``[..., T]`` by transposed conv."""

    def forward(self, features: torch.Tensor, length: int) -> torch.Tensor:
        """``[..., N, F] -> [..., length]``: overlap-add synthesis, cropped to ``length`` as the framing says."""
        leading = features.shape[:-2]
        flat = features.reshape(-1, *features.shape[-2:])  # [B', N, F]
        full = F.conv_transpose1d(flat, self.filterbank.filters(), stride=self.stride)  # [B', 1, (F-1)*stride + L]
        waveform = framing.synthesis_crop(full[:, 0], self.kernel_size, self.stride, length, self.framing)  # [B', length]
        return waveform.reshape(*leading, waveform.shape[-1])  # [..., length]

    def initial_state(self, leading: tuple[int, ...], device: torch.device | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Zero overlap-add buffer ``[*leading, kernel_size - stride]`` (streaming needs the causal framing)."""
        if self.framing != "causal":
            raise ConfigError(f"the {self.framing} framing is offline only; streaming needs framing='causal'")
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
