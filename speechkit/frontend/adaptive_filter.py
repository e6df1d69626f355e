"""Linear echo cancellation: a partitioned-block frequency-domain Kalman filter (streaming, exportable).

Algorithm: the frequency-domain adaptive Kalman filter of G. Enzner and P. Vary, "Frequency-domain
adaptive Kalman filter for acoustic echo control in hands-free telephones", Signal Processing
86(6), 2006, in its partitioned-block form (F. Kuech, E. Mabande, G. Enzner, "State-space
architecture of the partitioned-block-based acoustic echo controller", ICASSP 2014). The echo
path is a first-order Markov state per partition ``p`` and bin ``k``,
``W_p(t+1) = A W_p(t) + process noise``, observed through the far-end spectra ``X_p``; the
Kalman gain weighs the uncertainty of the echo-path estimate ``P_p`` against the power of
everything the filter cannot model (near-end talk, noise: ``Phi``). Both are tracked per bin:

* the far end is framed in the **shared STFT front end**
  (:class:`~speechkit.frontend.stft.STFT`, causal framing): a rectangular window of ``2 L``
  samples with hop ``L`` (the block), i.e. overlap-save, which makes the product ``X_p W_p``
  an exact linear convolution with a causal FIR filter of ``num_partitions * L`` taps;
* echo estimate ``y = last L samples of IDFT(sum_p X_p W_p)``, error ``e = d - y`` (a priori),
  ``E = DFT([0_L, e])``;
* gain ``mu_p = P_p / (sum_q P_q |X_q|^2 + 2 Phi)`` (the 2 is the DFT size over the block);
* update ``W_p <- A (W_p + G(mu_p conj(X_p) E))`` where ``G`` is the gradient constraint (the
  time-domain update keeps its first ``L`` taps, so every partition stays a causal block of the
  impulse response); ``P_p <- A^2 (1 - mu_p |X_p|^2 / 2) P_p + (1 - A^2) |W_p|^2``;
* ``Phi`` is smoothed from the error power that the *leaked* echo does not explain:
  ``max(|E|^2 - eta |Y|^2, 0)``, where the leakage ``eta`` is the regression of the error's
  power fluctuations on the echo estimate's ones, summed over bins (J.-M. Valin, "On adjusting the
  learning rate in frequency domain echo cancellation with double-talk", IEEE TASLP 15(3), 2007).
  Near-end talk does not follow the far end's power, so it raises ``Phi`` in the same block and
  the gain shrinks (no divergence in double talk, no detector); residual echo after an echo-path
  change does follow it, so it is not mistaken for near-end talk;
* the echo-path uncertainty grows by the process noise ``(1 - A^2) |W_p|^2`` of the Markov
  model plus ``leakage_uncertainty_gain * min(eta, 1) |W_p|^2``: a leaking filter (echo-path
  change) is told that it is uncertain again and re-converges at full speed. The uncertainty
  starts at ``initial_uncertainty``, decaying by ``uncertainty_decay_db`` per partition (the
  prior of a decaying room response, which speeds up the first convergence).

* a **shadow filter** (the two-filter scheme of practical echo cancellers) adapts beside it with
  a fixed normalised step and no double-talk protection, so it re-converges after a path change
  as fast as from scratch; its echo path replaces the main one when its smoothed error energy
  falls below ``adopt_ratio`` times the main filter's (and below the microphone's), and it
  restarts from the main filter when near-end talk drives its error above ``reset_ratio`` times
  the main one's. Its normalisation includes the Kalman filter's observation noise, so it is
  fast after a path change (the leaked echo is not counted as noise) and slow in double talk.
  The output is always the main (Kalman) filter's; when its smoothed error energy exceeds
  ``divergence_ratio`` times the microphone's, both filters restart from zero (a filter must not
  add echo).

Why a Kalman gain and not a fixed-step NLMS: the gain is an optimal step size per bin and
partition from two powers that NLMS would need a double-talk detector and a convergence
heuristic for. ``transition`` (``A``) trades steady-state misadjustment against tracking speed.

Everything is plain real tensor arithmetic (stacked real/imaginary axis, DFTs as matrix products
with the shared front end's kernels), states are explicit tensors that start at zero (:meth:`state_shapes`; the uncertainty is stored
relative to its prior), and
:meth:`PartitionedKalmanFilter.forward` runs the same per-block code as
:meth:`PartitionedKalmanFilter.step`, so a stream of steps equals the whole-signal output bit for
bit. The filter has no learned parameters.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .masks import complex_conjugate, complex_multiply
from .stft import STFT
from .stft_config import STFTConfig, make_window, synthesis_dft_kernel

#: the real/imaginary axis of the filter's spectra ``[B, P, 2, F]``
_COMPLEX = -2


@dataclasses.dataclass(frozen=True)
class KalmanFilterConfig:
    """Settings of :class:`PartitionedKalmanFilter`.

    Attributes:
        block_length: samples per block ``L`` (the hop; the DFT size is ``2 L``).
        num_partitions: blocks of impulse response modelled; the echo tail is
            ``num_partitions * block_length`` samples.
        transition: Markov transition factor ``A`` of the echo path per block (closer to 1: slower
            tracking, lower steady-state misadjustment).
        noise_smoothing: recursive smoothing of the observation-noise power per block.
        initial_uncertainty: echo-path uncertainty ``P`` of the first partition at the start, per
            bin (the expected ``|W|^2``: an echo path of about unit gain).
        uncertainty_decay_db: decay of the starting uncertainty per partition (a decaying room
            response; 2 dB per 16 ms block is a reverberation time of about 0.5 s).
        leakage_smoothing: recursive smoothing of the power statistics of the leakage estimate.
        max_leakage: largest leakage (residual echo power over echo-estimate power) assumed.
        leakage_uncertainty_gain: uncertainty added per block, times ``min(leakage, 1) |W|^2``.
        uncertainty_floor: the process noise also acts on this fraction of the prior, so taps
            that hold no echo yet (a late reflection, a new path) keep some uncertainty.
        shadow_step: step size of the shadow filter (a normalised update weighted across
            partitions by the prior uncertainty).
        shadow_regularization: added to the shadow's normalisation (silence).
        comparison_smoothing: recursive smoothing of the two filters' error energies per block.
        adopt_ratio: the shadow's echo path replaces the main one when its smoothed error energy
            is below this fraction of the main filter's.
        reset_ratio: the shadow restarts from the main filter when its error energy is above this
            multiple of the main filter's or of the microphone's (it adapted to near-end talk).
        divergence_ratio: both filters restart from zero when the main filter's smoothed error
            energy exceeds this multiple of the microphone's (the filter adds echo instead of
            removing it: strongly nonlinear echo, a wrong alignment).
        power_floor: smallest observation-noise power (keeps the gain finite in digital silence).
        saturation_level: microphone samples at or beyond this magnitude count as saturated (the
            converter clipped them, and the echo in them): in a block with such a sample the echo
            estimate is clipped to the same level before it is subtracted, so an estimate of the
            unclipped echo cannot push the error (and the output) far beyond full scale (at most
            twice it), and the filter learns less from the clipped block; 0 disables it. Blocks
            below the level are untouched.
    """

    block_length: int = 256
    num_partitions: int = 20
    transition: float = 0.9995
    noise_smoothing: float = 0.5
    initial_uncertainty: float = 1.0
    uncertainty_decay_db: float = 2.0
    leakage_smoothing: float = 0.95
    max_leakage: float = 4.0
    leakage_uncertainty_gain: float = 0.1
    uncertainty_floor: float = 0.1
    shadow_step: float = 1.5
    shadow_regularization: float = 1e-6
    comparison_smoothing: float = 0.8
    adopt_ratio: float = 0.7
    reset_ratio: float = 4.0
    divergence_ratio: float = 2.0
    power_floor: float = 1e-10
    saturation_level: float = 0.999

    def __post_init__(self) -> None:
        if self.block_length <= 0 or self.num_partitions <= 0:
            raise ConfigError(
                f"block_length and num_partitions must be positive, got {self.block_length} and {self.num_partitions}"
            )
        if not 0.0 < self.transition <= 1.0:
            raise ConfigError(f"transition must be in (0, 1], got {self.transition}")
        if not 0.0 <= self.noise_smoothing < 1.0:
            raise ConfigError(f"noise_smoothing must be in [0, 1), got {self.noise_smoothing}")
        if not 0.0 <= self.leakage_smoothing < 1.0:
            raise ConfigError(f"leakage_smoothing must be in [0, 1), got {self.leakage_smoothing}")
        if self.initial_uncertainty <= 0.0 or self.power_floor <= 0.0:
            raise ConfigError("initial_uncertainty and power_floor must be positive")
        if self.uncertainty_decay_db < 0.0 or self.max_leakage < 0.0 or self.leakage_uncertainty_gain < 0.0:
            raise ConfigError("uncertainty_decay_db, max_leakage and leakage_uncertainty_gain must not be negative")
        if self.uncertainty_floor < 0.0 or self.shadow_step < 0.0 or self.shadow_regularization <= 0.0:
            raise ConfigError("uncertainty_floor and shadow_step must not be negative, shadow_regularization positive")
        if not 0.0 <= self.comparison_smoothing < 1.0 or not 0.0 < self.adopt_ratio < 1.0 < self.reset_ratio:
            raise ConfigError("comparison_smoothing must be in [0, 1), adopt_ratio in (0, 1), reset_ratio above 1")
        if self.saturation_level < 0.0:
            raise ConfigError(f"saturation_level must not be negative, got {self.saturation_level}")
        if self.divergence_ratio <= 1.0:
            raise ConfigError(f"divergence_ratio must be above 1, got {self.divergence_ratio}")

    @property
    def num_freqs(self) -> int:
        """Bins ``F = L + 1`` of the ``2 L``-point DFT."""
        return self.block_length + 1

    def tail_seconds(self, sample_rate: int) -> float:
        """Length of the modelled echo path in seconds."""
        return self.num_partitions * self.block_length / sample_rate


class PartitionedKalmanFilter(nn.Module):
    """Partitioned-block frequency-domain Kalman filter: ``(mic, far end) -> (error, echo estimate)``.

    Offline: ``forward(mic [B, T], far_end [B, T]) -> (error [B, T], echo [B, T])``. Streaming:
    ``step(mic_block [B, L], far_block [B, L], states) -> (error [B, L], echo [B, L], states)``
    with the states of :meth:`state_shapes` (:meth:`initial_state`: all zeros, i.e. zero echo
    paths, the prior uncertainty, zero powers). The output of block ``t`` depends on
    input blocks ``<= t`` only (no delay, latency one block). The far end must lead the echo (the
    bulk delay removed, with a small margin).
    """

    #: names of the states, in :meth:`step` order
    STATE_NAMES = (
        "far_buffer", "far_spectra", "weights", "uncertainty_change", "noise_power", "mean_error", "mean_echo", "covariance",
        "echo_variance", "shadow_weights", "error_energies",
    )

    def __init__(self, config: KalmanFilterConfig) -> None:
        super().__init__()
        self.config = config
        length = config.block_length
        self.far_stft = STFT(
            STFTConfig(n_fft=2 * length, hop_length=length, win_length=2 * length, window="rectangular",
                       padding="causal", backend="conv")
        )
        analysis = self.far_stft.kernel[:, 0]  # [2F, 2L]
        synthesis = synthesis_dft_kernel(2 * length, make_window("rectangular", 2 * length, torch.float64))
        synthesis = synthesis[:, 0].float()  # [2F, 2L]
        # DFT of [0_L, e] and of [g, 0_L]; last / first L samples of the inverse DFT
        self.register_buffer("error_dft", analysis[:, length:].t().contiguous(), persistent=False)  # [L, 2F]
        self.register_buffer("head_dft", analysis[:, :length].t().contiguous(), persistent=False)  # [L, 2F]
        self.register_buffer("tail_idft", synthesis[:, length:].contiguous(), persistent=False)  # [2F, L]
        self.register_buffer("head_idft", synthesis[:, :length].contiguous(), persistent=False)  # [2F, L]
        partitions = torch.arange(config.num_partitions, dtype=torch.float64)
        prior = config.initial_uncertainty * 10.0 ** (-config.uncertainty_decay_db / 10.0 * partitions)  # [P]
        self.register_buffer("uncertainty_prior", prior.float()[:, None], persistent=False)  # [P, 1]

    @property
    def block_length(self) -> int:
        """Samples per step ``L``."""
        return self.config.block_length

    def state_shapes(self, batch_size: int) -> list[tuple[str, tuple[int, ...]]]:
        """``(name, shape)`` of every state, in :meth:`step` order."""
        config = self.config
        partitions, freqs = config.num_partitions, config.num_freqs
        return [
            ("far_buffer", (batch_size, 1, config.block_length)),
            ("far_spectra", (batch_size, partitions, 2, freqs)),
            ("weights", (batch_size, partitions, 2, freqs)),
            ("uncertainty_change", (batch_size, partitions, freqs)),
            ("noise_power", (batch_size, freqs)),
            ("mean_error", (batch_size, freqs)),
            ("mean_echo", (batch_size, freqs)),
            ("covariance", (batch_size, freqs)),
            ("echo_variance", (batch_size, freqs)),
            ("shadow_weights", (batch_size, partitions, 2, freqs)),
            ("error_energies", (batch_size, 3)),
        ]

    def initial_state(
        self, batch_size: int = 1, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> list[torch.Tensor]:
        """Starting states: all zeros (the uncertainty state is stored relative to its prior)."""
        return [torch.zeros(shape, dtype=dtype, device=device) for _, shape in self.state_shapes(batch_size)]

    def _echoes(self, far_spectra: torch.Tensor, both_weights: torch.Tensor) -> torch.Tensor:
        """Echo estimates of the current block for the main and shadow filters.

        ``far_spectra [B, P, 2, F]``, ``both_weights [2, B, P, 2, F]`` -> ``[2, B, L]`` (overlap-save tail).
        """
        spectrum = complex_multiply(far_spectra, both_weights, _COMPLEX).sum(dim=2)  # [2, B, 2, F]
        return torch.matmul(spectrum.flatten(start_dim=2), self.tail_idft)  # [2, B, L]

    def _tail_spectra(self, blocks: torch.Tensor) -> torch.Tensor:
        """``DFT([0_L, block])`` of each block: ``[K, B, L] -> [K, B, 1, 2, F]``."""
        spectra = torch.matmul(blocks, self.error_dft)  # [K, B, 2F]
        return spectra.reshape(blocks.shape[0], blocks.shape[1], 1, 2, self.config.num_freqs)  # [K, B, 1, 2, F]

    def _constrained_updates(
        self, far_spectra: torch.Tensor, error_spectra: torch.Tensor, gains: torch.Tensor
    ) -> torch.Tensor:
        """``G(gain * conj(X_p) * E)`` of both filters: every partition's update kept to ``L`` causal taps.

        ``far_spectra [B, P, 2, F]``, ``error_spectra [2, B, 1, 2, F]``, ``gains [2, B, P, F]`` ->
        ``[2, B, P, 2, F]``.
        """
        config = self.config
        conjugate = complex_conjugate(far_spectra, _COMPLEX)  # [B, P, 2, F]
        gradient = complex_multiply(conjugate, error_spectra, _COMPLEX) * gains.unsqueeze(3)  # [2, B, P, 2, F]
        flat = gradient.reshape(-1, 2 * config.num_freqs)  # [2*B*P, 2F]
        return torch.matmul(torch.matmul(flat, self.head_idft), self.head_dft).reshape(gradient.shape)  # [2, B, P, 2, F]

    def step(
        self, mic_block: torch.Tensor, far_block: torch.Tensor, states: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """One block: ``mic_block, far_block [B, L]`` -> error, echo estimate ``[B, L]`` and new states."""
        (far_buffer, far_spectra, weights, uncertainty_change, noise_power, mean_error, mean_echo, covariance,
         echo_variance, shadow_weights, error_energies) = states
        config = self.config
        batch, freqs = mic_block.shape[0], config.num_freqs
        prior = self.uncertainty_prior  # [P, 1]
        uncertainty = uncertainty_change + prior  # [B, P, F]
        newest, far_buffer = self.far_stft.forward_step(far_block.unsqueeze(1), far_buffer)  # [B, 1, 2, F, 1]
        far_spectra = torch.cat([newest.reshape(batch, 1, 2, freqs), far_spectra[:, :-1]], dim=1)  # [B, P, 2, F]
        far_power = far_spectra.pow(2).sum(dim=_COMPLEX)  # [B, P, F]
        echoes = self._echoes(far_spectra, torch.stack([weights, shadow_weights]))  # [2, B, L]: main, shadow
        if config.saturation_level > 0.0:  # where the microphone clipped, so did the echo it recorded
            level = config.saturation_level
            saturated = (mic_block.abs() >= level).any(dim=-1, keepdim=True)  # [B, 1]: a clipping block
            echoes = torch.where(saturated, echoes.clamp(-level, level), echoes)  # [2, B, L]
        errors = mic_block - echoes  # [2, B, L]
        echo, error, shadow_error = echoes[0], errors[0], errors[1]  # [B, L] each
        spectra = self._tail_spectra(torch.cat([errors, echoes[:1]]))  # [3, B, 1, 2, F]
        error_spectra = spectra[:2]  # [2, B, 1, 2, F]: main, shadow
        error_power = spectra[0, :, 0].pow(2).sum(dim=_COMPLEX)  # [B, F]
        echo_power = spectra[2, :, 0].pow(2).sum(dim=_COMPLEX)  # [B, F]

        # leakage: regression of the error's power fluctuations on the echo estimate's (residual echo share)
        alpha = config.leakage_smoothing
        mean_error = alpha * mean_error + (1.0 - alpha) * error_power  # [B, F]
        mean_echo = alpha * mean_echo + (1.0 - alpha) * echo_power  # [B, F]
        echo_deviation = echo_power - mean_echo  # [B, F]
        covariance = alpha * covariance + (1.0 - alpha) * (error_power - mean_error) * echo_deviation  # [B, F]
        echo_variance = alpha * echo_variance + (1.0 - alpha) * echo_deviation.pow(2)  # [B, F]
        leakage = covariance.sum(dim=-1, keepdim=True) / (echo_variance.sum(dim=-1, keepdim=True) + config.power_floor)
        leakage = leakage.clamp(0.0, config.max_leakage)  # [B, 1]

        # Kalman filter; observation noise = the error power the leaked echo does not explain
        observed = torch.clamp(error_power - leakage * echo_power, min=0.0)  # [B, F]
        smoothing = config.noise_smoothing
        noise_power = smoothing * noise_power + (1.0 - smoothing) * observed  # [B, F]
        denominator = (uncertainty * far_power).sum(dim=1) + 2.0 * noise_power  # [B, F]
        gain = uncertainty / (denominator.unsqueeze(1) + config.power_floor)  # [B, P, F]
        # shadow filter: the prior's fixed gain, normalised with the same observation noise (fast after a
        # path change, where the leaked echo is not counted as noise; slow in double talk)
        shadow_norm = (prior * far_power).sum(dim=1) + 2.0 * noise_power + config.shadow_regularization  # [B, F]
        shadow_gain = config.shadow_step * prior / shadow_norm.unsqueeze(1)  # [B, P, F]
        updates = self._constrained_updates(far_spectra, error_spectra, torch.stack([gain, shadow_gain]))
        transition = config.transition
        weights = transition * (weights + updates[0])  # [B, P, 2, F]
        shadow_weights = shadow_weights + updates[1]  # [B, P, 2, F]
        process = (1.0 - transition**2) + config.leakage_uncertainty_gain * leakage.clamp(max=1.0)  # [B, 1]
        uncertainty = transition**2 * (1.0 - 0.5 * gain * far_power) * uncertainty + process.unsqueeze(-1) * (
            weights.pow(2).sum(dim=_COMPLEX) + config.uncertainty_floor * prior
        )  # [B, P, F]

        # the shadow's echo path is adopted when it cancels better; a diverged main filter restarts
        beta = config.comparison_smoothing
        energies = torch.stack(
            [error.pow(2).sum(dim=-1), shadow_error.pow(2).sum(dim=-1), mic_block.pow(2).sum(dim=-1)], dim=-1
        )  # [B, 3]: main error, shadow error, microphone
        error_energies = beta * error_energies + (1.0 - beta) * energies  # [B, 3]
        main, shadow, mic = error_energies.unbind(dim=-1)  # [B] each
        adopt = ((shadow < config.adopt_ratio * main) & (shadow < mic)).to(weights.dtype)  # [B]
        reset = ((shadow > config.reset_ratio * main) | (shadow > config.reset_ratio * mic)).to(weights.dtype)  # [B]
        weights = torch.lerp(weights, shadow_weights, adopt[:, None, None, None])  # [B, P, 2, F]
        shadow_weights = torch.lerp(shadow_weights, weights, reset[:, None, None, None])  # [B, P, 2, F]
        # a filter that makes the microphone louder has diverged (nonlinear echo, a wrong alignment): restart
        keep = (main <= config.divergence_ratio * mic).to(weights.dtype)[:, None, None, None]  # [B, 1, 1, 1]
        weights, shadow_weights = weights * keep, shadow_weights * keep  # [B, P, 2, F]
        switched = torch.clamp(adopt + reset, max=1.0)[:, None]  # [B, 1]
        lowest = torch.minimum(main, shadow)[:, None]  # [B, 1]
        compared = torch.cat([lowest, lowest, mic[:, None]], dim=-1)  # [B, 3]
        error_energies = torch.lerp(error_energies, compared, switched)  # [B, 3]
        restarted = 1.0 - keep[:, :, 0, 0]  # [B, 1]
        error_energies = torch.lerp(error_energies, mic[:, None].expand_as(error_energies), restarted)  # [B, 3]

        uncertainty_change = uncertainty - prior  # [B, P, F]
        return error, echo, [
            far_buffer, far_spectra, weights, uncertainty_change, noise_power, mean_error, mean_echo, covariance,
            echo_variance, shadow_weights, error_energies,
        ]

    def forward(self, mic: torch.Tensor, far_end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole signals ``mic, far_end [B, T]`` -> error, echo estimate ``[B, T]`` (block by block).

        The last partial block is zero-padded and cut again; equal to a stream of :meth:`step`.
        """
        if mic.shape != far_end.shape or mic.dim() != 2:
            raise ConfigError(
                f"the adaptive filter needs microphone and far end of one shape [batch, time], got "
                f"{tuple(mic.shape)} and {tuple(far_end.shape)}"
            )
        length, block = mic.shape[-1], self.block_length
        padding = (-length) % block
        mic_blocks = F.pad(mic, (0, padding)).reshape(mic.shape[0], -1, block)  # [B, n, L]
        far_blocks = F.pad(far_end, (0, padding)).reshape(mic.shape[0], -1, block)  # [B, n, L]
        states = self.initial_state(mic.shape[0], mic.dtype, mic.device)
        errors, echoes = [], []
        for index in range(mic_blocks.shape[1]):
            error, echo, states = self.step(mic_blocks[:, index], far_blocks[:, index], states)
            errors.append(error)
            echoes.append(echo)
        if not errors:
            return mic.clone(), torch.zeros_like(mic)
        error = torch.stack(errors, dim=1).reshape(mic.shape[0], -1)[:, :length]  # [B, T]
        echo = torch.stack(echoes, dim=1).reshape(mic.shape[0], -1)[:, :length]  # [B, T]
        return error, echo


__all__ = ["KalmanFilterConfig", "PartitionedKalmanFilter"]
