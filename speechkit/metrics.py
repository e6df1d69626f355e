"""Evaluation metrics: SI-SDR(i), SDR, output level, PESQ, STOI/ESTOI, ERLE and DNSMOS.

Conventions: signals are ``[..., T]`` (torch tensors or numpy arrays); scores are in dB unless
stated. SI-SDR and the permutation search reuse :mod:`speechkit.losses` (the training objective and
the metric are one implementation). PESQ, STOI and DNSMOS come from optional packages
(``pip install 'speechkit[eval]'``), imported on first use.

References:
    J. Le Roux et al., "SDR - half-baked or well done?", ICASSP 2019 (SI-SDR).
    E. Vincent, R. Gribonval, C. Fevotte, "Performance measurement in blind audio source
    separation", IEEE TASLP 14(4), 2006 (SDR with a 512-tap distortion filter, as in BSS Eval).
    ITU-T P.862 / P.862.2 (PESQ NB/WB); C. Taal et al., IEEE TASLP 2011 (STOI); J. Jensen and
    C. Taal, IEEE TASLP 2016 (ESTOI); C. Reddy et al., "DNSMOS P.835", ICASSP 2022.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ._optional import require
from .errors import AudioError, ConfigError

#: metric names understood by :func:`evaluate_item`
INTRUSIVE_METRICS = ("si_sdr", "si_sdri", "sdr", "level_db", "pesq_wb", "pesq_nb", "stoi", "estoi")
DEFAULT_METRICS = ("si_sdr", "si_sdri", "sdr", "pesq_wb", "pesq_nb", "stoi", "estoi")
EPSILON = 1e-8


def _as_tensor(signal: Any) -> torch.Tensor:
    if isinstance(signal, torch.Tensor):
        return signal.detach().to(torch.float64)
    return torch.as_tensor(np.ascontiguousarray(signal), dtype=torch.float64)  # negative strides are fine


def _as_mono_numpy(signal: Any) -> np.ndarray:
    array = signal.detach().cpu().numpy() if isinstance(signal, torch.Tensor) else np.asarray(signal)
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 1:
        raise AudioError(f"This metric needs a one-dimensional signal, got shape {tuple(array.shape)}.")
    return array


def _check_same_shape(estimate: Any, reference: Any) -> None:
    if tuple(estimate.shape) != tuple(reference.shape):
        raise AudioError(
            f"The estimate {tuple(estimate.shape)} and the reference {tuple(reference.shape)} must have the same shape."
        )


# --------------------------------------------------------------------------------------- SI-SDR, PIT
def si_sdr(estimate: Any, reference: Any) -> torch.Tensor:
    """Scale-invariant SDR in dB over the last axis: ``[..., T], [..., T] -> [...]`` (float64)."""
    from .losses import si_sdr as si_sdr_of_tensors

    estimate, reference = _as_tensor(estimate), _as_tensor(reference)
    _check_same_shape(estimate, reference)
    return si_sdr_of_tensors(estimate, reference)


def si_sdr_improvement(estimate: Any, reference: Any, mixture: Any) -> torch.Tensor:
    """SI-SDR of ``estimate`` minus SI-SDR of the unprocessed ``mixture`` (broadcast to the estimate)."""
    estimate, reference = _as_tensor(estimate), _as_tensor(reference)
    mixture = _as_tensor(mixture).expand_as(reference)
    return si_sdr(estimate, reference) - si_sdr(mixture, reference)


def best_permutation(estimate: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Reorder the sources (axis 1) of ``estimate[B, S, ..., T]`` to maximise the mean SI-SDR.

    Exhaustive search (:func:`speechkit.losses.pit_loss`), per batch item; same shape out.
    """
    from .losses import neg_si_sdr, pit_loss, reorder_sources

    _check_same_shape(estimate, targets)
    if estimate.shape[1] == 1:
        return estimate
    with torch.no_grad():
        _, permutation = pit_loss(_as_tensor(estimate), _as_tensor(targets), neg_si_sdr)  # [B, S]
    return reorder_sources(estimate, permutation)


# --------------------------------------------------------------------------------------- SNR, SDR
def snr(estimate: Any, reference: Any) -> torch.Tensor:
    """Plain signal-to-noise ratio in dB over the last axis (no scaling, no filtering)."""
    from .losses import snr as snr_of_tensors

    estimate, reference = _as_tensor(estimate), _as_tensor(reference)
    _check_same_shape(estimate, reference)
    return snr_of_tensors(estimate, reference)


