"""Signal-level metrics and training losses: SNR, SI-SDR, and permutation-invariant training.

SI-SDR follows Le Roux et al., "SDR - half-baked or well done?", ICASSP 2019; utterance-level PIT
follows Kolbaek et al., "Multitalker speech separation with utterance-level permutation invariant
training", IEEE/ACM TASLP 2017 (exhaustive search over permutations, fine for 2-4 sources).

All functions work on the last axis (time) and broadcast over any leading axes, returning one
value per example: ``estimate [..., T]``, ``reference [..., T]`` -> ``[...]``. They are eps-safe:
silent references or perfect estimates give large finite values, never NaN.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

from .errors import ConfigError

#: default eps guarding divisions and logarithms
EPS = 1e-8

#: most sources :func:`pit_loss` searches exhaustively (S! permutations)
MAX_PIT_SOURCES = 4


def _check_shapes(estimate: torch.Tensor, reference: torch.Tensor) -> None:
    if estimate.shape[-1] != reference.shape[-1]:
        raise ConfigError(
            f"estimate and reference lengths differ ({estimate.shape[-1]} vs {reference.shape[-1]})"
        )


def _flattened_pair(estimate: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Size]:
    """``estimate [..., T]`` and ``reference`` (broadcast to it) as ``[N, T]`` each, plus the leading shape."""
    _check_shapes(estimate, reference)
    leading = estimate.shape[:-1]
    flat_estimate = estimate.reshape(-1, estimate.shape[-1])  # [..., T] -> [N, T]
    flat_reference = reference.expand_as(estimate).reshape(-1, reference.shape[-1])  # -> [N, T]
    return flat_estimate, flat_reference, leading


def _real_spectra(
    estimate: torch.Tensor, reference: torch.Tensor, n_fft: int, hop_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hann-window STFTs of two ``[N, T]`` signals as real pairs ``[N, F, frames, 2]``."""
    window = torch.hann_window(n_fft, device=estimate.device, dtype=estimate.dtype)
    estimate_spectrum, reference_spectrum = (
        torch.view_as_real(torch.stft(signal, n_fft, hop_length, window=window, return_complex=True))  # [N, F, frames, 2]
        for signal in (estimate, reference)
    )
    return estimate_spectrum, reference_spectrum


