"""Linear acoustic echo canceller: the partitioned-block frequency-domain Kalman filter on its own.

G. Enzner and P. Vary, "Frequency-domain adaptive Kalman filter for acoustic echo control in
hands-free telephones", Signal Processing 86(6), 2006; partitioned-block form after F. Kuech,
E. Mabande and G. Enzner, ICASSP 2014; double-talk-robust noise estimate from the echo leakage of
J.-M. Valin, IEEE TASLP 15(3), 2007. The algorithm lives in
:mod:`speechkit.frontend.adaptive_filter` (shared with ``complex_d3net_aec``'s linear stage);
this model wraps it in the model contract so that files, streams, ONNX exports and the realtime
engine run it like any echo canceller:

``x [B, 2, T]`` (channel 0 microphone, channel 1 far end, bulk delay already removed) -> the
filter's error signal ``[B, 1, 1, T]`` (the microphone minus the estimated linear echo). It has no
learned weights (an adaptive filter learns its echo path from each recording), so its
"checkpoint" stores the configuration only. It removes linear echo only: a nonlinear loudspeaker
or a too-short tail leaves residual echo, which is what the network stage of ``complex_d3net_aec``
(``linear_stage=True``) is for.

Latency: one block (``block_length`` samples, 16 ms for ``"16k"``), no look-ahead. The echo tail
it models after alignment is ``num_partitions * block_length`` samples minus the alignment
margin (``"16k"``: 320 ms - 5 ms). :attr:`LinearEchoCanceller.reference_lead` asks the caller
(:func:`speechkit.echo.cancel_echo_array`, ``speechkit aec``) to align the reference that many
samples early, so that a bulk-delay estimate a few milliseconds late does not cut the echo's
direct path.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from types import MappingProxyType

import torch

from ..errors import ConfigError
from ..frontend.adaptive_filter import KalmanFilterConfig, PartitionedKalmanFilter
from .aec_base import StreamingEchoCanceller
from .spec import FrontendSpec, StateSpec


@dataclasses.dataclass(frozen=True)
class LinearAECConfig:
    """Settings of :class:`LinearEchoCanceller` (defaults: the ``"16k"`` preset)."""

    block_length: int = 256  # samples per block (DFT size 2x); latency
    num_partitions: int = 20  # echo tail = num_partitions * block_length samples
    transition: float = 0.9995  # Markov factor A of the echo path per block
    noise_smoothing: float = 0.5
    leakage_uncertainty_gain: float = 0.1  # uncertainty pushed back in while the echo leaks
    alignment_margin_ms: float = 5.0  # reference aligned this much early (covers late delay estimates)
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ConfigError(f"LinearAECConfig.sample_rate must be positive, got {self.sample_rate}")
        if self.alignment_margin_ms < 0:
            raise ConfigError(f"alignment_margin_ms must not be negative, got {self.alignment_margin_ms}")
        self.filter_config()  # validates the filter fields

    def filter_config(self) -> KalmanFilterConfig:
        """The adaptive filter's settings."""
        return KalmanFilterConfig(
            block_length=self.block_length, num_partitions=self.num_partitions, transition=self.transition,
            noise_smoothing=self.noise_smoothing, leakage_uncertainty_gain=self.leakage_uncertainty_gain,
        )


class LinearEchoCanceller(StreamingEchoCanceller):
    """Linear AEC: ``x [B, 2, T]`` (microphone, far end) -> microphone minus linear echo ``[B, 1, 1, T]``."""

    name = "linear_aec"
    config_class = LinearAECConfig
    paper = (
        "G. Enzner, P. Vary, Frequency-domain adaptive Kalman filter for acoustic echo control in hands-free "
        "telephones, Signal Processing 86(6), 2006; F. Kuech, E. Mabande, G. Enzner, State-space architecture of "
        "the partitioned-block-based acoustic echo controller, ICASSP 2014"
    )
    presets = MappingProxyType(
        {
            # 16 kHz: 16 ms blocks, 20 partitions = 320 ms echo tail after alignment
            "16k": LinearAECConfig(),
            # small and fast, for tests
            "tiny": LinearAECConfig(block_length=64, num_partitions=4),
        }
    )

    def __init__(self, config: LinearAECConfig) -> None:
        super().__init__(config)
        self.adaptive_filter = PartitionedKalmanFilter(config.filter_config())

    # ----------------------------------------------------------------- description
    @property
    def frontend_spec(self) -> FrontendSpec:
        """Overlap-save framing: a causal rectangular-window STFT of ``2 L`` samples, hop ``L``."""
        length = self.config.block_length
        return FrontendSpec(kind="stft", window="rectangular", n_fft=2 * length, win_length=2 * length,
                            hop_length=length, center=False)

    @property
    def block_size(self) -> int:
        """One block of ``block_length`` samples."""
        return int(self.config.block_length)

    @property
    def stream_delay(self) -> int:
        """None: block ``t``'s output only needs input blocks up to ``t``."""
        return 0

    @property
    def reference_lead(self) -> int:
        """Samples by which the far end should lead the microphone's echo after bulk-delay alignment."""
        return int(round(self.config.alignment_margin_ms * 1e-3 * self.config.sample_rate))

    @property
    def tail_seconds(self) -> float:
        """Echo-path length the filter models, in seconds (including the alignment margin)."""
        return self.config.filter_config().tail_seconds(self.sample_rate)

    # ----------------------------------------------------------------- computation
    def forward_with_echo(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, 2, T]`` -> error (near end plus residual echo) and linear echo estimate, ``[B, 1, 1, T]`` each."""
        self._check_input(x)
        error, echo = self.adaptive_filter(x[:, 0], x[:, 1])  # [B, T] each
        return error[:, None, None], echo[:, None, None]  # [B, 1, 1, T] each

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, 2, T]`` (microphone, far end) -> the filter's error signal ``[B, 1, 1, T]``."""
        return self.forward_with_echo(x)[0]

    def state_specs(self, batch_size: int) -> list[StateSpec]:
        """The adaptive filter's states (far-end buffer and spectra, echo path, its uncertainty, powers)."""
        return [StateSpec(name, shape) for name, shape in self.adaptive_filter.state_shapes(batch_size)]

    def forward_step(
        self, x_block: torch.Tensor, state: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``k`` blocks: ``x_block [B, 2, k * L]`` -> error ``[B, 1, 1, k * L]`` and the new states."""
        self.check_step_length(x_block)
        length = self.block_size
        states = list(self.read_state(state))
        errors = []
        for start in range(0, x_block.shape[-1], length):
            error, _, states = self.adaptive_filter.step(
                x_block[:, 0, start : start + length], x_block[:, 1, start : start + length], states
            )  # [B, L]
            errors.append(error)
        output = errors[0] if len(errors) == 1 else torch.cat(errors, dim=-1)  # [B, k * L]
        return output[:, None, None], states  # [B, 1, 1, k * L]