def sdr(estimate: Any, reference: Any, filter_length: int = 512) -> float:
    """BSS-Eval SDR in dB of a one-dimensional estimate against its reference.

    The target part of the estimate is its least-squares projection on the reference filtered by
    any FIR filter of ``filter_length`` taps (time-invariant distortion is allowed, as in BSS Eval
    v3 / ``mir_eval``); everything else counts as error.
    """
    linalg = require("scipy.linalg", "eval", "SDR")
    estimate_array, reference_array = _as_mono_numpy(estimate), _as_mono_numpy(reference)
    _check_same_shape(estimate_array, reference_array)
    length = reference_array.shape[0]
    fft_size = 1 << int(math.ceil(math.log2(length + filter_length - 1)))
    reference_spectrum = np.fft.rfft(reference_array, fft_size)
    estimate_spectrum = np.fft.rfft(estimate_array, fft_size)
    autocorrelation = np.fft.irfft(np.abs(reference_spectrum) ** 2, fft_size)[:filter_length]
    crosscorrelation = np.fft.irfft(np.conj(reference_spectrum) * estimate_spectrum, fft_size)[:filter_length]
    autocorrelation = autocorrelation.copy()
    autocorrelation[0] += EPSILON * max(autocorrelation[0], 1.0)  # regularise silent/degenerate references
    taps = linalg.solve_toeplitz(autocorrelation, crosscorrelation)
    target = np.fft.irfft(reference_spectrum * np.fft.rfft(taps, fft_size), fft_size)[:length]
    error = estimate_array - target
    return float(10 * np.log10((np.sum(target**2) + EPSILON) / (np.sum(error**2) + EPSILON)))


def relative_level_db(estimate: Any, reference: Any) -> torch.Tensor:
    """Level of the estimate relative to its reference in dB over the last axis (RMS ratio).

    ``[..., T], [..., T] -> [...]`` (float64). 0 dB keeps the reference's level; a model trained
    on a scale-invariant objective alone leaves it free, so this is what SI-SDR cannot see.
    """
    estimate, reference = _as_tensor(estimate), _as_tensor(reference)
    _check_same_shape(estimate, reference)
    estimate_power = estimate.pow(2).mean(dim=-1)
    reference_power = reference.pow(2).mean(dim=-1)
    return 10 * torch.log10((estimate_power + EPSILON**2) / (reference_power + EPSILON**2))


# --------------------------------------------------------------------------------------- perceptual
def _resampled(signal: np.ndarray, input_rate: int, output_rate: int) -> np.ndarray:
    if input_rate == output_rate:
        return signal
    import soxr

    return soxr.resample(signal, input_rate, output_rate, quality="HQ")


def pesq(estimate: Any, reference: Any, sample_rate: int, mode: str = "wb") -> float:
    """PESQ MOS-LQO: ``mode="wb"`` (P.862.2, at 16 kHz) or ``"nb"`` (P.862, at 8 kHz).

    Inputs at other rates are resampled (soxr) to 16 kHz (wb) or 8 kHz (nb). Returns NaN when
    PESQ finds no utterance (e.g. silence).
    """
    if mode not in ("wb", "nb"):
        raise ConfigError(f"PESQ mode must be 'wb' or 'nb', not {mode!r}.")
    pesq_module = require("pesq", "eval", "PESQ")
    estimate_array, reference_array = _as_mono_numpy(estimate), _as_mono_numpy(reference)
    _check_same_shape(estimate_array, reference_array)
    rate = 16000 if mode == "wb" else 8000
    if mode == "wb" and sample_rate < 16000:
        raise ConfigError(f"Wide-band PESQ needs audio at 16 kHz or more, not {sample_rate} Hz.")
    reference_array = _resampled(reference_array, sample_rate, rate)
    estimate_array = _resampled(estimate_array, sample_rate, rate)
    try:
        return float(pesq_module.pesq(rate, reference_array, estimate_array, mode))
    except pesq_module.PesqError:
        return float("nan")


