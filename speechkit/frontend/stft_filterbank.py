"""The causal STFT as a fixed encoder/decoder pair with the learned filterbank's interface.

A mask network written for the learned basis of :mod:`speechkit.frontend.filterbank` (Conv-TasNet)
runs unchanged on the STFT: the encoder maps a waveform to stacked real/imaginary bins
``[..., 2F, n_frames]`` (real rows first), the decoder maps such a (masked) spectrum back to a
waveform. Replacing the learned 2 ms basis by a fixed STFT at a longer hop is the TasNet variant
studied by J. Heitkaemper, D. Jakobeit, C. Boeddeker, L. Drude and R. Haeb-Umbach, "Demystifying
TasNet: A Dissecting Approach", ICASSP 2020.

The kernels are the windowed DFT and its dual-window inverse of :mod:`speechkit.frontend.stft`
(causal padding): offline this is exactly ``STFT(padding="causal", backend="conv")`` and
``ISTFT``; streaming uses the same :mod:`speechkit.frontend.framing` steps as the learned
filterbank, so any whole number of hops per step gives the offline samples delayed by
``win_length - hop_length``. The kernels are non-persistent buffers: nothing reaches checkpoints.

The mask estimator reads :meth:`STFTEncoder.mask_input`, the power-law compressed magnitude
``|X| ** exponent`` ``[..., F, n_frames]``; a real mask ``[..., F, n_frames]`` is spread over the
real and imaginary rows by :meth:`STFTEncoder.expand_mask`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from . import framing
from .stft import STFTConfig, analysis_dft_kernel, synthesis_dft_kernel, steady_window_sum_square

#: floor added to the squared magnitude before compression (keeps the gradient finite at zero)
MAGNITUDE_FLOOR = 1e-10


class _CausalDFTCoder(nn.Module):
    """What :class:`STFTEncoder` and :class:`STFTDecoder` share: the causal STFT config and the
    learned filterbank's size interface (``kernel_size``, ``stride``)."""

    def __init__(self, n_fft: int, hop_length: int, window: str) -> None:
        super().__init__()
        self.config = STFTConfig(n_fft=n_fft, hop_length=hop_length, window=window, padding="causal", backend="conv")
        self.config.check_invertible()

    @property
    def kernel_size(self) -> int:
        """Window (frame) length in samples."""
        return self.config.frame_length

    @property
    def stride(self) -> int:
        """Hop between frames in samples."""
        return self.config.hop_length


class STFTEncoder(_CausalDFTCoder):
    """Waveform ``[..., T]`` -> stacked causal STFT ``[..., 2F, n_frames]`` (``F = n_fft // 2 + 1``).

    Args:
        n_fft: DFT size and window length in samples.
        hop_length: samples between frames.
        window: analysis window (see :data:`speechkit.frontend.stft.WINDOWS`).
        exponent: power-law compression of the magnitude given to the mask estimator.
    """

    def __init__(self, n_fft: int, hop_length: int, window: str = "hann", exponent: float = 0.3) -> None:
        if not 0.0 < exponent <= 1.0:
            raise ConfigError(f"magnitude exponent must be in (0, 1], got {exponent}")
        super().__init__(n_fft, hop_length, window)
        self.exponent = float(exponent)
        kernel = analysis_dft_kernel(n_fft, self.config.window_tensor(torch.float64))  # [2F, 1, n_fft]
        self.register_buffer("kernel", kernel.float(), persistent=False)

    @property
    def num_freqs(self) -> int:
        """Frequency bins ``F``."""
        return self.config.num_freqs

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``[..., T] -> [..., 2F, causal_num_frames(T)]``."""
        leading = waveform.shape[:-1]
        flat = waveform.reshape(-1, 1, waveform.shape[-1])  # [B', 1, T]
        padded = framing.causal_pad(flat, self.kernel_size, self.stride)  # [B', 1, (N-1)*hop + win]
        spec = F.conv1d(padded, self.kernel, stride=self.stride)  # [B', 2F, N]
        return spec.reshape(*leading, *spec.shape[-2:])  # [..., 2F, N]

    def mask_input(self, spec: torch.Tensor) -> torch.Tensor:
        """Compressed magnitude ``[..., F, N]`` of a stacked spectrum ``[..., 2F, N]``."""
        real, imag = spec.split(self.num_freqs, dim=-2)  # [..., F, N] each
        power = real.square() + imag.square() + MAGNITUDE_FLOOR  # [..., F, N]
        return power.pow(0.5 * self.exponent)

    def expand_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """A real mask ``[..., F, N]`` for both halves of the stacked spectrum: ``[..., 2F, N]``."""
        return torch.cat([mask, mask], dim=-2)

    def initial_state(self, batch_size: int, device: torch.device | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Zero analysis buffer ``[batch_size, n_fft - hop_length]``."""
        shape = framing.analysis_state_shape((batch_size,), self.kernel_size, self.stride)
        return torch.zeros(shape, device=device, dtype=dtype)

    def forward_step(self, block: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``block [B, k * hop]`` and buffer ``[B, n_fft - hop]`` -> frames ``[B, 2F, k]``, new buffer."""
        frames, new_state = framing.analysis_step(block, state)  # [B, n_fft - hop + k * hop]
        spec = F.conv1d(frames[:, None, :], self.kernel, stride=self.stride)  # [B, 2F, k]
        return spec, new_state


class STFTDecoder(_CausalDFTCoder):
    """Stacked causal STFT ``[..., 2F, n_frames]`` -> waveform ``[..., T]`` (dual-window overlap-add)."""

    def __init__(self, n_fft: int, hop_length: int, window: str = "hann") -> None:
        super().__init__(n_fft, hop_length, window)
        analysis_window = self.config.window_tensor(torch.float64)  # [n_fft]
        envelope = steady_window_sum_square(analysis_window, hop_length)  # [hop]
        repeats = -(-n_fft // hop_length)
        synthesis_window = analysis_window / envelope.repeat(repeats)[:n_fft]  # [n_fft]
        self.register_buffer("kernel", synthesis_dft_kernel(n_fft, synthesis_window).float(), persistent=False)

    def forward(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """``[..., 2F, N] -> [..., length]``, cropped as :func:`framing.causal_crop`."""
        leading = spec.shape[:-2]
        flat = spec.reshape(-1, *spec.shape[-2:])  # [B', 2F, N]
        full = F.conv_transpose1d(flat, self.kernel, stride=self.stride)  # [B', 1, (N-1)*hop + n_fft]
        waveform = framing.causal_crop(full[:, 0], self.kernel_size, self.stride, length)  # [B', length]
        return waveform.reshape(*leading, waveform.shape[-1])  # [..., length]

    def initial_state(self, leading: tuple[int, ...], device: torch.device | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Zero overlap-add buffer ``[*leading, n_fft - hop_length]``."""
        shape = framing.synthesis_state_shape(leading, self.kernel_size, self.stride)
        return torch.zeros(shape, device=device, dtype=dtype)

    def forward_step(self, frames: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``frames [..., 2F, k]`` and buffer ``[..., n_fft - hop]`` -> ``[..., k * hop]`` final samples, new buffer."""
        leading = frames.shape[:-2]
        num_frames = frames.shape[-1]
        flat = frames.reshape(-1, *frames.shape[-2:])  # [B', 2F, k]
        synthesised = F.conv_transpose1d(flat, self.kernel, stride=self.stride)  # [B', 1, (k-1)*hop + n_fft]
        synthesised = synthesised.reshape(*leading, synthesised.shape[-1])  # [..., (k-1)*hop + n_fft]
        return framing.overlap_add_step(synthesised, state, num_frames * self.stride)