def snr(estimate: torch.Tensor, reference: torch.Tensor, zero_mean: bool = False,
        eps: float = EPS) -> torch.Tensor:
    """Signal-to-noise ratio in dB: ``10 log10(|ref|^2 / |ref - est|^2)``, ``[..., T] -> [...]``.

    Args:
        estimate: estimated signal ``[..., T]``.
        reference: target signal, broadcastable to ``estimate``.
        zero_mean: subtract each signal's mean first.
        eps: added to both energies.
    """
    _check_shapes(estimate, reference)
    if zero_mean:
        estimate = estimate - estimate.mean(dim=-1, keepdim=True)
        reference = reference - reference.mean(dim=-1, keepdim=True)
    signal_energy = reference.pow(2).sum(dim=-1)  # [...]
    noise_energy = (reference - estimate).pow(2).sum(dim=-1)  # [...]
    return 10.0 * torch.log10((signal_energy + eps) / (noise_energy + eps))


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor, zero_mean: bool = True,
           eps: float = EPS) -> torch.Tensor:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), ``[..., T] -> [...]``.

    The reference is scaled by ``alpha = <est, ref> / |ref|^2``; SI-SDR is
    ``10 log10(|alpha ref|^2 / |est - alpha ref|^2)``.

    Args:
        estimate: estimated signal ``[..., T]``.
        reference: target signal, broadcastable to ``estimate``.
        zero_mean: subtract each signal's mean first (the usual SI-SNR definition).
        eps: guards the projection and the ratio.
    """
    _check_shapes(estimate, reference)
    if zero_mean:
        estimate = estimate - estimate.mean(dim=-1, keepdim=True)
        reference = reference - reference.mean(dim=-1, keepdim=True)
    dot = (estimate * reference).sum(dim=-1, keepdim=True)  # [..., 1]
    reference_energy = reference.pow(2).sum(dim=-1, keepdim=True)  # [..., 1]
    target = dot / (reference_energy + eps) * reference  # [..., T]
    noise = estimate - target
    return 10.0 * torch.log10((target.pow(2).sum(dim=-1) + eps) / (noise.pow(2).sum(dim=-1) + eps))


def neg_si_sdr(estimate: torch.Tensor, reference: torch.Tensor, zero_mean: bool = True,
               eps: float = EPS) -> torch.Tensor:
    """``-si_sdr`` per example (a loss to minimise), ``[..., T] -> [...]``."""
    return -si_sdr(estimate, reference, zero_mean=zero_mean, eps=eps)


def neg_snr(estimate: torch.Tensor, reference: torch.Tensor, zero_mean: bool = False,
            eps: float = EPS) -> torch.Tensor:
    """``-snr`` per example (a loss to minimise), ``[..., T] -> [...]``."""
    return -snr(estimate, reference, zero_mean=zero_mean, eps=eps)


def multi_resolution_stft_loss(
    estimate: torch.Tensor,
    reference: torch.Tensor,
    resolutions: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (256, 64)),
    eps: float = 1e-3,
) -> torch.Tensor:
    """Multi-resolution STFT loss (Yamamoto et al., "Parallel WaveGAN", ICASSP 2020), ``[..., T] -> [...]``.

    Per resolution ``(n_fft, hop_length)`` (Hann window of ``n_fft``): spectral convergence
    ``|| |Y| - |X| ||_F / || |Y| ||_F`` plus the mean absolute log-magnitude difference; averaged over
    resolutions. Both signals are divided by the reference's RMS first, so the loss is invariant to
    the overall level (like SI-SDR) but not to the estimate's gain relative to the reference.
    ``eps`` floors the magnitudes inside the logarithm (relative to unit RMS), so near-silent bins
    do not dominate.
    """
    estimate, reference, leading = _flattened_pair(estimate, reference)  # [..., T] -> [N, T] each
    scale = reference.pow(2).mean(dim=-1, keepdim=True).add(EPS).sqrt()  # [N, 1]
    estimate, reference = estimate / scale, reference / scale
    total = estimate.new_zeros(estimate.shape[0])
    for n_fft, hop_length in resolutions:
        window = torch.hann_window(n_fft, device=estimate.device, dtype=estimate.dtype)
        spectra = [
            torch.stft(signal, n_fft, hop_length, window=window, return_complex=True).abs()  # [N, F, frames]
            for signal in (estimate, reference)
        ]
        estimate_magnitude, reference_magnitude = spectra
        convergence = (reference_magnitude - estimate_magnitude).flatten(1).norm(dim=-1) / (
            reference_magnitude.flatten(1).norm(dim=-1) + eps
        )
        log_distance = (torch.log(estimate_magnitude + eps) - torch.log(reference_magnitude + eps)).abs().flatten(1).mean(-1)
        total = total + convergence + log_distance
    return (total / len(resolutions)).reshape(leading)


def complex_spectral_loss(
    estimate: torch.Tensor,
    reference: torch.Tensor,
    n_fft: int = 512,
    hop_length: int = 128,
    magnitude_weight: float = 1.0,
) -> torch.Tensor:
    """L1 distance of STFTs: real part, imaginary part and magnitude, ``[..., T] -> [...]``.

    ``mean|Re Y - Re X| + mean|Im Y - Im X| + magnitude_weight * mean||Y| - |X||`` over the bins of
    a Hann-window STFT (``n_fft``, ``hop_length``); the spectral term of the complex spectral
    mapping ("PCM"-style) loss of DeFTAN-II (Lee and Choi, IEEE/ACM TASLP 2024), which averages it
    over the speech and the implied noise. Not scale-invariant.
    """
    estimate, reference, leading = _flattened_pair(estimate, reference)  # [..., T] -> [N, T] each
    estimate_spectrum, reference_spectrum = _real_spectra(estimate, reference, n_fft, hop_length)  # [N, F, frames, 2]
    distance = (estimate_spectrum - reference_spectrum).abs().flatten(1, 2).mean(dim=1).sum(dim=-1)  # [N]
    if magnitude_weight:
        magnitudes = [spectrum.pow(2).sum(dim=-1).add(EPS).sqrt() for spectrum in (estimate_spectrum, reference_spectrum)]
        distance = distance + magnitude_weight * (magnitudes[0] - magnitudes[1]).abs().flatten(1).mean(dim=1)
    return distance.reshape(leading)


def compressed_spectral_loss(
    estimate: torch.Tensor,
    reference: torch.Tensor,
    n_fft: int = 512,
    hop_length: int = 128,
    compression: float = 0.3,
    complex_weight: float = 0.3,
) -> torch.Tensor:
    """Power-law compressed spectral MSE, ``[..., T] -> [...]``.

    ``complex_weight * mean|c(Y) - c(X)|^2 + (1 - complex_weight) * mean(|Y|^p - |X|^p)^2`` with
    ``c(X) = |X|^p X / |X|`` on a Hann-window STFT (Braun and Tashev, "A consolidated view of loss
    functions for supervised deep learning-based speech enhancement", TSP 2021: ``p = 0.3``,
    weight 0.3). The compression weighs quiet time-frequency regions, where residual echo and
    speech distortion are audible, far more than an SNR does. Not scale-invariant: normalise the
    signals first when levels vary.
    """
    estimate, reference, leading = _flattened_pair(estimate, reference)  # [..., T] -> [N, T] each
    compressed = []
    for spectrum in _real_spectra(estimate, reference, n_fft, hop_length):  # [N, F, frames, 2] each
        magnitude = spectrum.pow(2).sum(dim=-1, keepdim=True).add(EPS).sqrt()  # [N, F, frames, 1]
        compressed_magnitude = magnitude.pow(compression)
        compressed.append((compressed_magnitude, spectrum * compressed_magnitude / magnitude))
    (estimate_magnitude, estimate_complex), (reference_magnitude, reference_complex) = compressed
    complex_distance = (estimate_complex - reference_complex).pow(2).sum(dim=-1).flatten(1).mean(dim=1)  # [N]
    magnitude_distance = (estimate_magnitude - reference_magnitude).pow(2).flatten(1).mean(dim=1)  # [N]
    distance = complex_weight * complex_distance + (1.0 - complex_weight) * magnitude_distance
    return distance.reshape(leading)


def score_matching_loss(score: torch.Tensor, std: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Denoising score matching with sigma^2 weighting, per example: ``[B, ...] -> [B]``.

    ``mean |score * std + z|^2`` where ``x_t = mean(x_0, t) + std * z`` was the perturbed input and
    ``score`` the model's estimate of the score of ``p(x_t)`` (Song et al., "Score-based generative
    modeling through stochastic differential equations", ICLR 2021; as in SGMSE+, Richter et al.,
    IEEE/ACM TASLP 2023). ``std`` is ``[B]`` or broadcastable to ``score``.
    """
    if std.dim() == 1 and score.dim() > 1:
        std = std.reshape(-1, *([1] * (score.dim() - 1)))  # [B] -> [B, 1, ..., 1]
    error = score * std + noise
    return error.abs().pow(2).flatten(1).mean(dim=1)  # [B]


