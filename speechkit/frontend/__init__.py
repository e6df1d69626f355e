"""Signal front-ends shared by every model: causal framing, STFT/iSTFT and time-frequency masks.

* :mod:`speechkit.frontend.framing`: the one causal framing / overlap-add convention.
* :mod:`speechkit.frontend.stft`: :class:`STFT` / :class:`ISTFT` (``[B, C, T] <-> [B, C, 2, F, N]``),
  torch or ONNX-exportable conv backend, centred or causal padding, streaming steps.
* :mod:`speechkit.frontend.masks`: bounded real/complex masks on stacked real/imag spectra, and
  the one real mask activation (:func:`bounded_real_mask`).
* :mod:`speechkit.frontend.compression`: power-law magnitude compression and its exact inverse.
* :mod:`speechkit.frontend.bandsplit`: band split / band merge of a spectrum (TIGER, BSRNN).
* :mod:`speechkit.frontend.adaptive_filter`: the partitioned-block frequency-domain Kalman filter
  (linear echo cancellation; streaming, explicit states, exportable).
"""
from __future__ import annotations

from .bandsplit import BandMerge, BandSplit, bands_from_hz, bands_from_width_table, bands_from_widths, check_bands
from .compression import compress_spectrum, decompress_spectrum
from .masks import (
    COMPLEX_MASK_KINDS,
    MASK_ACTIVATIONS,
    REAL_MASK_KINDS,
    DualMaskOutput,
    apply_complex_mask,
    apply_dual_mask,
    apply_mask,
    apply_real_mask,
    bounded_complex_mask,
    bounded_real_mask,
    complex_conjugate,
    complex_multiply,
    imag_part,
    magnitude,
    real_part,
    stack_complex,
)
from .stft import (
    ISTFT,
    STFT,
    WINDOWS,
    STFTConfig,
    analysis_dft_kernel,
    make_window,
    steady_window_sum_square,
    stft_pair,
    synthesis_dft_kernel,
)

__all__ = [
    "BandMerge",
    "BandSplit",
    "COMPLEX_MASK_KINDS",
    "MASK_ACTIVATIONS",
    "DualMaskOutput",
    "ISTFT",
    "REAL_MASK_KINDS",
    "STFT",
    "STFTConfig",
    "WINDOWS",
    "analysis_dft_kernel",
    "apply_complex_mask",
    "apply_dual_mask",
    "apply_mask",
    "apply_real_mask",
    "bounded_complex_mask",
    "bands_from_hz",
    "bands_from_width_table",
    "bands_from_widths",
    "bounded_real_mask",
    "check_bands",
    "complex_conjugate",
    "complex_multiply",
    "compress_spectrum",
    "decompress_spectrum",
    "imag_part",
    "magnitude",
    "make_window",
    "real_part",
    "stack_complex",
    "steady_window_sum_square",
    "stft_pair",
    "synthesis_dft_kernel",
]