def stoi(estimate: Any, reference: Any, sample_rate: int, extended: bool = False) -> float:
    """STOI (or ESTOI with ``extended=True``) intelligibility score in [0, 1] (pystoi)."""
    pystoi = require("pystoi", "eval", "STOI")
    estimate_array, reference_array = _as_mono_numpy(estimate), _as_mono_numpy(reference)
    _check_same_shape(estimate_array, reference_array)
    return float(pystoi.stoi(reference_array, estimate_array, sample_rate, extended=extended))


def erle(microphone: Any, output: Any, far_end_only: Any | None = None) -> float:
    """Echo return loss enhancement in dB: ``10 log10(sum mic^2 / sum out^2)``.

    Args:
        microphone: the microphone signal ``[T]`` (echo, plus anything else).
        output: the echo canceller's output ``[T]``.
        far_end_only: optional boolean mask ``[T]`` of the samples where only the far end is
            active; ERLE is defined there (use the whole signal for far-end-only recordings).
    """
    microphone_array, output_array = _as_mono_numpy(microphone), _as_mono_numpy(output)
    _check_same_shape(microphone_array, output_array)
    if far_end_only is not None:
        mask = np.asarray(far_end_only, dtype=bool)
        if mask.shape != microphone_array.shape:
            raise AudioError("The far-end-only mask must have the shape of the signals.")
        if not mask.any():
            raise AudioError("The far-end-only mask selects no sample, so ERLE is undefined.")
        microphone_array, output_array = microphone_array[mask], output_array[mask]
    return float(10 * np.log10((np.sum(microphone_array**2) + EPSILON) / (np.sum(output_array**2) + EPSILON)))


def dnsmos(audio: Any, sample_rate: int) -> dict[str, float]:
    """Non-intrusive DNSMOS P.835 scores ``{"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"}`` (speechmos).

    Audio at other rates is resampled to the 16 kHz the DNSMOS models expect.
    """
    speechmos = require("speechmos", "eval", "DNSMOS")
    dnsmos_module = getattr(speechmos, "dnsmos", None) or require("speechmos.dnsmos", "eval", "DNSMOS")
    array = _resampled(_as_mono_numpy(audio), sample_rate, 16000)
    peak = float(np.max(np.abs(array))) if array.size else 0.0
    if peak > 1.0:
        array = array / peak
    scores = dnsmos_module.run(array.astype(np.float32), 16000)
    return {
        "dnsmos_sig": float(scores["sig_mos"]),
        "dnsmos_bak": float(scores["bak_mos"]),
        "dnsmos_ovrl": float(scores["ovrl_mos"]),
    }


#: AECMOS scenario markers (speechmos) for each talk type
AECMOS_TALK_TYPES = ("st", "nst", "dt")


def aecmos(far_end: Any, microphone: Any, estimate: Any, sample_rate: int, talk_type: str) -> dict[str, float]:
    """Non-intrusive AECMOS ``{"aecmos_echo", "aecmos_deg"}`` (speechmos, 16 kHz model).

    Args:
        far_end: the loudspeaker (loopback) signal.
        microphone: the microphone signal the canceller received.
        estimate: the canceller's output.
        sample_rate: rate of all three signals (resampled to 16 kHz).
        talk_type: ``"st"`` far-end single talk, ``"nst"`` near-end single talk, ``"dt"`` double talk.
    """
    if talk_type not in AECMOS_TALK_TYPES:
        raise ConfigError(f"AECMOS talk_type must be one of {', '.join(AECMOS_TALK_TYPES)}, got {talk_type!r}")
    aecmos_module = require("speechmos.aecmos", "eval", "AECMOS")
    signals = {
        name: np.clip(_resampled(_as_mono_numpy(signal), sample_rate, 16000), -1.0, 1.0).astype(np.float32)
        for name, signal in (("lpb", far_end), ("mic", microphone), ("enh", estimate))
    }
    scores = aecmos_module.run(signals, 16000, talk_type=talk_type)
    return {"aecmos_echo": float(scores["echo_mos"]), "aecmos_deg": float(scores["deg_mos"])}