def pairwise_losses(
    estimates: torch.Tensor,
    references: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = neg_si_sdr,
) -> torch.Tensor:
    """Loss of every (estimate, reference) pair: ``[B, S, ..., T]`` twice -> ``[B, S_est, S_ref]``.

    Extra axes between the source axis and time (e.g. channels) are averaged.
    """
    _check_shapes(estimates, references)
    if estimates.shape[:2] != references.shape[:2] or estimates.dim() < 3:
        raise ConfigError(
            f"estimates {tuple(estimates.shape)} and references {tuple(references.shape)} must both be "
            "[batch, sources, ..., time] with the same batch and source counts"
        )
    losses = loss_fn(estimates.unsqueeze(2), references.unsqueeze(1))  # [B, S, S, ...]
    return losses.reshape(*losses.shape[:3], -1).mean(dim=-1)  # [B, S, S]


def pit_loss(
    estimates: torch.Tensor,
    references: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = neg_si_sdr,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Utterance-level permutation-invariant loss for 1-4 sources.

    Args:
        estimates: ``[B, S, ..., T]`` model outputs.
        references: ``[B, S, ..., T]`` targets.
        loss_fn: per-example loss ``[..., T] x [..., T] -> [...]`` (default :func:`neg_si_sdr`).

    Returns:
        ``(loss, permutation)``: the batch mean of each example's best mean-over-sources loss (a
        scalar), and ``permutation [B, S]`` (long) such that ``estimates[b, permutation[b, j]]``
        is matched to ``references[b, j]``; see :func:`reorder_sources`.
    """
    num_sources = estimates.shape[1] if estimates.dim() >= 2 else 0
    if not 1 <= num_sources <= MAX_PIT_SOURCES:
        raise ConfigError(f"pit_loss handles 1 to {MAX_PIT_SOURCES} sources, got {num_sources}")
    pairwise = pairwise_losses(estimates, references, loss_fn)  # [B, S_est, S_ref]
    permutations = torch.tensor(
        list(itertools.permutations(range(num_sources))), device=pairwise.device
    )  # [P, S]: permutation[j] = estimate index for reference j
    reference_index = torch.arange(num_sources, device=pairwise.device)
    per_permutation = pairwise[:, permutations, reference_index].mean(dim=-1)  # [B, P]
    best_loss, best_index = per_permutation.min(dim=1)  # [B], [B]
    return best_loss.mean(), permutations[best_index]  # scalar, [B, S]


def reorder_sources(estimates: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """Reorder ``estimates [B, S, ...]`` so source j of example b is ``estimates[b, permutation[b, j]]``."""
    if permutation.shape != estimates.shape[:2]:
        raise ConfigError(
            f"permutation {tuple(permutation.shape)} does not match estimates {tuple(estimates.shape[:2])}"
        )
    batch_index = torch.arange(estimates.shape[0], device=estimates.device)[:, None]  # [B, 1]
    return estimates[batch_index, permutation.to(estimates.device)]  # [B, S, ...]
