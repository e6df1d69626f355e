"""Residual echo suppression after a linear echo canceller (streaming, exportable, no learned weights).

A linear adaptive filter (:mod:`speechkit.frontend.adaptive_filter`) removes the part of the echo
that is a linear function of the far end. What it leaves — misadjustment while it converges or
re-converges, a loudspeaker's nonlinear distortion, a tail longer than the filter — still follows
the far end's power. This stage estimates that residual from the filter's own echo estimate and
attenuates it with a spectral gain, as the postfilters of practical echo cancellers do (Speex's
``speex_preprocess`` echo suppression, the residual-echo suppressor of WebRTC AEC3):

* both signals are framed with the **shared STFT front end** (causal, square-root Hann, 50 %
  overlap, :attr:`SuppressorConfig.win_length`), so the stage streams one hop at a time and adds
  ``win_length - hop_length`` samples of delay;
* **leakage** (how much residual echo power goes with each unit of echo-estimate power, and with
  each unit of far-end power) is the regression of the error's power fluctuations on the echo
  estimate's and on the far end's, per bin and shrunk toward the all-bin regression, smoothed over
  time (J.-M. Valin, "On adjusting the learning rate in frequency domain echo cancellation with
  double-talk", IEEE TASLP 15(3), 2007: the statistic Speex feeds its suppressor). Near-end talk
  and background noise do not follow the far end's power, so they do not raise it; a filter that
  has not converged, or a distorting loudspeaker, does;
* **residual echo power** per bin: ``R = overestimation * min(max(leak_Y Yp, leak_X Xp), c Xp)``,
  where ``Yp`` and ``Xp`` are the echo estimate's and the far end's power held with an exponential
  release (reverberation beyond the filter's tail), and ``c`` is the echo coupling, the slower
  regression of the microphone's power on the far end's: the residual never exceeds the echo the
  microphone shows, so a far end that does not reach the microphone draws little suppression (chance
  correlations of two talkers' power envelopes still draw some);
* **gain**: a Wiener gain with a decision-directed a-priori signal-to-residual ratio (Ephraim and
  Malah's estimator, with the residual echo as the "noise"), never below ``max_suppression_db``.
  With a silent far end the residual estimate decays to zero and the gain to one: the stage
  passes near-end speech unchanged (the STFT reconstructs it exactly).

States are explicit tensors that start at zero (:meth:`ResidualEchoSuppressor.state_shapes`), and
:meth:`ResidualEchoSuppressor.forward` runs the per-frame gain code of
:meth:`ResidualEchoSuppressor.step` over the offline STFT, so a stream equals the offline output
delayed by :attr:`ResidualEchoSuppressor.stream_delay` to float rounding.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .stft import stft_pair

#: the real/imaginary axis of spectra ``[B, C, 2, F]``
_COMPLEX = -2


@dataclasses.dataclass(frozen=True)
class SuppressorConfig:
    """Settings of :class:`ResidualEchoSuppressor`.

    Attributes:
        win_length: STFT window (square-root Hann) in samples; the hop is half of it.
        max_suppression_db: the largest attenuation (the gain floor), in dB.
        overestimation: factor on the residual-echo estimate (more suppression of doubtful bins).
        leakage_smoothing: recursive smoothing per frame of the leakage regression's statistics.
        coupling_smoothing: the same for the echo coupling (microphone on far end), slower: chance
            correlations of two talkers' power envelopes average out over seconds, a room does not change.
        min_leakage: smallest leakage assumed while the far end plays (residual echo at least this
            fraction of the echo estimate's power: the filter is never perfect).
        max_leakage: largest leakage assumed.
        echo_release: per-frame decay of the held echo-estimate power (reverberation the filter's
            tail does not reach; 0: no hold).
        decision_directed: weight of the previous frame in the a-priori ratio (Ephraim-Malah).
        power_floor: added to the residual power (keeps the gain finite in digital silence).
    """

    win_length: int = 256
    max_suppression_db: float = 30.0
    overestimation: float = 2.0
    leakage_smoothing: float = 0.98
    coupling_smoothing: float = 0.995
    min_leakage: float = 0.001
    max_leakage: float = 4.0
    echo_release: float = 0.9
    decision_directed: float = 0.9
    power_floor: float = 1e-10

    def __post_init__(self) -> None:
        if self.win_length < 4 or self.win_length % 2:
            raise ConfigError(f"win_length must be an even number of at least 4 samples, got {self.win_length}")
        if self.max_suppression_db <= 0.0 or self.overestimation <= 0.0 or self.power_floor <= 0.0:
            raise ConfigError("max_suppression_db, overestimation and power_floor must be positive")
        for name in ("leakage_smoothing", "coupling_smoothing", "echo_release", "decision_directed"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.min_leakage <= self.max_leakage:
            raise ConfigError(f"need 0 <= min_leakage <= max_leakage, got {self.min_leakage} and {self.max_leakage}")

    @property
    def hop_length(self) -> int:
        """Frame hop: half the window (50 % overlap)."""
        return self.win_length // 2

    @property
    def num_freqs(self) -> int:
        """Bins ``F`` of the ``win_length``-point DFT."""
        return self.win_length // 2 + 1

    def with_window(self, win_length: int) -> SuppressorConfig:
        """The same suppressor on a ``win_length`` window: the per-frame smoothing and release factors
        are rescaled (``factor ** (new hop / old hop)``) so their time constants in seconds stay."""
        ratio = (win_length // 2) / self.hop_length
        per_frame = ("leakage_smoothing", "coupling_smoothing", "echo_release", "decision_directed")
        return dataclasses.replace(
            self, win_length=int(win_length), **{name: getattr(self, name) ** ratio for name in per_frame}
        )


class ResidualEchoSuppressor(nn.Module):
    """Spectral gain on a linear canceller's error: ``(error, echo estimate) -> near-end estimate``."""

    def __init__(self, config: SuppressorConfig) -> None:
        super().__init__()
        self.config = config
        # error and echo estimate are the two channels of one STFT; the output has one
        self.stft, self.istft = stft_pair(config.win_length, config.hop_length, window="sqrt_hann", padding="causal")
        self.gain_floor = 10.0 ** (-config.max_suppression_db / 20.0)

    @property
    def stream_delay(self) -> int:
        """Delay of the streamed output against the offline output (``win_length - hop_length``)."""
        return self.istft.stream_delay

    def state_shapes(self, batch_size: int) -> list[tuple[str, tuple[int, ...]]]:
        """``(name, shape)`` of every state tensor, all zero at the start: the STFT buffers, then
        the gain statistics (:meth:`statistics_shapes`)."""
        overlap = self.config.win_length - self.config.hop_length
        return [
            ("suppressor_analysis", (batch_size, 3, overlap)),  # error, echo estimate, far end
            ("suppressor_synthesis", (batch_size, 1, overlap)),
            *self.statistics_shapes(batch_size),
        ]

    def statistics_shapes(self, batch_size: int) -> list[tuple[str, tuple[int, ...]]]:
        """``(name, shape)`` of the gain statistics :meth:`gains` carries (zero at the start)."""
        frequencies = self.config.num_freqs
        return [
            ("suppressor_means", (batch_size, 4, frequencies)),  # power means: error, echo estimate, far end, mic
            # error with echo estimate, error with far end, microphone with far end
            ("suppressor_covariances", (batch_size, 3, frequencies)),
            ("suppressor_variances", (batch_size, 2, frequencies)),  # echo estimate, far end
            ("suppressor_holds", (batch_size, 2, frequencies)),  # held powers: echo estimate, far end
            ("suppressor_previous", (batch_size, frequencies)),  # gain^2 * a-posteriori ratio
        ]

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> list[torch.Tensor]:
        """Zero states (see :meth:`state_shapes`)."""
        return [torch.zeros(shape, device=device) for _, shape in self.state_shapes(batch_size)]

    def _gain(self, spec: torch.Tensor, stats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One frame: ``spec [B, 3, 2, F]`` (error, echo estimate, far end) -> gain ``[B, F]``, new statistics."""
        config = self.config
        means, covariances, variances, holds, previous = stats
        microphone = spec[:, :1] + spec[:, 1:2]  # [B, 1, 2, F]: error + echo estimate
        powers = torch.cat([spec, microphone], dim=1).square().sum(dim=_COMPLEX)  # [B, 4, F]: e, y, x, mic
        alpha = config.leakage_smoothing
        means = alpha * means + (1 - alpha) * powers
        deviations = powers - means  # [B, 4, F]
        # regressions of the error's power fluctuations on the echo estimate's and the far end's, and
        # of the microphone's on the far end's (the echo coupling)
        products = torch.stack([deviations[:, 0] * deviations[:, 1], deviations[:, 0] * deviations[:, 2],
                                deviations[:, 3] * deviations[:, 2]], dim=1)  # [B, 3, F]
        slow = torch.tensor([alpha, alpha, config.coupling_smoothing], dtype=products.dtype,
                            device=products.device)[:, None]  # [3, 1]: the coupling is smoothed more slowly
        covariances = slow * covariances + (1 - slow) * products
        variances = alpha * variances + (1 - alpha) * deviations[:, 1:3].square()  # [B, 2, F]: y, x
        # per bin, shrunk toward the all-bin regression (a near-end onset in a few bins meets chance
        # correlations with the far end's fluctuations there; the sum over bins averages them out)
        shrunk_covariances = covariances + covariances.mean(-1, keepdim=True)  # [B, 3, F]
        shrunk_variances = variances + variances.mean(-1, keepdim=True) + config.power_floor  # [B, 2, F]
        echo_leakage = (shrunk_covariances[:, 0] / shrunk_variances[:, 0]).clamp(config.min_leakage, config.max_leakage)
        far_leakage = (shrunk_covariances[:, 1] / shrunk_variances[:, 1]).clamp(0.0, config.max_leakage)  # [B, F]
        coupling = (shrunk_covariances[:, 2] / shrunk_variances[:, 1]).clamp(0.0, config.max_leakage)  # [B, F]
        holds = torch.maximum(powers[:, 1:3], config.echo_release * holds)  # [B, 2, F]: y, x
        residual = torch.maximum(echo_leakage * holds[:, 0], far_leakage * holds[:, 1])
        # never more residual than the echo the microphone shows: an echo estimate without coupling
        # (a far end that does not reach the microphone) is the filter's error, not echo
        residual = config.overestimation * torch.minimum(residual, coupling * holds[:, 1])  # [B, F]
        posterior = powers[:, 0] / (residual + config.power_floor)  # [B, F]
        beta = config.decision_directed
        prior = beta * previous + (1 - beta) * torch.relu(posterior - 1.0)
        gain = (prior / (1.0 + prior)).clamp(min=self.gain_floor)  # [B, F]
        previous = gain.square() * posterior
        return gain, [means, covariances, variances, holds, previous]

    def gains(
        self, spec: torch.Tensor, statistics: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Frame by frame: ``spec [B, 3, 2, F, N]`` (error, echo estimate, far end on this stage's
        STFT grid: square-root Hann, ``win_length``, 50 % overlap) -> gains ``[B, F, N]`` for the
        error and the new statistics (:meth:`statistics_shapes`). For callers that already hold
        those spectra (a network after the linear stage)."""
        frames = []
        statistics = list(statistics)
        for frame in range(spec.shape[-1]):
            gain, statistics = self._gain(spec[..., frame], statistics)  # [B, F]
            frames.append(gain)
        return torch.stack(frames, dim=-1), statistics  # [B, F, N]

    def forward(self, error: torch.Tensor, echo: torch.Tensor, far_end: torch.Tensor) -> torch.Tensor:
        """Whole signals: ``error, echo, far_end [B, T]`` -> suppressed error ``[B, T]`` (no delay)."""
        length = error.shape[-1]
        # the frames after the end complete the last samples' overlap-add (as a stream fed zeros does)
        signals = F.pad(torch.stack([error, echo, far_end], dim=1), (0, self.stream_delay))  # [B, 3, T + delay]
        spec = self.stft(signals)  # [B, 3 signals, 2, F, N]
        statistics = [torch.zeros(shape, device=error.device) for _, shape in self.statistics_shapes(error.shape[0])]
        gain, _ = self.gains(spec, statistics)  # [B, F, N]
        suppressed = spec[:, :1] * gain[:, None, None]  # [B, 1, 2, F, N]
        return self.istft(suppressed, length=signals.shape[-1])[:, 0, :length]  # [B, T]

    def step(
        self, error: torch.Tensor, echo: torch.Tensor, far_end: torch.Tensor, states: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One hop: ``error, echo, far_end [B, hop]`` -> output ``[B, hop]`` (delayed by :attr:`stream_delay`)."""
        analysis, synthesis, *stats = states
        spec, analysis = self.stft.forward_step(torch.stack([error, echo, far_end], dim=1), analysis)  # [B, 3, 2, F, 1]
        gain, stats = self._gain(spec[..., 0], stats)  # [B, F]
        suppressed = spec[:, :1] * gain[:, None, None, :, None]  # [B, 1, 2, F, 1]
        output, synthesis = self.istft.forward_step(suppressed, synthesis)  # [B, 1, hop]
        return output[:, 0], [analysis, synthesis, *stats]
