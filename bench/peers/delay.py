"""Output-delay estimation by cross-correlation, and its compensation before scoring."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def cross_correlation(signal: np.ndarray, reference: np.ndarray, max_lag: int) -> np.ndarray:
    """Normalised cross-correlation ``c[lag] = sum signal[n + lag] reference[n]`` for ``lag`` in ``[-max_lag, max_lag]``.

    Returns ``[2 * max_lag + 1]`` values (index ``max_lag`` is lag 0), divided by the two energies'
    geometric mean so items of different levels weigh equally when summed.
    """
    signal = np.asarray(signal, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    fft_size = 1 << int(np.ceil(np.log2(signal.shape[0] + reference.shape[0] + 1)))
    spectrum = np.fft.rfft(signal, fft_size) * np.conj(np.fft.rfft(reference, fft_size))
    circular = np.fft.irfft(spectrum, fft_size)
    lags = np.arange(-max_lag, max_lag + 1)
    energy = np.sqrt(np.sum(signal**2) * np.sum(reference**2)) + 1e-12
    return circular[lags % fft_size] / energy


def estimate_delay(
    outputs: Sequence[np.ndarray], references: Sequence[np.ndarray], max_lag: int
) -> tuple[int, float]:
    """The one delay (samples) that best aligns every ``outputs[i]`` with ``references[i]``.

    The normalised cross-correlations of all pairs are summed before picking the peak, which makes
    the estimate robust for systems that suppress most of the signal on some items. Positive means
    the output lags the reference. Returns ``(delay, peak)`` with ``peak`` the mean normalised
    correlation at that lag (close to 1 for a clean delayed copy).
    """
    if not outputs or len(outputs) != len(references):
        raise ValueError("estimate_delay needs as many outputs as references, at least one")
    total = np.zeros(2 * max_lag + 1)
    for output, reference in zip(outputs, references):
        total += cross_correlation(output, reference, max_lag)
    index = int(np.argmax(total))
    return index - max_lag, float(total[index] / len(outputs))


def compensate_delay(output: np.ndarray, delay: int, length: int) -> np.ndarray:
    """``output`` advanced by ``delay`` samples and cut or zero-padded to ``length``: ``y[n] = output[n + delay]``."""
    output = np.asarray(output, dtype=np.float32)
    if delay >= 0:
        shifted = output[delay:]
    else:
        shifted = np.concatenate([np.zeros(-delay, dtype=np.float32), output])  # [T] -> [T - delay]
    if shifted.shape[0] < length:
        shifted = np.pad(shifted, (0, length - shifted.shape[0]))  # -> [length]
    return shifted[:length]
