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
"checkpoint" stores the configuration only. The filter removes linear echo only: a nonlinear
loudspeaker, a too-short tail or a filter still converging leaves residual echo. With
``residual_suppression_db > 0`` (the ``"16k"`` preset: 30 dB) a classical residual-echo
suppressor (:mod:`speechkit.frontend.echo_suppression`: spectral gains from the echo leakage)
follows the filter; learning what is left is the network stage of ``complex_d3net_aec``
(``linear_stage=True``).

Latency: one block (``block_length`` samples, 16 ms for ``"16k"``), no look-ahead, plus the
suppressor's ``suppression_window / 2`` (8 ms) when it is on. The echo tail
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
from ..frontend.echo_suppression import ResidualEchoSuppressor, SuppressorConfig
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
    residual_suppression_db: float = 0.0  # largest attenuation of the residual-echo suppressor; 0: none
    suppression_overestimation: float = 2.0  # factor on the residual-echo estimate
    suppression_window: int = 256  # suppressor STFT window (hop: half); adds half of it to the latency

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ConfigError(f"LinearAECConfig.sample_rate must be positive, got {self.sample_rate}")
        if self.alignment_margin_ms < 0:
            raise ConfigError(f"alignment_margin_ms must not be negative, got {self.alignment_margin_ms}")
        if self.residual_suppression_db < 0:
            raise ConfigError(f"residual_suppression_db must not be negative, got {self.residual_suppression_db}")
        self.filter_config()  # validates the filter fields
        if self.residual_suppression_db > 0:
            hop_length = self.suppressor_config().hop_length
            if self.block_length % hop_length:
                raise ConfigError(f"block_length {self.block_length} must be a multiple of the suppressor's hop "
                                  f"{hop_length} (suppression_window / 2)")

    def filter_config(self) -> KalmanFilterConfig:
        """The adaptive filter's settings."""
        return KalmanFilterConfig(
            block_length=self.block_length, num_partitions=self.num_partitions, transition=self.transition,
            noise_smoothing=self.noise_smoothing, leakage_uncertainty_gain=self.leakage_uncertainty_gain,
        )

    def suppressor_config(self) -> SuppressorConfig:
        """The residual-echo suppressor's settings (used when ``residual_suppression_db > 0``)."""
        base = SuppressorConfig(max_suppression_db=self.residual_suppression_db,
                                overestimation=self.suppression_overestimation)
        return base.with_window(self.suppression_window)  # time constants of the default window kept


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
            # 16 kHz: 16 ms blocks, 20 partitions = 320 ms echo tail after alignment, residual-echo
            # suppression down to -30 dB (8 ms more latency)
            "16k": LinearAECConfig(residual_suppression_db=30.0),
            # the adaptive filter alone (linear echo only; 16 ms)
            "16k_filter_only": LinearAECConfig(),
            # small and fast, for tests
            "tiny": LinearAECConfig(block_length=64, num_partitions=4),
            "tiny_suppression": LinearAECConfig(block_length=64, num_partitions=4, residual_suppression_db=30.0,
                                                suppression_window=64),
        }
    )

    def __init__(self, config: LinearAECConfig) -> None:
        super().__init__(config)
        self.adaptive_filter = PartitionedKalmanFilter(config.filter_config())
        self.suppressor = (
            ResidualEchoSuppressor(config.suppressor_config()) if config.residual_suppression_db > 0 else None
        )

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
        """The suppressor's overlap-add delay (``suppression_window / 2``), else none: block ``t``'s
        output only needs input blocks up to ``t``."""
        return 0 if self.suppressor is None else self.suppressor.stream_delay

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
        """``x [B, 2, T]`` (microphone, far end) -> near-end estimate ``[B, 1, 1, T]``: the filter's error,
        residual echo suppressed when the suppressor is on."""
        if self.suppressor is None:
            return self.forward_with_echo(x)[0]
        self._check_input(x)
        length = x.shape[-1]
        # the filter also runs over the suppressor's overlap after the end, as a stream fed zeros does
        padded = torch.nn.functional.pad(x, (0, self.suppressor.stream_delay))  # [B, 2, T + delay]
        error, echo = self.adaptive_filter(padded[:, 0], padded[:, 1])  # [B, T + delay] each
        return self.suppressor(error, echo, padded[:, 1])[:, None, None, :length]  # [B, 1, 1, T]

    def state_specs(self, batch_size: int) -> list[StateSpec]:
        """The adaptive filter's states (far-end buffer and spectra, echo path, its uncertainty, powers),
        then the suppressor's (STFT buffers, leakage statistics, held powers, previous gain)."""
        shapes = list(self.adaptive_filter.state_shapes(batch_size))
        if self.suppressor is not None:
            shapes += self.suppressor.state_shapes(batch_size)
        return [StateSpec(name, shape) for name, shape in shapes]

    def forward_step(
        self, x_block: torch.Tensor, state: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``k`` blocks: ``x_block [B, 2, k * L]`` -> output ``[B, 1, 1, k * L]`` and the new states."""
        self.check_step_length(x_block)
        length = self.block_size
        states = list(self.read_state(state))
        filter_count = len(self.adaptive_filter.state_shapes(1))
        filter_states, suppressor_states = states[:filter_count], states[filter_count:]
        outputs = []
        for start in range(0, x_block.shape[-1], length):
            far_end = x_block[:, 1, start : start + length]  # [B, L]
            error, echo, filter_states = self.adaptive_filter.step(
                x_block[:, 0, start : start + length], far_end, filter_states
            )  # [B, L] each
            if self.suppressor is None:
                outputs.append(error)
                continue
            hop_length = self.suppressor.config.hop_length
            for hop in range(0, length, hop_length):
                part = slice(hop, hop + hop_length)
                output, suppressor_states = self.suppressor.step(
                    error[:, part], echo[:, part], far_end[:, part], suppressor_states
                )  # [B, hop]
                outputs.append(output)
        output = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)  # [B, k * L]
        return output[:, None, None], [*filter_states, *suppressor_states]  # [B, 1, 1, k * L]