# --------------------------------------------------------------------------------------- one item
def evaluate_item(
    estimate: Any,
    reference: Any,
    sample_rate: int,
    mixture: Any | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    permutation_invariant: bool = True,
) -> dict[str, float]:
    """Every requested metric for one item, averaged over its sources and channels.

    Args:
        estimate: ``[S, C, T]`` (or ``[C, T]`` / ``[T]``: one source).
        reference: same shape as ``estimate``.
        sample_rate: rate of all signals in Hz.
        mixture: the unprocessed input ``[C_in, T]`` (needed for ``si_sdri``; its first ``C``
            channels are the reference input).
        metrics: names from :data:`INTRUSIVE_METRICS`; ``pesq_wb`` is skipped below 16 kHz.
        permutation_invariant: reorder the estimated sources to the best SI-SDR permutation first.

    Returns:
        ``{name: value}``; with ``mixture`` also ``"input_<name>"`` for the unprocessed mixture
        (SI-SDR, SDR, PESQ, STOI).
    """
    unknown = sorted(set(metrics) - set(INTRUSIVE_METRICS))
    if unknown:
        raise ConfigError(f"Unknown metric(s) {', '.join(unknown)} (known: {', '.join(INTRUSIVE_METRICS)}).")
    estimate_tensor, reference_tensor = _as_tensor(estimate), _as_tensor(reference)
    while estimate_tensor.dim() < 3:
        estimate_tensor, reference_tensor = estimate_tensor.unsqueeze(0), reference_tensor.unsqueeze(0)  # -> [S, C, T]
    _check_same_shape(estimate_tensor, reference_tensor)
    if permutation_invariant and estimate_tensor.shape[0] > 1:
        estimate_tensor = best_permutation(estimate_tensor.unsqueeze(0), reference_tensor.unsqueeze(0))[0]
    sources, channels, _ = reference_tensor.shape
    mixture_tensor = None
    if mixture is not None:
        mixture_tensor = _as_tensor(mixture)
        if mixture_tensor.dim() == 1:
            mixture_tensor = mixture_tensor.unsqueeze(0)  # [T] -> [1, T]
        if mixture_tensor.shape[-1] != reference_tensor.shape[-1]:
            raise AudioError("The mixture and the reference must have the same length.")
        mixture_tensor = mixture_tensor[:channels].unsqueeze(0).expand_as(reference_tensor)  # -> [S, C, T]

    def per_signal(function: Any, signal: torch.Tensor) -> float:
        values = [
            function(signal[source, channel].numpy(), reference_tensor[source, channel].numpy())
            for source in range(sources)
            for channel in range(channels)
        ]
        return float(np.mean(values))

    wanted = set(metrics)
    results: dict[str, float] = {}
    candidates = {"": estimate_tensor}
    if mixture_tensor is not None:
        candidates["input_"] = mixture_tensor
    for prefix, signal in candidates.items():
        if {"si_sdr", "si_sdri"} & wanted:
            results[f"{prefix}si_sdr"] = float(si_sdr(signal, reference_tensor).mean())
        if "sdr" in wanted:
            results[f"{prefix}sdr"] = per_signal(sdr, signal)
        if "level_db" in wanted:
            results[f"{prefix}level_db"] = float(relative_level_db(signal, reference_tensor).mean())
        if "pesq_wb" in wanted and sample_rate >= 16000:
            results[f"{prefix}pesq_wb"] = per_signal(lambda e, r: pesq(e, r, sample_rate, "wb"), signal)
        if "pesq_nb" in wanted:
            results[f"{prefix}pesq_nb"] = per_signal(lambda e, r: pesq(e, r, sample_rate, "nb"), signal)
        if "stoi" in wanted:
            results[f"{prefix}stoi"] = per_signal(lambda e, r: stoi(e, r, sample_rate), signal)
        if "estoi" in wanted:
            results[f"{prefix}estoi"] = per_signal(lambda e, r: stoi(e, r, sample_rate, extended=True), signal)
    if "si_sdri" in wanted and mixture_tensor is not None:
        results["si_sdri"] = results["si_sdr"] - results["input_si_sdr"]
    if "si_sdr" not in wanted:
        results.pop("si_sdr", None)
    return results


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean of every numeric column over ``rows`` (NaNs ignored); adds ``"count"``."""
    summary: dict[str, float] = {"count": float(len(rows))}
    keys = [key for key in (rows[0] if rows else {}) if isinstance(rows[0][key], (int, float))]
    for key in keys:
        values = np.array([float(row[key]) for row in rows if isinstance(row.get(key), (int, float))])
        finite = values[np.isfinite(values)]
        summary[key] = float(finite.mean()) if finite.size else float("nan")
    return summary
