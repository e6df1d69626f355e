"""STFT configuration (:class:`STFTConfig`), periodic windows and the windowed DFT kernels.

Used by :mod:`speechkit.frontend.stft` (which re-exports every public name here) and the STFT
encoder/decoder of :mod:`speechkit.frontend.stft_filterbank`.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .framing import causal_num_frames, stream_delay

WINDOWS = ("hann", "sqrt_hann", "hamming", "blackman", "rectangular")
PADDINGS = ("center", "causal")
BACKENDS = ("torch", "conv")
CENTER_PAD_MODES = ("reflect", "constant")

#: window-sum-square values below this are treated as zero (same threshold as torch.istft)
_NOLA_TOLERANCE = 1e-11


@dataclasses.dataclass(frozen=True)
class STFTConfig:
    """The options shared by :class:`STFT` and :class:`ISTFT` (validated on construction).

    Attributes:
        n_fft: DFT size; ``F = n_fft // 2 + 1`` frequency bins.
        hop_length: samples between frames.
        win_length: window (and, in causal mode, frame) length; defaults to ``n_fft``.
        window: one of :data:`WINDOWS` (periodic).
        padding: ``"center"`` or ``"causal"`` (see the module docstring).
        backend: ``"torch"`` or ``"conv"`` (ONNX-exportable).
        center_pad_mode: ``"reflect"`` or ``"constant"``; only used with ``padding="center"``.
    """

    n_fft: int
    hop_length: int
    win_length: int | None = None
    window: str = "hann"
    padding: str = "center"
    backend: str = "torch"
    center_pad_mode: str = "reflect"

    def __post_init__(self) -> None:
        if self.win_length is None:
            object.__setattr__(self, "win_length", self.n_fft)
        if self.n_fft < 2:
            raise ConfigError(f"n_fft must be at least 2, got {self.n_fft}")
        if not 0 < self.hop_length <= self.frame_length:
            raise ConfigError(
                f"hop_length must be in [1, win_length={self.frame_length}], got {self.hop_length}"
            )
        if not 0 < self.frame_length <= self.n_fft:
            raise ConfigError(f"win_length must be in [1, n_fft={self.n_fft}], got {self.win_length}")
        if self.window not in WINDOWS:
            raise ConfigError(f"unknown window {self.window!r} (known: {', '.join(WINDOWS)})")
        if self.padding not in PADDINGS:
            raise ConfigError(f"unknown padding {self.padding!r} (known: {', '.join(PADDINGS)})")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown STFT backend {self.backend!r} (known: {', '.join(BACKENDS)})")
        if self.center_pad_mode not in CENTER_PAD_MODES:
            raise ConfigError(
                f"unknown center_pad_mode {self.center_pad_mode!r} (known: {', '.join(CENTER_PAD_MODES)})"
            )

    @property
    def frame_length(self) -> int:
        """Length of the window (``win_length``, resolved)."""
        return int(self.win_length)  # type: ignore[arg-type]

    @property
    def num_freqs(self) -> int:
        """Number of frequency bins ``F = n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    @property
    def kernel_length(self) -> int:
        """Samples one frame spans: ``n_fft`` when centred, ``win_length`` when causal."""
        return self.n_fft if self.padding == "center" else self.frame_length

    @property
    def stream_delay(self) -> int:
        """Delay of the streamed output against the offline causal output, in samples."""
        return stream_delay(self.frame_length, self.hop_length)

    def window_tensor(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The periodic window, ``[win_length]``."""
        return make_window(self.window, self.frame_length, dtype=dtype)

    def kernel_window(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The window placed in a frame of :attr:`kernel_length` samples.

        Centred: zero-padded on both sides to ``n_fft`` as :func:`torch.stft` does. Causal: the
        window itself (the frame is zero-padded to ``n_fft`` after windowing).
        """
        window = self.window_tensor(dtype)
        if self.padding == "causal":
            return window
        left = (self.n_fft - self.frame_length) // 2
        return F.pad(window, (left, self.n_fft - self.frame_length - left))  # [n_fft]

    def check_invertible(self) -> None:
        """Raise :class:`ConfigError` unless the overlapped squared windows never sum to zero (NOLA).

        The check runs on the CPU whatever the default device, so it also works while modules are
        built under ``torch.device("meta")`` (where a tensor has no value to compare).
        """
        window = make_window(self.window, self.frame_length, dtype=torch.float64, device="cpu")  # [win]
        minimum = float(steady_window_sum_square(window, self.hop_length).min())
        if minimum < _NOLA_TOLERANCE:
            raise ConfigError(
                f"window {self.window!r} with win_length={self.frame_length} and hop_length="
                f"{self.hop_length} does not overlap-add to a nonzero envelope, so it cannot be inverted"
            )

    def num_frames(self, length: int) -> int:
        """Frames ``N`` the offline STFT produces for ``length`` samples."""
        if self.padding == "center":
            return 1 + length // self.hop_length
        return causal_num_frames(length, self.frame_length, self.hop_length)


def make_window(
    name: str, length: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """A periodic window of ``length`` samples: one of :data:`WINDOWS` (``device``: default device if None)."""
    if name == "hann":
        return torch.hann_window(length, periodic=True, dtype=dtype, device=device)
    if name == "sqrt_hann":
        return torch.hann_window(length, periodic=True, dtype=dtype, device=device).sqrt()
    if name == "hamming":
        return torch.hamming_window(length, periodic=True, dtype=dtype, device=device)
    if name == "blackman":
        return torch.blackman_window(length, periodic=True, dtype=dtype, device=device)
    if name == "rectangular":
        return torch.ones(length, dtype=dtype, device=device)
    raise ConfigError(f"unknown window {name!r} (known: {', '.join(WINDOWS)})")


def steady_window_sum_square(window: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Steady-state overlap-add of ``window ** 2`` at each phase: ``[hop_length]``.

    ``out[j] = sum_k window[j + k * hop_length] ** 2``: the envelope every output sample sees
    once all frames overlapping it are present.
    """
    length = window.shape[-1]
    padded_length = math.ceil(length / hop_length) * hop_length
    squared = F.pad(window**2, (0, padded_length - length))  # [ceil(win / hop) * hop]
    return squared.reshape(-1, hop_length).sum(dim=0)  # [hop_length]


def _dft_angles(n_fft: int, frame_length: int) -> torch.Tensor:
    """``2 pi k n / n_fft`` in float64, ``[F, frame_length]``, with ``k n`` reduced mod n_fft."""
    bins = torch.arange(n_fft // 2 + 1, dtype=torch.int64)
    times = torch.arange(frame_length, dtype=torch.int64)
    phase = torch.remainder(bins[:, None] * times[None, :], n_fft)  # [F, frame_length]
    return phase.to(torch.float64) * (2.0 * math.pi / n_fft)


def analysis_dft_kernel(n_fft: int, window: torch.Tensor) -> torch.Tensor:
    """Conv1d weights of the windowed DFT: ``[2 * F, 1, K]`` (real rows, then imaginary rows).

    ``window`` (``[K]``, ``K <= n_fft``) multiplies frame samples ``0 .. K-1``; the frame is
    implicitly zero-padded to ``n_fft``. Row ``k`` gives ``Re X[k]``, row ``F + k`` gives
    ``Im X[k]`` with ``X[k] = sum_n w[n] x[n] exp(-2j pi k n / n_fft)`` (the torch.stft sign).
    """
    angles = _dft_angles(n_fft, window.shape[-1])  # [F, K]
    weight = window.to(torch.float64)[None, :]
    kernel = torch.cat([torch.cos(angles) * weight, -torch.sin(angles) * weight], dim=0)  # [2F, K]
    return kernel.to(window.dtype if window.is_floating_point() else torch.float32).unsqueeze(1)  # [2F, 1, K]


def synthesis_dft_kernel(n_fft: int, window: torch.Tensor) -> torch.Tensor:
    """ConvTranspose1d weights of the windowed inverse real DFT: ``[2 * F, 1, K]``.

    Applied to a stacked spectrum ``[.., 2F, N]`` it overlap-adds ``window * irfft(X, n_fft)[:K]``
    for every frame (like :func:`torch.fft.irfft`, the imaginary parts of the DC and Nyquist
    bins are ignored).
    """
    num_freqs = n_fft // 2 + 1
    angles = _dft_angles(n_fft, window.shape[-1])  # [F, K]
    scale = torch.full((num_freqs, 1), 2.0 / n_fft, dtype=torch.float64)
    scale[0] = 1.0 / n_fft
    if n_fft % 2 == 0:
        scale[-1] = 1.0 / n_fft
    weight = window.to(torch.float64)[None, :]
    cosine, sine = scale * torch.cos(angles) * weight, scale * torch.sin(angles) * weight  # [F, K] each
    kernel = torch.cat([cosine, -sine], dim=0)  # [2F, K]
    return kernel.to(window.dtype if window.is_floating_point() else torch.float32).unsqueeze(1)  # [2F, 1, K]


__all__ = [
    "BACKENDS",
    "CENTER_PAD_MODES",
    "PADDINGS",
    "STFTConfig",
    "WINDOWS",
    "analysis_dft_kernel",
    "make_window",
    "steady_window_sum_square",
    "synthesis_dft_kernel",
]
