"""Pseudocomplex multidilated D3Net for joint acoustic echo cancellation and noise suppression.

K. N. Watcharasupat, T. N. T. Nguyen, W.-S. Gan, S. Zhao, B. Ma, "End-to-End Complex-Valued
Multidilated Convolutional Neural Network for Joint Acoustic Echo Cancellation and Noise
Suppression", ICASSP 2022 (arXiv:2110.00745).

What the paper states (abstract) and this model follows: end-to-end complex-valued network on
complex STFTs with no separate adaptive filter; building block = pseudocomplex extension of the
D3Net block (densely connected multidilated convolutions, Takahashi & Mitsufuji, CVPR 2021); no
pooling (every layer at full time-frequency resolution); a dual complex mask for joint echo and
noise suppression; 354 K parameters.

The full paper text was not available, so everything below is a documented design choice, not
a transcription:

* **Signal flow.** ``x [B, 2, T]`` (channel 0 microphone ``d``, channel 1 far-end reference
  ``x``) -> causal STFT of both -> complex features ``[B, 2, 2, F, N]`` -> power-law magnitude
  compression (exponent ``input_compression``, phase kept; only for the network input) -> causal
  3x3 complex input conv to ``channels`` -> ``num_d3_blocks`` pseudocomplex D3 blocks (each back
  to ``channels``) -> two 1-frame complex mask heads with bounded outputs.
* **Dual mask** (:func:`speechkit.frontend.masks.apply_dual_mask`): echo estimate
  ``E = M_e * X`` from the far-end spectrum (a complex per-bin gain rotates phase, i.e. it
  compensates echo-path offsets shorter than a frame: the "offset-compensating property"),
  then ``S = M_s * (D - E)`` removes residual echo and noise. Both masks are
  ``tanh_magnitude`` bounded: ``|M_e| < echo_mask_bound`` (2: the echo may be louder than the
  reference), ``|M_s| < speech_mask_bound`` (1: the second stage only attenuates). Both heads read
  the same trunk features; :meth:`ComplexD3NetAEC.forward_with_echo` also returns ``E`` for an
  echo-estimate loss term.
* **STFT.** 512-point sqrt-Hann window, hop 256 (32 ms / 16 ms at 16 kHz), causal framing
  (:mod:`speechkit.frontend.framing`). Why: the algorithmic latency is one window, 512 samples =
  32 ms, the budget; the longest window within it gives the finest frequency resolution (257
  bins) and the widest within-frame offset a complex mask can compensate; sqrt-Hann at 50 %
  overlap is a perfect-reconstruction analysis/synthesis pair. The compute of a full-resolution
  network scales with bins x frames per second, about the same for 512/256 (257 x 62.5) and
  320/160 (161 x 100), but 512/256 needs 62.5 instead of 100 streaming steps per second (less
  per-step overhead). The ``"conv"`` STFT backend keeps :meth:`forward_step` to plain real tensor
  ops (ONNX opset 17 export checked in the tests).
* **Compute.** Measured with ``torch.utils.flop_counter`` on 1 s of input: about 11.6 G real
  multiply-accumulates per second of audio for ``"paper"`` (a complex weight, 2 parameters, costs
  4 real MACs per output bin, at 257 bins x 62.5 frames/s).
* **Causality.** Every time-axis conv is left-padded (causal); frequency-axis convs are
  "same"-padded (within a frame). Streaming caches, per D2 block, one history per dense group
  ``x_i``, as long as its dilation reaches (plus the input conv's and the STFT/ISTFT states); offline :meth:`forward` runs the same code with zero
  caches, so a stream of :meth:`forward_step` calls equals the offline output delayed by
  ``win_length - hop_length`` samples.
* **D2/D3 blocks** (:mod:`speechkit.nn.d3net`): post-activation (conv -> norm -> split
  activation) so caches hold final features; D2 layer ``l`` sees the block input and earlier
  layers through a multidilated conv with dilations ``2**i`` on time AND frequency; the D2 output
  is the concatenation of its layer outputs; the D3 block densely connects its D2 blocks and
  compresses with a 1x1 complex conv. Bias is omitted before a norm.
* **Norm / activation.** Split batch norm (D3Net uses batch norm; in eval mode it is a per-channel
  affine map, causal and stateless) and leaky ReLU (slope 0.01) on real and imaginary parts
  separately. ``norm="frame"`` (per-frame layer norm) is available for frame-local training.
* **Paper preset size.** 354 K parameters cannot be decomposed uniquely; ``"paper"`` picks
  ``channels=24, num_d3_blocks=2, num_d2_blocks=2, num_layers=5, growth_rate=12`` (3x3 kernels):
  353,188 parameters (-0.23 %). Its causal time receptive field is
  ``2 + 2 * 2 * 2 * (2**5 - 1) = 250`` frames (4 s); the frequency receptive field covers the
  whole 257-bin spectrum.

* **Training** (``recipes/configs/aec_complex_d3net_16k.yaml``): echo scenarios with a residual
  far-end delay of 0-20 ms (the bulk delay is removed before the model, see below); loss
  :func:`recipes.trainer.echo_aware_loss`, a negative SNR with an energy floor 50 dB below the
  microphone, so far-end single talk (a zero near-end target) trains "output silence", plus 0.1 x
  the same loss on the echo estimate (``forward(x, return_echo=True)``).

* **Linear stage** (``linear_stage=True``; off in ``"paper"``, whose abstract argues against
  one): the partitioned-block frequency-domain Kalman filter of
  :mod:`speechkit.frontend.adaptive_filter` (blocks of one STFT hop, ``linear_partitions`` blocks
  of echo tail) runs first on microphone and far end; the network then sees four complex input
  channels, microphone, the filter's error signal, its echo estimate and the far end, and the
  dual mask starts from the error: ``S = M_s * (E_lin - M_e * X)``, echo estimate
  ``Y_lin + M_e * X``. The filter has no learned weights and runs without gradient (also in
  training); its state is part of the streaming state, so stream == offline and the ONNX
  export hold as without it. ``reference_lead`` asks callers to align the far end
  ``linear_alignment_margin_ms`` early. The input layout the model declares is unchanged
  (microphone, far end): the extra channels are computed inside.

* **Residual-echo suppressor in the linear stage** (``linear_suppression_db > 0``, preset
  ``"paper_linear_suppression"``): the error channel is scaled, frame by frame, by the gains of
  :class:`speechkit.frontend.echo_suppression.ResidualEchoSuppressor` (the suppressor of the
  bundled ``linear_aec_16k``), computed on the model's own STFT from the error, echo estimate and
  far-end spectra it already holds, so no latency is added; the network then refines the linear
  stage's full output. Its statistics are streaming state like the filter's.

* **Pass-through start** (``pass_through_init``): the mask heads start with zero weights and
  ``M_e = 0``, ``M_s`` real: 0.96 with the default ``speech_mask_bound`` 1 (the tanh then
  saturated), exactly 1 with a bound above ``1 / tanh(2)`` (e.g. 1.2, where the tanh's slope is
  0.37 instead of 0.07); the untrained model outputs the linear stage's output (the filter's
  error, suppressed if the suppressor is on), and training starts from its quality instead of
  from a random mask.

Expected input scaling: waveforms in [-1, 1] at 16 kHz, microphone and reference already aligned
to within a few milliseconds (``speechkit aec`` estimates and removes the bulk delay with
:func:`speechkit.delay.estimate_delay`), since a per-frame mask on ``X`` cannot reach echoes that
lag the reference by more than about a frame.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from types import MappingProxyType
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..frontend.adaptive_filter import KalmanFilterConfig, PartitionedKalmanFilter
from ..frontend.echo_suppression import ResidualEchoSuppressor, SuppressorConfig
from ..frontend.masks import COMPLEX_MASK_KINDS, apply_dual_mask, bounded_complex_mask
from ..frontend.stft import WINDOWS, STFTConfig, stft_pair
from ..nn.complex import (
    COMPLEX_ACTIVATIONS,
    COMPLEX_NORMS,
    ComplexConv2d,
    ComplexSplitActivation,
    compress_magnitude,
    make_complex_norm,
)
from ..nn.d3net import D3Block
from .aec_base import StreamingEchoCanceller
from .spec import FrontendSpec, StateSpec


@dataclasses.dataclass(frozen=True)
class ComplexD3NetAECConfig:
    """Hyper-parameters of :class:`ComplexD3NetAEC` (defaults: the ``"paper"`` preset)."""

    n_fft: int = 512  # DFT size; F = n_fft // 2 + 1 bins
    hop_length: int = 256  # STFT hop = streaming block size
    win_length: int = 512  # window = frame length (algorithmic latency)
    window: str = "sqrt_hann"
    input_compression: float = 0.3  # magnitude exponent of the network input (1: none)
    channels: int = 24  # complex channels of the trunk
    input_kernel: tuple[int, int] = (3, 3)  # (freq, time) kernel of the input conv
    num_d3_blocks: int = 2
    num_d2_blocks: int = 2  # D2 blocks per D3 block
    num_layers: int = 5  # layers per D2 block (dilations 1 .. 2**(num_layers-1))
    growth_rate: int = 12  # complex channels added per D2 layer
    kernel_size: tuple[int, int] = (3, 3)  # (freq, time) kernel of the multidilated convs
    dilation_base: int = 2
    dilate_freq: bool = True  # dilate along frequency as well as time
    norm: str = "batch"  # "batch", "frame" or "none"
    activation: str = "leaky_relu"
    mask_kernel: tuple[int, int] = (3, 1)  # (freq, time) kernel of the mask heads; time must be 1
    mask_kind: str = "tanh_magnitude"
    echo_mask_bound: float = 2.0
    speech_mask_bound: float = 1.0
    linear_stage: bool = False  # adaptive filter in front; network input (mic, error, echo estimate, far end)
    linear_partitions: int = 20  # echo tail of the linear stage, in hops (20 x 16 ms = 320 ms)
    linear_transition: float = 0.9995  # Markov factor of the linear stage's echo path per hop
    linear_alignment_margin_ms: float = 5.0  # far end aligned this much early for the linear stage
    #: > 0: the residual-echo suppressor of :mod:`speechkit.frontend.echo_suppression` (attenuation
    #: floor in dB) scales the filter's error on the model's own STFT before the network: the
    #: primary input is then the linear stage's full output (filter + suppressor), 0: the error
    linear_suppression_db: float = 0.0
    #: start the mask heads as a pass-through (zero weights; speech mask 0.96 or 1, echo mask 0), so the
    #: untrained model outputs the linear stage's error signal (or the microphone) and training
    #: only has to learn the residual suppression; affects initialisation only
    pass_through_init: bool = False
    sample_rate: int = 16000
    #: fields of older checkpoints that are ignored on load (the STFT backend is chosen at
    #: inference/export time: :meth:`~speechkit.models.base.SpeechModel.set_stft_backend`)
    removed_fields: ClassVar[tuple[str, ...]] = ("stft_backend",)

    def __post_init__(self) -> None:
        positive = ("n_fft", "hop_length", "win_length", "channels", "num_d3_blocks", "num_d2_blocks",
                    "num_layers", "growth_rate", "dilation_base", "sample_rate")
        for name in positive:
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"ComplexD3NetAECConfig.{name} must be positive, got {getattr(self, name)}")
        if self.window not in WINDOWS:
            raise ConfigError(f"unknown window {self.window!r} (known: {', '.join(WINDOWS)})")
        if self.norm not in COMPLEX_NORMS:
            raise ConfigError(f"unknown norm {self.norm!r} (known: {', '.join(COMPLEX_NORMS)})")
        if self.activation not in COMPLEX_ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r} (known: {', '.join(COMPLEX_ACTIVATIONS)})")
        if self.mask_kind not in COMPLEX_MASK_KINDS:
            raise ConfigError(f"unknown mask_kind {self.mask_kind!r} (known: {', '.join(COMPLEX_MASK_KINDS)})")
        if self.mask_kernel[1] != 1:
            raise ConfigError(f"the mask heads look at one frame; mask_kernel time size must be 1, got {self.mask_kernel[1]}")
        if self.input_kernel[1] < 2 or self.kernel_size[1] < 2:
            raise ConfigError("input_kernel and kernel_size need a time size of at least 2 frames")
        if self.input_compression <= 0 or self.echo_mask_bound <= 0 or self.speech_mask_bound <= 0:
            raise ConfigError("input_compression and the mask bounds must be positive")
        if self.linear_alignment_margin_ms < 0:
            raise ConfigError(f"linear_alignment_margin_ms must not be negative, got {self.linear_alignment_margin_ms}")
        self.linear_filter_config()  # validates the linear-stage fields
        if self.pass_through_init and self.mask_kind not in ("tanh_magnitude", "split_tanh"):
            raise ConfigError(f"pass_through_init needs a tanh mask (tanh_magnitude or split_tanh), got {self.mask_kind!r}")
        if self.linear_suppression_db < 0:
            raise ConfigError(f"linear_suppression_db must not be negative, got {self.linear_suppression_db}")
        if self.linear_suppression_db > 0:
            if not self.linear_stage:
                raise ConfigError("linear_suppression_db needs linear_stage=True (it suppresses the filter's residual)")
            if self.window != "sqrt_hann" or self.win_length != self.n_fft or 2 * self.hop_length != self.win_length:
                raise ConfigError("the residual-echo suppressor runs on the model's STFT, which must then be "
                                  "square-root Hann with win_length = n_fft = 2 * hop_length")
            self.suppressor_config()

    @property
    def num_network_inputs(self) -> int:
        """Complex input channels of the network: 4 with the linear stage, else 2."""
        return 4 if self.linear_stage else 2

    def linear_filter_config(self) -> KalmanFilterConfig:
        """Settings of the linear stage (blocks of one hop)."""
        return KalmanFilterConfig(
            block_length=self.hop_length, num_partitions=self.linear_partitions, transition=self.linear_transition
        )

    def suppressor_config(self) -> SuppressorConfig:
        """The residual-echo suppressor's settings on the model's window (``linear_suppression_db > 0``)."""
        return SuppressorConfig(max_suppression_db=self.linear_suppression_db).with_window(self.win_length)

    def stft_config(self) -> STFTConfig:
        """The causal STFT settings of the model (built with the exportable ``"conv"`` backend)."""
        return STFTConfig(
            n_fft=self.n_fft, hop_length=self.hop_length, win_length=self.win_length, window=self.window,
            padding="causal", backend="conv",
        )


class ComplexD3NetAEC(StreamingEchoCanceller):
    """Joint AEC + noise suppression: ``x [B, 2, T]`` (mic, far end) -> near-end ``[B, 1, 1, T]``.

    Causal; streams one hop (``hop_length`` samples of both channels) per :meth:`forward_step`,
    with an algorithmic latency of ``win_length`` samples (32 ms for the presets).
    """

    name = "complex_d3net_aec"
    config_class = ComplexD3NetAECConfig
    paper = (
        "K. N. Watcharasupat, T. N. T. Nguyen, W.-S. Gan, S. Zhao, B. Ma, End-to-End Complex-Valued "
        "Multidilated Convolutional Neural Network for Joint Acoustic Echo Cancellation and Noise "
        "Suppression, ICASSP 2022 (arXiv:2110.00745)"
    )
    presets = MappingProxyType(
        {
            # 354 K-parameter configuration (the paper's size; layout is our design, see docstring)
            "paper": ComplexD3NetAECConfig(),
            # the same with per-frame layer norm (frame-local in training too)
            "paper_frame_norm": ComplexD3NetAECConfig(norm="frame"),
            # the paper-size network behind the linear adaptive-filter stage
            "paper_linear": ComplexD3NetAECConfig(linear_stage=True),
            # the same behind the filter and the residual-echo suppressor (the network refines their output)
            "paper_linear_suppression": ComplexD3NetAECConfig(linear_stage=True, linear_suppression_db=30.0),
            # small and fast, for tests
            "tiny": ComplexD3NetAECConfig(
                n_fft=128, hop_length=64, win_length=128, channels=4, num_d3_blocks=1,
                num_d2_blocks=2, num_layers=2, growth_rate=2,
            ),
            "tiny_linear": ComplexD3NetAECConfig(
                n_fft=128, hop_length=64, win_length=128, channels=4, num_d3_blocks=1,
                num_d2_blocks=2, num_layers=2, growth_rate=2, linear_stage=True, linear_partitions=4,
            ),
            "tiny_linear_suppression": ComplexD3NetAECConfig(
                n_fft=128, hop_length=64, win_length=128, channels=4, num_d3_blocks=1,
                num_d2_blocks=2, num_layers=2, growth_rate=2, linear_stage=True, linear_partitions=4,
                linear_suppression_db=30.0,
            ),
        }
    )

    def __init__(self, config: ComplexD3NetAECConfig) -> None:
        super().__init__(config)
        self.stft, self.istft = stft_pair(config.stft_config())
        self.linear_filter = PartitionedKalmanFilter(config.linear_filter_config()) if config.linear_stage else None
        self.linear_suppressor = (
            ResidualEchoSuppressor(config.suppressor_config()) if config.linear_suppression_db > 0 else None
        )
        channels = config.channels
        self.input_conv = ComplexConv2d(
            config.num_network_inputs, channels, config.input_kernel, bias=config.norm == "none"
        )
        self.input_norm = make_complex_norm(config.norm, channels)
        self.input_activation = ComplexSplitActivation(config.activation, channels)
        self.d3_blocks = nn.ModuleList(
            D3Block(
                channels, channels, config.num_d2_blocks, config.growth_rate, config.num_layers,
                config.kernel_size, config.dilation_base, config.dilate_freq, config.norm, config.activation,
            )
            for _ in range(config.num_d3_blocks)
        )
        self.echo_mask_head = ComplexConv2d(channels, 1, config.mask_kernel)
        self.speech_mask_head = ComplexConv2d(channels, 1, config.mask_kernel)
        if config.pass_through_init:
            self._init_pass_through()

    @torch.no_grad()
    def _init_pass_through(self) -> None:
        """Zero both mask heads' weights; bias the echo mask to 0 and the speech mask to a real gain.

        The gain is 1 when ``speech_mask_bound`` allows it off the tanh's saturation
        (``bound > 1 / tanh(2)``: raw ``atanh(1 / bound)``), else ``tanh(2) * bound`` (raw 2; 0.96
        for the default bound 1). The output then starts as that gain times the primary input (the
        linear stage's output, or the microphone without the linear stage); the heads' weights get
        gradients from the first step, the trunk's from the second.
        """
        for head in (self.echo_mask_head, self.speech_mask_head):
            head.weight.zero_()
            head.bias.zero_()
        bound = self.config.speech_mask_bound
        raw = math.atanh(1.0 / bound) if bound * math.tanh(2.0) > 1.0 else 2.0
        self.speech_mask_head.bias[0].fill_(raw)  # real part of the raw speech mask

    # ----------------------------------------------------------------- description
    @property
    def frontend_spec(self) -> FrontendSpec:
        """The causal STFT, with the power-law compression of the network input."""
        config = self.config
        return FrontendSpec(
            kind="stft", window=config.window, n_fft=config.n_fft, win_length=config.win_length,
            hop_length=config.hop_length, center=False, compression=float(config.input_compression),
        )

    @property
    def block_size(self) -> int:
        """One STFT hop."""
        return int(self.config.hop_length)

    @property
    def stream_delay(self) -> int:
        """``win_length - hop_length`` samples (causal overlap-add)."""
        return self.stft.stream_delay

    @property
    def reference_lead(self) -> int:
        """Samples by which the far end should lead the echo after alignment (the linear stage's margin)."""
        if not self.config.linear_stage:
            return 0
        return int(round(self.config.linear_alignment_margin_ms * 1e-3 * self.config.sample_rate))

    @property
    def num_freqs(self) -> int:
        """STFT bins ``F``."""
        return self.stft.num_freqs

    def receptive_field_frames(self) -> int:
        """Past STFT frames (besides the current one) the output of a frame depends on."""
        config = self.config
        input_context = self.input_conv.time_context
        per_d2 = sum(
            (config.kernel_size[1] - 1) * config.dilation_base**layer for layer in range(config.num_layers)
        )
        return input_context + config.num_d3_blocks * config.num_d2_blocks * per_d2

    # ----------------------------------------------------------------- computation
    def _network(
        self, spec: torch.Tensor, states: Iterable[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Spectra ``[B, C, 2, F, N]`` after ``states`` (input history, D2 histories) -> near end, echo.

        ``C`` is 2 (microphone, far end) or, with the linear stage, 4 (microphone, error, echo
        estimate, far end).

        Takes exactly its states (:meth:`_network_state_shapes`) from ``states`` (an iterator may
        hold more) and returns the near-end and echo-estimate spectra ``[B, 1, 2, F, N]`` and the
        new states.
        """
        states = iter(states)
        features = compress_magnitude(spec, self.config.input_compression)  # [B, C, 2, F, N]
        padded = torch.cat([next(states), features], dim=-1)  # [B, C, 2, F, ctx + N]
        new_states = [padded[..., padded.shape[-1] - self.input_conv.time_context :]]  # [B, C, 2, F, ctx]
        hidden = self.input_activation(self.input_norm(self.input_conv.forward_valid(padded)))  # [B, C, 2, F, N]
        for block in self.d3_blocks:
            histories = [next(states) for _ in range(block.num_histories)]
            hidden, histories = block.forward_step(hidden, histories)  # [B, C, 2, F, N]
            new_states.extend(histories)
        config = self.config
        echo_mask = bounded_complex_mask(
            self.echo_mask_head.forward_valid(hidden), config.mask_kind, config.echo_mask_bound
        )  # [B, 1, 2, F, N]
        speech_mask = bounded_complex_mask(
            self.speech_mask_head.forward_valid(hidden), config.mask_kind, config.speech_mask_bound
        )  # [B, 1, 2, F, N]
        primary = 1 if config.linear_stage else 0  # the linear stage's error signal, else the microphone
        near_end, echo = apply_dual_mask(spec[:, primary : primary + 1], spec[:, -1:], echo_mask, speech_mask)
        if config.linear_stage:
            echo = echo + spec[:, 2:3]  # + the linear echo estimate: [B, 1, 2, F, N]
        return near_end, echo, new_states

    def _network_state_shapes(self, batch_size: int) -> list[tuple[str, tuple[int, ...]]]:
        freqs = self.num_freqs
        inputs = self.config.num_network_inputs
        specs = [("input_history", (batch_size, inputs, 2, freqs, self.input_conv.time_context))]
        for block_index, block in enumerate(self.d3_blocks):
            specs.extend(
                (f"d3_{block_index}_{suffix}_history", shape) for suffix, shape in block.history_specs(batch_size, freqs)
            )
        return specs

    def _input_spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, 2, T]`` -> the network's input spectra ``[B, C, 2, F, N]``.

        Without the linear stage, the STFT of ``x``. With it, the STFT of (microphone, error, echo
        estimate, far end): the filter runs without gradient over the ``N * hop`` samples the
        causal frames cover (zeros after ``T``, as a stream sees them), so the last frame equals
        the streamed one.
        """
        if self.linear_filter is None:
            return self.stft(x)  # [B, 2, 2, F, N]
        length = x.shape[-1]
        frames = self.stft.num_frames(length)
        padded = F.pad(x, (0, frames * self.config.hop_length - length))  # [B, 2, N * hop]
        with torch.no_grad():
            error, echo = self.linear_filter(padded[:, 0], padded[:, 1])  # [B, N * hop] each
        signals = torch.stack([padded[:, 0], error, echo, padded[:, 1]], dim=1)  # [B, 4, N * hop]
        spec = self.stft(signals)[..., :frames]  # [B, 4, 2, F, N]
        if self.linear_suppressor is None:
            return spec
        statistics = [spec.new_zeros(shape) for _, shape in self.linear_suppressor.statistics_shapes(x.shape[0])]
        return self._suppress_residual(spec, statistics)[0]

    def _suppress_residual(
        self, spec: torch.Tensor, statistics: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Scale the error channel of ``spec [B, 4, 2, F, N]`` by the residual-echo suppressor's gains."""
        with torch.no_grad():
            gain, statistics = self.linear_suppressor.gains(spec[:, 1:4], statistics)  # [B, F, N]
        suppressed = spec[:, 1:2] * gain[:, None, None]  # [B, 1, 2, F, N]
        return torch.cat([spec[:, :1], suppressed, spec[:, 2:]], dim=1), statistics  # [B, 4, 2, F, N]

    def forward_with_echo(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, 2, T]`` -> near-end estimate and echo estimate, each ``[B, 1, 1, T]``."""
        self._check_input(x)
        length = x.shape[-1]
        spec = self._input_spectrum(x)  # [B, C, 2, F, N]
        zeros = [spec.new_zeros(shape) for _, shape in self._network_state_shapes(x.shape[0])]
        near_end, echo, _ = self._network(spec, zeros)  # [B, 1, 2, F, N] each
        both = self.istft(torch.cat([near_end, echo], dim=1), length=length)  # [B, 2, T]
        return both[:, 0:1].unsqueeze(1), both[:, 1:2].unsqueeze(1)  # [B, 1, 1, T] each

    def forward(
        self, x: torch.Tensor, return_echo: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x [B, 2, T]`` (microphone, far end) -> near-end speech ``[B, 1, 1, T]``.

        With ``return_echo`` it returns :meth:`forward_with_echo`'s pair instead (near end, echo
        estimate), through ``forward`` so a DistributedDataParallel wrapper sees the call.
        """
        if return_echo:
            return self.forward_with_echo(x)
        self._check_input(x)
        length = x.shape[-1]
        spec = self._input_spectrum(x)  # [B, C, 2, F, N]
        zeros = [spec.new_zeros(shape) for _, shape in self._network_state_shapes(x.shape[0])]
        near_end, _, _ = self._network(spec, zeros)  # [B, 1, 2, F, N]
        return self.istft(near_end, length=length).unsqueeze(1)  # [B, 1, 1, T]

    def forward_chunked(self, x: torch.Tensor, chunk_frames: int = 256) -> torch.Tensor:
        """:meth:`forward` in bounded memory: the network runs ``chunk_frames`` STFT frames at a time.

        The caches carry the causal context between chunks, so the result equals :meth:`forward`
        (to float rounding) while activations stay ``O(chunk_frames)`` instead of ``O(T)``.
        ``x [B, 2, T] -> [B, 1, 1, T]``.
        """
        self._check_input(x)
        if chunk_frames <= 0:
            raise ConfigError(f"chunk_frames must be positive, got {chunk_frames}")
        length = x.shape[-1]
        spec = self._input_spectrum(x)  # [B, C, 2, F, N]
        states = [spec.new_zeros(shape) for _, shape in self._network_state_shapes(x.shape[0])]
        pieces = []
        for start in range(0, spec.shape[-1], chunk_frames):
            near_end, _, states = self._network(spec[..., start : start + chunk_frames], states)  # [B, 1, 2, F, n]
            pieces.append(near_end)
        return self.istft(torch.cat(pieces, dim=-1), length=length).unsqueeze(1)  # [B, 1, 1, T]

    # ----------------------------------------------------------------- streaming
    def state_specs(self, batch_size: int) -> list[StateSpec]:
        """Linear-stage states (if any), STFT buffer, input-conv and D2 histories, iSTFT overlap, in step order."""
        overlap = self.config.win_length - self.config.hop_length
        linear = [] if self.linear_filter is None else list(self.linear_filter.state_shapes(batch_size))
        if self.linear_suppressor is not None:
            linear += self.linear_suppressor.statistics_shapes(batch_size)
        specs = [
            *((f"linear_{name}", shape) for name, shape in linear),
            ("stft_buffer", (batch_size, self.config.num_network_inputs, overlap)),
            *self._network_state_shapes(batch_size),
            ("istft_overlap", (batch_size, 1, overlap)),
        ]
        return [StateSpec(name, shape) for name, shape in specs]

    def forward_step(
        self, x_block: torch.Tensor, state: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``k`` hops: ``x_block [B, 2, k * hop_length]`` -> near end ``[B, 1, 1, k * hop_length]`` and new states.

        ``k = 1`` is the contract's ``block_size``; several hops per call give the same samples
        with the network run once over ``k`` frames (fewer, larger operations). Use in eval mode
        (batch norm then uses its running statistics, like the offline output).
        """
        self.check_step_length(x_block, "hop")
        hop = self.block_size
        states = self.read_state(state)
        linear_states = suppressor_states = None
        if self.linear_filter is not None:
            linear_states = [next(states) for _ in self.linear_filter.STATE_NAMES]
        if self.linear_suppressor is not None:
            suppressor_states = [next(states) for _ in self.linear_suppressor.statistics_shapes(1)]
        stft_state, frames = next(states), []
        for start in range(0, x_block.shape[-1], hop):
            block = x_block[..., start : start + hop]  # [B, 2, hop]
            if linear_states is not None:
                error, echo, linear_states = self.linear_filter.step(block[:, 0], block[:, 1], linear_states)
                block = torch.stack([block[:, 0], error, echo, block[:, 1]], dim=1)  # [B, 4, hop]
            frame, stft_state = self.stft.forward_step(block, stft_state)  # [B, C, 2, F, 1]
            frames.append(frame)
        spec = frames[0] if len(frames) == 1 else torch.cat(frames, dim=-1)  # [B, C, 2, F, k]
        if suppressor_states is not None:
            spec, suppressor_states = self._suppress_residual(spec, suppressor_states)
        near_end, _, network_states = self._network(spec, states)  # [B, 1, 2, F, k]
        istft_state, blocks = next(states), []
        for index in range(near_end.shape[-1]):
            block, istft_state = self.istft.forward_step(near_end[..., index : index + 1], istft_state)  # [B, 1, hop]
            blocks.append(block)
        output = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=-1)  # [B, 1, k * hop]
        new_states = [*(linear_states or []), *(suppressor_states or []), stft_state, *network_states, istft_state]
        return output.unsqueeze(1), new_states  # [B, 1, 1, k * hop]
