"""Short-time Fourier transform and its inverse on real tensors, offline and streaming.

Spectra are real tensors with the real and imaginary parts stacked in a size-2 axis::

    spec = STFT(512, 128)(x)             # x [B, C, T] -> spec [B, C, 2, F, N], F = n_fft // 2 + 1
    y = ISTFT(512, 128)(spec, length=T)  # -> [B, C, T]

Two interchangeable backends compute the same numbers (to float32 rounding):

* ``backend="torch"``: :func:`torch.stft` / :func:`torch.istft` (complex tensors exist only
  inside the call; the result is converted to the stacked real layout). Not ONNX-exportable.
* ``backend="conv"``: a real :func:`~torch.nn.functional.conv1d` whose fixed kernels are the
  window-weighted DFT basis, and a :func:`~torch.nn.functional.conv_transpose1d` with the inverse
  basis. Only real tensor ops: exports to ONNX (legacy exporter, opset 17, dynamic time axis).

Two padding conventions:

* ``padding="center"`` reproduces ``torch.stft(center=True)`` / ``torch.istft(center=True)``:
  the signal is padded by ``n_fft // 2`` on both sides (``center_pad_mode="reflect"`` by default,
  torch's default and what the official checkpoints of centred models use; ``"constant"`` pads
  zeros and also works for signals shorter than ``n_fft // 2 + 1``), the window of ``win_length``
  samples sits in the middle of the ``n_fft`` frame, ``N = 1 + T // hop_length`` frames, and the
  inverse divides by the exact window-sum-square envelope (edges included).
* ``padding="causal"`` follows :mod:`speechkit.frontend.framing`: a frame is the ``win_length``
  most recent samples (left pad ``win_length - hop_length`` zeros), zero-padded on the right to
  ``n_fft`` for the DFT, ``N = causal_num_frames(T, win_length, hop_length)``. The inverse uses
  the dual synthesis window ``window / steady_window_sum_square``, so :meth:`STFT.forward_step` /
  :meth:`ISTFT.forward_step` stream one hop at a time with explicit state tensors and the stream
  equals the offline output delayed by ``stream_delay = win_length - hop_length`` samples.

Windows are periodic (``torch.hann_window(periodic=True)`` etc.). ``"sqrt_hann"`` is the square
root of the periodic Hann window (a common analysis/synthesis pair for 50 % overlap).

The DFT kernels are built once at construction (:func:`analysis_dft_kernel`,
:func:`synthesis_dft_kernel`) and stored as non-persistent buffers: they move with ``.to()`` but
never appear in ``state_dict`` (so never in checkpoints).
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AudioError, ConfigError
from .framing import (
    analysis_step,
    analysis_state_shape,
    causal_crop,
    causal_pad,
    overlap_add_step,
    synthesis_state_shape,
)
from .stft_config import (  # noqa: F401 (configuration, windows and kernels, re-exported)
    _NOLA_TOLERANCE,
    BACKENDS,
    CENTER_PAD_MODES,
    PADDINGS,
    WINDOWS,
    STFTConfig,
    analysis_dft_kernel,
    make_window,
    steady_window_sum_square,
    synthesis_dft_kernel,
)

def _config_from(
    n_fft: int | STFTConfig,
    hop_length: int | None,
    win_length: int | None,
    window: str,
    padding: str,
    backend: str,
    center_pad_mode: str,
) -> STFTConfig:
    if isinstance(n_fft, STFTConfig):
        return n_fft
    if hop_length is None:
        hop_length = (win_length or n_fft) // 4
    return STFTConfig(
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=win_length,
        window=window,
        padding=padding,
        backend=backend,
        center_pad_mode=center_pad_mode,
    )


def _check_signal(x: torch.Tensor, config: STFTConfig) -> None:
    if torch.jit.is_tracing():  # shapes are symbolic while exporting
        return
    if x.dim() != 3:
        raise AudioError(f"STFT expects a signal of shape [batch, channels, time], got {tuple(x.shape)}")
    if config.padding != "center" or config.center_pad_mode != "reflect":
        return
    if x.shape[-1] <= config.n_fft // 2:
        raise AudioError(
            f"a signal of {x.shape[-1]} samples is too short for reflect padding with n_fft={config.n_fft}; "
            "use center_pad_mode='constant' or a longer signal"
        )


def _check_spec(spec: torch.Tensor, config: STFTConfig) -> None:
    if torch.jit.is_tracing():  # shapes are symbolic while exporting; checked at run time instead
        return
    if spec.dim() != 5 or spec.shape[2] != 2 or spec.shape[3] != config.num_freqs:
        raise AudioError(
            f"ISTFT expects a spectrum of shape [batch, channels, 2, {config.num_freqs}, frames], "
            f"got {tuple(spec.shape)}"
        )


# --------------------------------------------------------------------------- modules
class _STFTModule(nn.Module):
    """What :class:`STFT` and :class:`ISTFT` share: the config and its derived sizes."""

    def __init__(self, config: STFTConfig) -> None:
        super().__init__()
        self.config = config

    @property
    def n_fft(self) -> int:
        """DFT size."""
        return self.config.n_fft

    @property
    def hop_length(self) -> int:
        """Samples between frames (and per streaming step)."""
        return self.config.hop_length

    @property
    def win_length(self) -> int:
        """Window length (the frame length in causal mode)."""
        return self.config.frame_length

    @property
    def num_freqs(self) -> int:
        """Frequency bins ``F``."""
        return self.config.num_freqs

    @property
    def stream_delay(self) -> int:
        """Delay of a stream (STFT then ISTFT steps) against the offline causal output."""
        return self.config.stream_delay

    def num_frames(self, length: int) -> int:
        """Frames ``N`` the STFT produces for a signal of ``length`` samples."""
        return self.config.num_frames(length)

    def set_backend(self, backend: str) -> None:
        """Compute with ``backend`` (``"torch"`` or ``"conv"``) from now on; both kernels are always built."""
        self.config = dataclasses.replace(self.config, backend=backend)

    def extra_repr(self) -> str:
        fields = dataclasses.fields(self.config)
        return ", ".join(f"{field.name}={getattr(self.config, field.name)!r}" for field in fields)

    def _require_causal(self) -> None:
        if self.config.padding != "causal":
            raise ConfigError(f"streaming needs {type(self).__name__}(padding='causal')")


# --------------------------------------------------------------------------- analysis
class STFT(_STFTModule):
    """Short-time Fourier transform: ``x [B, C, T] -> spec [B, C, 2, F, N]``.

    Args:
        n_fft: DFT size (or a complete :class:`STFTConfig`, then the other arguments are ignored).
        hop_length: samples between frames (default ``win_length // 4``).
        win_length: window length (default ``n_fft``).
        window: one of :data:`WINDOWS`, periodic.
        padding: ``"center"`` (like ``torch.stft(center=True)``) or ``"causal"`` (framing.py).
        backend: ``"torch"`` or ``"conv"`` (ONNX-exportable, real ops only).
        center_pad_mode: ``"reflect"`` (torch's default) or ``"constant"``, for centred padding.

    In causal mode, :meth:`initial_state` and :meth:`forward_step` compute one frame per hop.
    """

    def __init__(
        self,
        n_fft: int | STFTConfig,
        hop_length: int | None = None,
        win_length: int | None = None,
        window: str = "hann",
        padding: str = "center",
        backend: str = "torch",
        center_pad_mode: str = "reflect",
    ) -> None:
        config = _config_from(n_fft, hop_length, win_length, window, padding, backend, center_pad_mode)
        super().__init__(config)
        kernel_window = self.config.kernel_window(torch.float64)
        self.register_buffer("window", kernel_window.float(), persistent=False)  # [K]
        self.register_buffer(
            "kernel", analysis_dft_kernel(self.config.n_fft, kernel_window).float(), persistent=False
        )  # [2F, 1, K]

    # ----------------------------------------------------------------- offline
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, T] -> spec [B, C, 2, F, N]``."""
        _check_signal(x, self.config)
        batch, channels = x.shape[0], x.shape[1]
        flat = x.reshape(batch * channels, x.shape[-1])  # [B*C, T]
        padded = self._pad(flat)  # [B*C, L]
        if self.config.backend == "conv":
            spec = F.conv1d(padded.unsqueeze(1), self.kernel, stride=self.config.hop_length)  # [B*C, 2F, N]
        else:
            spec = self._torch_stft(padded)  # [B*C, 2F, N]
        return spec.reshape(batch, channels, 2, self.config.num_freqs, spec.shape[-1])  # [B, C, 2, F, N]

    def _pad(self, flat: torch.Tensor) -> torch.Tensor:
        config = self.config
        if config.padding == "causal":
            return causal_pad(flat, config.frame_length, config.hop_length)  # [B*C, (N-1)*hop + win]
        half = config.n_fft // 2
        if config.center_pad_mode == "reflect":
            return F.pad(flat.unsqueeze(1), (half, half), mode="reflect").squeeze(1)  # [B*C, T + 2*half]
        return F.pad(flat, (half, half))  # [B*C, T + 2*half]

    def _torch_stft(self, padded: torch.Tensor) -> torch.Tensor:
        config = self.config
        window = self.window
        if config.padding == "causal" and config.n_fft > config.frame_length:
            # frame of win_length samples, zero-padded on the right to n_fft
            padded = F.pad(padded, (0, config.n_fft - config.frame_length))  # [B*C, (N-1)*hop + n_fft]
            window = F.pad(window, (0, config.n_fft - config.frame_length))  # [n_fft]
        spec = torch.stft(
            padded,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            win_length=config.n_fft,
            window=window,
            center=False,
            return_complex=True,
        )  # [B*C, F, N] complex
        return torch.cat([spec.real, spec.imag], dim=1)  # [B*C, 2F, N]

    # ----------------------------------------------------------------- streaming
    def initial_state(self, batch_size: int = 1, num_channels: int = 1) -> torch.Tensor:
        """Zero analysis state ``[B, C, win_length - hop_length]`` (causal padding only)."""
        self._require_causal()
        config = self.config
        shape = analysis_state_shape((batch_size, num_channels), config.frame_length, config.hop_length)
        return torch.zeros(shape, dtype=self.kernel.dtype, device=self.kernel.device)

    def forward_step(self, block: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One hop: ``block [B, C, hop]`` -> ``spec [B, C, 2, F, 1]`` and the new state.

        Equals frame ``t`` of the offline causal STFT when ``block`` is the ``t``-th hop of input.
        """
        self._require_causal()
        frame, state = analysis_step(block, state)  # [B, C, win]
        if self.config.backend == "conv":
            spec = torch.matmul(self.kernel.squeeze(1), frame.unsqueeze(-1))  # [B, C, 2F, 1]
        else:
            spectrum = torch.fft.rfft(frame * self.window, n=self.config.n_fft)  # [B, C, F] complex
            spec = torch.cat([spectrum.real, spectrum.imag], dim=-1).unsqueeze(-1)  # [B, C, 2F, 1]
        spec = spec.reshape(block.shape[0], block.shape[1], 2, self.config.num_freqs, 1)  # [B, C, 2, F, 1]
        return spec, state


# --------------------------------------------------------------------------- synthesis
class ISTFT(_STFTModule):
    """Inverse STFT: ``spec [B, C, 2, F, N] -> x [B, C, T]``, the inverse of :class:`STFT`.

    Same arguments as :class:`STFT`. ``forward(spec, length)`` returns ``length`` samples (by
    default :meth:`default_length`; where no window reaches, the output is zero). It is the
    least-squares inverse (window-sum-square normalised), so ``ISTFT(STFT(x), T) == x`` for any
    window satisfying NOLA (checked when the module is built).

    In causal mode, :meth:`initial_state` and :meth:`forward_step` synthesise one hop per frame.
    """

    def __init__(
        self,
        n_fft: int | STFTConfig,
        hop_length: int | None = None,
        win_length: int | None = None,
        window: str = "hann",
        padding: str = "center",
        backend: str = "torch",
        center_pad_mode: str = "reflect",
    ) -> None:
        config = _config_from(n_fft, hop_length, win_length, window, padding, backend, center_pad_mode)
        config.check_invertible()
        super().__init__(config)
        kernel_window = config.kernel_window(torch.float64)  # [K]
        if config.padding == "causal":
            # dual window: every output sample sees the steady envelope, so fold it into the window
            envelope = steady_window_sum_square(kernel_window, config.hop_length)  # [hop]
            repeats = math.ceil(config.kernel_length / config.hop_length)
            synthesis_window = kernel_window / envelope.repeat(repeats)[: config.kernel_length]  # [K]
        else:
            synthesis_window = kernel_window
        self.register_buffer("window", kernel_window.float(), persistent=False)  # [K]
        self.register_buffer("synthesis_window", synthesis_window.float(), persistent=False)  # [K]
        self.register_buffer(
            "kernel", synthesis_dft_kernel(config.n_fft, synthesis_window).float(), persistent=False
        )  # [2F, 1, K]
        self.register_buffer(
            "window_square_kernel", (kernel_window**2).float().reshape(1, 1, -1), persistent=False
        )  # [1, 1, K]

    def default_length(self, num_frames: int) -> int:
        """Samples :meth:`forward` returns for ``num_frames`` frames when ``length`` is None.

        Centred: ``(N - 1) * hop_length + n_fft % 2`` (as :func:`torch.istft`). Causal:
        ``N * hop_length - (win_length - hop_length)``, the samples all of whose frames are present.
        """
        config = self.config
        if config.padding == "center":
            return (num_frames - 1) * config.hop_length + config.n_fft - 2 * (config.n_fft // 2)
        return num_frames * config.hop_length - (config.frame_length - config.hop_length)

    # ----------------------------------------------------------------- offline
    def forward(self, spec: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """``spec [B, C, 2, F, N]`` -> ``x [B, C, length]``."""
        _check_spec(spec, self.config)
        config = self.config
        batch, channels, num_frames = spec.shape[0], spec.shape[1], spec.shape[-1]
        flat = spec.reshape(batch * channels, 2 * config.num_freqs, num_frames)  # [B*C, 2F, N]
        if config.padding == "center" and config.backend == "torch":
            signal = self._torch_istft(flat, length)  # [B*C, T]
        else:
            signal = self._overlap_add(flat, length)  # [B*C, T]
        return signal.reshape(batch, channels, signal.shape[-1])  # [B, C, T]

    def _torch_istft(self, flat: torch.Tensor, length: int | None) -> torch.Tensor:
        config = self.config
        complex_spec = torch.complex(flat[:, : config.num_freqs], flat[:, config.num_freqs :])  # [B*C, F, N]
        # samples (after the n_fft // 2 pad) that some window touches; torch.istft rejects a
        # ``length`` reaching past them (zero envelope), the conv backend returns zeros there
        left = (config.n_fft - config.frame_length) // 2
        covered = (flat.shape[-1] - 1) * config.hop_length + left + config.frame_length - config.n_fft // 2
        signal = torch.istft(
            complex_spec,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            win_length=config.n_fft,
            window=self.window,
            center=True,
            length=None if length is None else min(length, covered),
        )  # [B*C, T]
        if length is not None and length > covered:
            signal = F.pad(signal, (0, length - covered))  # [B*C, length]
        return signal

    def _frames_overlap_add(self, flat: torch.Tensor) -> torch.Tensor:
        """Synthesise every frame and overlap-add: ``[B*C, 2F, N] -> [B*C, (N-1)*hop + K]``."""
        config = self.config
        if config.backend == "conv":
            return F.conv_transpose1d(flat, self.kernel, stride=config.hop_length).squeeze(1)  # [B*C, L]
        complex_spec = torch.complex(flat[:, : config.num_freqs], flat[:, config.num_freqs :])  # [B*C, F, N]
        frames = torch.fft.irfft(complex_spec, n=config.n_fft, dim=1)  # [B*C, n_fft, N]
        frames = frames[:, : config.kernel_length]  # [B*C, K, N]
        frames = frames * self.synthesis_window[:, None]  # [B*C, K, N]
        output_length = (flat.shape[-1] - 1) * config.hop_length + config.kernel_length
        return F.fold(
            frames,
            output_size=(1, output_length),
            kernel_size=(1, config.kernel_length),
            stride=(1, config.hop_length),
        ).reshape(flat.shape[0], output_length)  # [B*C, L]

    def _overlap_add(self, flat: torch.Tensor, length: int | None) -> torch.Tensor:
        config = self.config
        full = self._frames_overlap_add(flat)  # [B*C, (N-1)*hop + K]
        if config.padding == "causal":
            if length is None:
                length = self.default_length(flat.shape[-1])
            available = full.shape[-1] - (config.frame_length - config.hop_length)
            if not torch.jit.is_tracing() and length > available:
                full = F.pad(full, (0, length - available))  # [B*C, win - hop + length]
            return causal_crop(full, config.frame_length, config.hop_length, length)  # [B*C, length]
        # centred: divide by the exact window-sum-square envelope, then drop the n_fft // 2 pad
        half = config.n_fft // 2
        ones = torch.ones_like(flat[:1, :1, :])  # [1, 1, N]
        envelope = F.conv_transpose1d(ones, self.window_square_kernel, stride=config.hop_length)  # [1, 1, L]
        envelope = envelope.reshape(-1)  # [L]
        if length is None:
            end = full.shape[-1] - half
        else:
            end = half + length
        signal = full[:, half:end]  # [B*C, <= length]
        envelope = envelope[half:end]  # [<= length]
        envelope = torch.where(envelope > _NOLA_TOLERANCE, envelope, torch.ones_like(envelope))
        signal = signal / envelope  # [B*C, <= length]
        if length is not None and not torch.jit.is_tracing() and signal.shape[-1] < length:
            signal = F.pad(signal, (0, length - signal.shape[-1]))  # [B*C, length]
        return signal

    # ----------------------------------------------------------------- streaming
    def initial_state(self, batch_size: int = 1, num_channels: int = 1) -> torch.Tensor:
        """Zero overlap-add state ``[B, C, win_length - hop_length]`` (causal padding only)."""
        self._require_causal()
        config = self.config
        shape = synthesis_state_shape((batch_size, num_channels), config.frame_length, config.hop_length)
        return torch.zeros(shape, dtype=self.kernel.dtype, device=self.kernel.device)

    def forward_step(self, spec: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame: ``spec [B, C, 2, F, 1]`` -> ``block [B, C, hop]`` and the new state.

        The concatenated blocks equal the offline causal ISTFT delayed by :attr:`stream_delay`.
        """
        self._require_causal()
        config = self.config
        batch, channels = spec.shape[0], spec.shape[1]
        if config.backend == "conv":
            flat = spec.reshape(batch, channels, 1, 2 * config.num_freqs)  # [B, C, 1, 2F]
            frame = torch.matmul(flat, self.kernel.squeeze(1)).squeeze(-2)  # [B, C, win]
        else:
            spectrum = torch.complex(spec[:, :, 0, :, 0], spec[:, :, 1, :, 0])  # [B, C, F] complex
            frame = torch.fft.irfft(spectrum, n=config.n_fft)[..., : config.kernel_length]  # [B, C, win]
            frame = frame * self.synthesis_window
        return overlap_add_step(frame, state, config.hop_length)


def stft_pair(
    n_fft: int | STFTConfig,
    hop_length: int | None = None,
    win_length: int | None = None,
    window: str = "hann",
    padding: str = "center",
    backend: str = "torch",
    center_pad_mode: str = "reflect",
) -> tuple[STFT, ISTFT]:
    """A matching :class:`STFT` and :class:`ISTFT` built from the same options."""
    config = _config_from(n_fft, hop_length, win_length, window, padding, backend, center_pad_mode)
    return STFT(config), ISTFT(config)


__all__ = [
    "BACKENDS",
    "CENTER_PAD_MODES",
    "ISTFT",
    "PADDINGS",
    "STFT",
    "STFTConfig",
    "WINDOWS",
    "analysis_dft_kernel",
    "make_window",
    "steady_window_sum_square",
    "stft_pair",
    "synthesis_dft_kernel",
]
