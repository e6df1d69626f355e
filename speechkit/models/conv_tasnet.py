"""Conv-TasNet: a fully convolutional time-domain separation / enhancement network.

Y. Luo and N. Mesgarani, "Conv-TasNet: Surpassing Ideal Time-Frequency Magnitude Masking for
Speech Separation", IEEE/ACM TASLP 27(8):1256-1266, 2019 (arXiv:1809.07454).

Learned encoder -> temporal convolutional network (TCN) mask estimator -> masked features ->
learned decoder. State-dict keys mirror asteroid's ``ConvTasNet`` (``encoder.filterbank._filters``,
``masker.bottleneck.{0,1}``, ``masker.TCN.i.shared_block.{0..5}``, ``masker.TCN.i.res_conv``,
``masker.TCN.i.skip_conv``, ``masker.mask_net.{0,1}``, ``decoder.filterbank._filters``), so
:mod:`speechkit.convert.asteroid` is a near-identity mapping.

Norm names follow the paper, not asteroid: ``"cLN"`` is the true cumulative layer norm (asteroid's
``cgLN``) and ``"chanLN"`` the per-frame channel norm (asteroid's ``cLN``).

Multi-channel input ``[B, C, T]`` is processed channel by channel (channels folded into the batch),
giving ``[B, S, C, T]``. With ``input_channels = M > 1`` the encoder instead mixes the M microphones
(the multi-channel Conv-TasNet encoder of R. Gu et al., arXiv:1905.06286) and the model maps
``[B, M, T]`` to one output channel ``[B, S, 1, T]`` (the reference microphone's target).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from types import MappingProxyType

import torch
from torch import nn

from ..errors import ConfigError
from ..frontend import framing
from ..frontend.filterbank import LearnedDecoder, LearnedEncoder
from ..frontend.masks import bounded_real_mask
from ..frontend.stft_filterbank import STFTDecoder, STFTEncoder
from ..nn.conv import DilatedDepthwiseConv1d
from ..nn.norms import CAUSAL_NORM_TYPES, NORM_TYPES, CumulativeLayerNorm, make_norm
from ..tasks import InputLayout, Task
from .base import SpeechModel
from .spec import FrontendSpec, InferenceSpec, StateSpec

#: encoder/decoder pairs: the paper's learned basis, or the fixed causal STFT (see STFTEncoder)
ENCODERS = ("learned", "stft")
#: mask nonlinearities of the config (:func:`speechkit.frontend.masks.bounded_real_mask`; softmax across sources)
MASK_ACTIVATIONS = ("sigmoid", "relu", "softmax", "tanh", "linear")


@dataclasses.dataclass(frozen=True)
class ConvTasNetConfig:
    """Conv-TasNet hyper-parameters (paper symbols in brackets); defaults are the paper's best model."""

    n_filters: int = 512  # [N] encoder/decoder filters
    kernel_size: int = 16  # [L] filter length in samples
    stride: int = 8  # encoder hop in samples (L / 2 in the paper)
    bn_chan: int = 128  # [B] bottleneck channels
    hid_chan: int = 512  # [H] channels inside each conv block
    skip_chan: int = 128  # [Sc] skip-connection channels (0: use the residual path output)
    conv_kernel_size: int = 3  # [P] depthwise kernel size
    n_blocks: int = 8  # [X] blocks per repeat, dilations 1 .. 2**(X-1)
    n_repeats: int = 3  # [R]
    n_src: int = 2  # [C] output sources
    mask_act: str = "sigmoid"  # one of MASK_ACTIVATIONS
    norm_type: str = "gLN"  # "gLN", "cLN" (true cumulative) or "chanLN" (per frame)
    causal: bool = False
    sample_rate: int = 8000
    input_channels: int = 1  # [M] microphones mixed by the encoder (1: every input channel on its own)
    # causal only: the mask of encoder frame f is estimated from frames <= f + lookahead_frames,
    # adding lookahead_frames * stride samples of algorithmic latency (0: the paper's causal model)
    lookahead_frames: int = 0
    # "causal": speechkit's framing (streams); "asteroid": asteroid's unpadded framing of the learned
    # filterbank, offline only (set by speechkit.convert.asteroid: imported models reproduce asteroid)
    framing: str = "causal"
    # "learned": the paper's free basis; "stft": the fixed causal STFT with n_fft = kernel_size and
    # hop = stride, masked by a real mask on its n_filters = kernel_size // 2 + 1 bins, the mask
    # estimator reading the magnitude compressed by magnitude_exponent
    encoder: str = "learned"
    stft_window: str = "hann"
    magnitude_exponent: float = 0.3

    def __post_init__(self) -> None:
        positive = ("n_filters", "kernel_size", "stride", "bn_chan", "hid_chan", "conv_kernel_size",
                    "n_blocks", "n_repeats", "n_src", "sample_rate", "input_channels")
        for name in positive:
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"ConvTasNetConfig.{name} must be positive, got {getattr(self, name)}")
        if self.skip_chan < 0:
            raise ConfigError(f"ConvTasNetConfig.skip_chan must be >= 0, got {self.skip_chan}")
        if self.lookahead_frames < 0:
            raise ConfigError(f"ConvTasNetConfig.lookahead_frames must be >= 0, got {self.lookahead_frames}")
        if self.lookahead_frames and not self.causal:
            raise ConfigError("lookahead_frames applies to a causal Conv-TasNet only (causal=True)")
        if framing.check_framing(self.framing) != "causal" and self.lookahead_frames:
            raise ConfigError(f"lookahead_frames needs framing='causal', not {self.framing!r}")
        if self.stride > self.kernel_size:
            raise ConfigError(f"stride {self.stride} must not exceed kernel_size {self.kernel_size}")
        if self.encoder not in ENCODERS:
            raise ConfigError(f"unknown encoder {self.encoder!r}; use one of {', '.join(ENCODERS)}")
        if self.encoder == "stft":
            if self.n_filters != self.kernel_size // 2 + 1:
                raise ConfigError(
                    f"an STFT encoder has kernel_size // 2 + 1 = {self.kernel_size // 2 + 1} bins, so "
                    f"n_filters must be that, got {self.n_filters}"
                )
            if self.input_channels != 1:
                raise ConfigError("the STFT encoder takes one channel (input_channels=1)")
            if self.framing != "causal":
                raise ConfigError(f"framing {self.framing!r} applies to the learned encoder only")
        if self.mask_act not in MASK_ACTIVATIONS:
            raise ConfigError(f"unknown mask_act {self.mask_act!r}; use one of {', '.join(MASK_ACTIVATIONS)}")
        if self.norm_type not in NORM_TYPES:
            raise ConfigError(f"unknown norm_type {self.norm_type!r}; use one of {', '.join(NORM_TYPES)}")
        if self.causal and self.norm_type not in CAUSAL_NORM_TYPES:
            raise ConfigError(
                f"a causal Conv-TasNet needs a causal norm ({' or '.join(CAUSAL_NORM_TYPES)}), "
                f"not {self.norm_type!r}"
            )
        if not self.causal and self.conv_kernel_size % 2 == 0:
            raise ConfigError("a non-causal Conv-TasNet needs an odd conv_kernel_size for 'same' padding")


class TCNBlock(nn.Module):
    """One 1-D conv block: 1x1 conv, PReLU, norm, dilated depthwise conv, PReLU, norm, 1x1 heads."""

    def __init__(self, config: ConvTasNetConfig, dilation: int) -> None:
        super().__init__()
        hidden = config.hid_chan
        self.shared_block = nn.Sequential(
            nn.Conv1d(config.bn_chan, hidden, 1),
            nn.PReLU(),
            make_norm(config.norm_type, hidden),
            DilatedDepthwiseConv1d(hidden, config.conv_kernel_size, dilation, causal=config.causal),
            nn.PReLU(),
            make_norm(config.norm_type, hidden),
        )
        self.res_conv = nn.Conv1d(hidden, config.bn_chan, 1)
        self.skip_conv = nn.Conv1d(hidden, config.skip_chan, 1) if config.skip_chan else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x [B, bn_chan, F]`` -> residual ``[B, bn_chan, F]``, skip ``[B, skip_chan, F]`` (or None)."""
        hidden = self.shared_block(x)  # [B, hid_chan, F]
        skip = self.skip_conv(hidden) if self.skip_conv is not None else None
        return self.res_conv(hidden), skip

    def state_specs(self, batch_size: int) -> list[tuple[str, tuple[int, ...]]]:
        """(suffix, shape) of each streaming state of this block, in step order."""
        specs: list[tuple[str, tuple[int, ...]]] = []
        if isinstance(self.shared_block[2], CumulativeLayerNorm):
            specs.append(("norm1", (batch_size, 3)))
        specs.append(("conv_cache", self.shared_block[3].cache_shape(batch_size)))
        if isinstance(self.shared_block[5], CumulativeLayerNorm):
            specs.append(("norm2", (batch_size, 3)))
        return specs

    def forward_step(
        self, x: torch.Tensor, states: Iterator[torch.Tensor], new_states: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Causal streaming over ``x [B, bn_chan, F_step]``; reads ``states`` and appends ``new_states``."""
        hidden = self.shared_block[1](self.shared_block[0](x))  # [B, hid_chan, F_step]
        hidden = _norm_step(self.shared_block[2], hidden, states, new_states)
        hidden, cache = self.shared_block[3].forward_step(hidden, next(states))
        new_states.append(cache)
        hidden = _norm_step(self.shared_block[5], self.shared_block[4](hidden), states, new_states)
        skip = self.skip_conv(hidden) if self.skip_conv is not None else None
        return self.res_conv(hidden), skip


def _norm_step(norm: nn.Module, x: torch.Tensor, states: Iterator[torch.Tensor],
               new_states: list[torch.Tensor]) -> torch.Tensor:
    """Apply a causal norm in streaming mode (stateful for cLN, stateless for chanLN)."""
    if isinstance(norm, CumulativeLayerNorm):
        output, state = norm.forward_step(x, next(states))
        new_states.append(state)
        return output
    return norm(x)


class TDConvNet(nn.Module):
    """The TCN mask estimator: norm + bottleneck, R x X conv blocks, PReLU + 1x1 mask head."""

    def __init__(self, config: ConvTasNetConfig) -> None:
        super().__init__()
        self.n_src = config.n_src
        self.n_filters = config.n_filters
        self.mask_act = config.mask_act
        self.bottleneck = nn.Sequential(
            make_norm(config.norm_type, config.n_filters),
            nn.Conv1d(config.n_filters, config.bn_chan, 1),
        )
        self.TCN = nn.ModuleList(
            TCNBlock(config, dilation=2**block)
            for _ in range(config.n_repeats)
            for block in range(config.n_blocks)
        )
        mask_input = config.skip_chan if config.skip_chan else config.bn_chan
        self.mask_net = nn.Sequential(nn.PReLU(), nn.Conv1d(mask_input, config.n_src * config.n_filters, 1))

    def _masks(self, score_input: torch.Tensor) -> torch.Tensor:
        score = self.mask_net(score_input)  # [B, S*N, F]
        score = score.reshape(score.shape[0], self.n_src, self.n_filters, score.shape[-1])  # [B, S, N, F]
        return bounded_real_mask(score, self.mask_act, source_dim=1)  # softmax: across the sources

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder output ``[B, N, F]`` -> masks ``[B, S, N, F]``."""
        output = self.bottleneck(features)  # [B, bn_chan, F]
        skip_sum: torch.Tensor | None = None
        for block in self.TCN:
            residual, skip = block(output)
            if skip is not None:
                skip_sum = skip if skip_sum is None else skip_sum + skip
            output = output + residual
        return self._masks(output if skip_sum is None else skip_sum)

    def state_specs(self, batch_size: int) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of every streaming state of the masker, in step order."""
        specs: list[tuple[str, tuple[int, ...]]] = []
        if isinstance(self.bottleneck[0], CumulativeLayerNorm):
            specs.append(("bottleneck_norm", (batch_size, 3)))
        for index, block in enumerate(self.TCN):
            specs.extend((f"tcn{index}_{suffix}", shape) for suffix, shape in block.state_specs(batch_size))
        return specs

    def forward_step(
        self, features: torch.Tensor, states: Iterator[torch.Tensor], new_states: list[torch.Tensor]
    ) -> torch.Tensor:
        """Causal streaming: ``[B, N, F_step]`` -> masks ``[B, S, N, F_step]``."""
        output = _norm_step(self.bottleneck[0], features, states, new_states)
        output = self.bottleneck[1](output)  # [B, bn_chan, F_step]
        skip_sum: torch.Tensor | None = None
        for block in self.TCN:
            residual, skip = block.forward_step(output, states, new_states)
            if skip is not None:
                skip_sum = skip if skip_sum is None else skip_sum + skip
            output = output + residual
        return self._masks(output if skip_sum is None else skip_sum)


class ConvTasNet(SpeechModel):
    """Conv-TasNet (Luo & Mesgarani 2019): ``x [B, C, T] -> [B, n_src, C, T]``.

    Causal configurations (``causal=True`` with ``cLN`` or ``chanLN``) stream one encoder hop
    (``stride`` samples, or any whole number of hops) per :meth:`forward_step`, with an
    algorithmic latency of ``kernel_size`` samples, plus ``lookahead_frames * stride`` when the
    mask estimator may look ahead (the mask of frame ``f`` is then read off the causal TCN at frame
    ``f + lookahead_frames`` and the encoded frames wait in a buffer until their mask is ready).
    """

    name = "conv_tasnet"
    config_class = ConvTasNetConfig
    # "all" adds NCHWc layout reorders around every one-frame 1-D conv: 20-25 % slower per step here
    onnx_graph_optimization = "extended"
    paper = (
        "Y. Luo, N. Mesgarani, Conv-TasNet: Surpassing Ideal Time-Frequency Magnitude Masking for "
        "Speech Separation, IEEE/ACM TASLP 27(8):1256-1266, 2019"
    )
    presets = MappingProxyType(
        {
            # the paper's best non-causal model (Table IV row "gLN"): 5.05 M parameters
            "paper": ConvTasNetConfig(),
            # the paper's causal model: left-padded convs and cumulative layer norm
            "paper_causal": ConvTasNetConfig(causal=True, norm_type="cLN"),
            # small and fast, for tests
            "tiny": ConvTasNetConfig(
                n_filters=16, kernel_size=16, stride=8, bn_chan=8, hid_chan=16, skip_chan=8,
                n_blocks=3, n_repeats=2,
            ),
            # its causal, streaming twin, for tests (the model contract covers both)
            "tiny_causal": ConvTasNetConfig(
                n_filters=16, kernel_size=16, stride=8, bn_chan=8, hid_chan=16, skip_chan=8,
                n_blocks=3, n_repeats=2, causal=True, norm_type="cLN",
            ),
            # the causal TCN on the STFT front-end (encoder="stft"), for tests
            "tiny_stft": ConvTasNetConfig(
                n_filters=33, kernel_size=64, stride=32, bn_chan=8, hid_chan=16, skip_chan=8,
                n_blocks=3, n_repeats=2, n_src=1, causal=True, norm_type="cLN", sample_rate=16000,
                encoder="stft",
            ),
            # the bundled default speech enhancer: 16 kHz, causal, 4 ms window (2 ms hop), ~1.3 M parameters
            "enhance_causal_16k": ConvTasNetConfig(
                n_filters=256, kernel_size=64, stride=32, bn_chan=96, hid_chan=256, skip_chan=96,
                n_blocks=8, n_repeats=2, n_src=1, causal=True, norm_type="cLN", sample_rate=16000,
            ),
            # the TCN on a 16 ms / 8 ms causal STFT (real mask on 129 bins): 16 ms algorithmic latency
            "enhance_stft_16k": ConvTasNetConfig(
                n_filters=129, kernel_size=256, stride=128, bn_chan=128, hid_chan=256, skip_chan=128,
                n_blocks=8, n_repeats=2, n_src=1, causal=True, norm_type="cLN", sample_rate=16000,
                encoder="stft",
            ),
            # offline two-speaker separation at 16 kHz on a 32 ms / 8 ms STFT (real masks on 257 bins)
            "separate_stft_16k": ConvTasNetConfig(
                n_filters=257, kernel_size=512, stride=128, bn_chan=128, hid_chan=256, skip_chan=128,
                n_blocks=8, n_repeats=3, n_src=2, sample_rate=16000, encoder="stft",
            ),
            # the same network with 12 ms of lookahead for the masks: 16 ms algorithmic latency
            "enhance_lookahead_16k": ConvTasNetConfig(
                n_filters=256, kernel_size=64, stride=32, bn_chan=96, hid_chan=256, skip_chan=96,
                n_blocks=8, n_repeats=2, n_src=1, causal=True, norm_type="cLN", sample_rate=16000,
                lookahead_frames=6,
            ),
        }
    )

    def __init__(self, config: ConvTasNetConfig) -> None:
        super().__init__(config)
        self.encoder: LearnedEncoder | STFTEncoder
        self.decoder: LearnedDecoder | STFTDecoder
        if config.encoder == "stft":
            self.encoder = STFTEncoder(config.kernel_size, config.stride, config.stft_window, config.magnitude_exponent)
            self.decoder = STFTDecoder(config.kernel_size, config.stride, config.stft_window)
        else:
            self.encoder = LearnedEncoder(
                config.n_filters, config.kernel_size, config.stride, config.input_channels, config.framing
            )
            self.decoder = LearnedDecoder(config.n_filters, config.kernel_size, config.stride, framing=config.framing)
        self.masker = TDConvNet(config)

    # ----------------------------------------------------------------- description
    @property
    def task(self) -> Task:  # type: ignore[override]
        """Separation with several sources; else enhancement (multichannel for a microphone array)."""
        if self.config.n_src > 1:
            return Task.SEPARATION
        return Task.MULTICHANNEL_ENHANCEMENT if self._multichannel else Task.ENHANCEMENT

    @property
    def num_sources(self) -> int:
        """Number of output sources (``n_src``)."""
        return int(self.config.n_src)

    @property
    def input_layout(self) -> InputLayout:
        """``input_channels`` microphones mixed by the encoder (1: the channel-wise model), target at mic 0."""
        return InputLayout(num_microphones=int(self.config.input_channels))

    @property
    def frontend_spec(self) -> FrontendSpec:
        """The learned filterbank (``n_filters`` filters of ``kernel_size`` samples, hop ``stride``) or the STFT."""
        config = self.config
        if config.encoder == "stft":  # the fixed causal STFT, its compressed magnitude read by the TCN
            return FrontendSpec(
                kind="stft", window=config.stft_window, n_fft=int(config.kernel_size),
                win_length=int(config.kernel_size), hop_length=int(config.stride), center=False,
                compression=float(config.magnitude_exponent),
            )
        return FrontendSpec(
            kind="learned", window="learned", n_fft=int(config.n_filters), win_length=int(config.kernel_size),
            hop_length=int(config.stride), center=False,
        )

    @property
    def inference_spec(self) -> InferenceSpec:
        """Causal: streams. Non-causal: cross-faded chunks, which differ from one pass over the whole input."""
        if self.supports_streaming:
            return InferenceSpec(mode="stream")
        return InferenceSpec(
            mode="chunk",
            exemptions=(("chunk_equals_whole", "the non-causal TCN and gLN see past a chunk's edges, so "
                         "cross-faded chunks approximate one pass over the whole input"),),
        )

    @property
    def _multichannel(self) -> bool:
        return self.config.input_channels > 1

    @property
    def causal(self) -> bool:
        """True for the causal variant (left-padded convs, causal norms)."""
        return bool(self.config.causal)

    @property
    def supports_streaming(self) -> bool:
        """Every causal configuration with the causal framing streams (asteroid's framing is offline only)."""
        return self.causal and self.config.framing == "causal"

    @property
    def block_size(self) -> int:
        """One encoder hop (``stride`` samples)."""
        return int(self.config.stride)

    @property
    def stream_delay(self) -> int:
        """``kernel_size - stride`` samples from the causal framing, plus the mask lookahead."""
        return framing.stream_delay(self.config.kernel_size, self.config.stride) + self._lookahead_samples

    @property
    def _lookahead_samples(self) -> int:
        return int(self.config.lookahead_frames) * int(self.config.stride)

    # ----------------------------------------------------------------- computation
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, T] -> [B, n_src, C, T]`` (channels processed independently), or ``[B, M, T] -> [B, n_src, 1, T]``."""
        if x.dim() != 3:
            raise ConfigError(f"ConvTasNet expects input [batch, channels, time], got shape {tuple(x.shape)}")
        batch, channels, length = x.shape
        if self._lookahead_samples:
            x = nn.functional.pad(x, (0, self._lookahead_samples))  # [B, C, T + lookahead]
        if self._multichannel:
            if channels != self.num_input_channels:
                raise ConfigError(f"{self.name} needs {self.num_input_channels}-channel input, got {channels}")
            masks, features = self._lookahead_masks(self.encoder(x))  # [B, S, N, F], [B, N, F]
            return self.decoder(masks * features[:, None], length)[:, :, None]  # [B, S, T] -> [B, S, 1, T]
        features = self.encoder(x.reshape(batch * channels, x.shape[-1]))  # [B*C, N, F + lookahead_frames]
        masks, features = self._lookahead_masks(features)  # [B*C, S, N, F], [B*C, N, F]
        separated = self.decoder(masks * features[:, None], length)  # [B*C, S, T]
        separated = separated.reshape(batch, channels, self.num_sources, length)  # [B, C, S, T]
        return separated.transpose(1, 2)  # [B, S, C, T]

    def _lookahead_masks(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``[B, N, F + D]`` -> the masks ``[B, S, N, F]`` of the first F frames and those frames.

        ``D = lookahead_frames``: frame f's mask is the causal TCN's output at frame ``f + D``.
        """
        masks = self._masks_of(self.masker(self._mask_input(features)))  # [B, S, N, F + D]
        lookahead = int(self.config.lookahead_frames)
        if not lookahead:
            return masks, features
        return masks[..., lookahead:], features[..., :-lookahead]  # [B, S, N, F], [B, N, F]

    @property
    def _stft(self) -> bool:
        return self.config.encoder == "stft"

    @property
    def _feature_channels(self) -> int:
        """Channels of the encoder output: ``n_filters``, or ``2F`` stacked real/imag STFT rows."""
        return 2 * int(self.config.n_filters) if self._stft else int(self.config.n_filters)

    def _mask_input(self, features: torch.Tensor) -> torch.Tensor:
        """What the mask estimator reads: the features, or the STFT's compressed magnitude."""
        return self.encoder.mask_input(features) if self._stft else features  # [B, N, F]

    def _masks_of(self, masks: torch.Tensor) -> torch.Tensor:
        """Masks ``[B, S, N, F]`` shaped like the features (``[B, S, 2F, F]`` for the STFT)."""
        return self.encoder.expand_mask(masks) if self._stft else masks

    def state_specs(self, batch_size: int) -> list[StateSpec]:
        """Encoder buffer, masker states, lookahead frames and decoder overlap, in step order.

        The channel-wise model keeps one state per channel: a C-channel stream needs ``batch_size * C``.
        """
        if not self.supports_streaming:
            raise ConfigError("only a causal Conv-TasNet (causal=True) can stream")
        window, hop = self.config.kernel_size, self.config.stride
        encoder_leading = (batch_size, self.num_input_channels) if self._multichannel else (batch_size,)
        specs = [
            ("encoder_buffer", framing.analysis_state_shape(encoder_leading, window, hop)),
            *self.masker.state_specs(batch_size),
            *(
                [("lookahead_frames", (batch_size, self._feature_channels, self.config.lookahead_frames))]
                if self.config.lookahead_frames else []
            ),
            ("decoder_overlap", framing.synthesis_state_shape((batch_size, self.num_sources), window, hop)),
        ]
        return [StateSpec(name, shape) for name, shape in specs]

    def forward_step(
        self, x_block: torch.Tensor, state: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One step: ``x_block [B, C, k * stride]`` -> ``[B, n_src, C, k * stride]`` and the new state list.

        ``k = 1`` is the contract's ``block_size``; any whole number of blocks per call gives the
        same samples (fewer, larger calls).
        """
        batch, channels, hop = x_block.shape
        if hop % self.block_size:
            raise ConfigError(f"forward_step needs a multiple of {self.block_size} samples, got {hop}")
        states = self.read_state(state)
        new_states: list[torch.Tensor] = []
        if self._multichannel:
            if channels != self.num_input_channels:
                raise ConfigError(f"{self.name} needs {self.num_input_channels}-channel input, got {channels}")
            channels = 1  # the encoder mixes the M channels into one stream
            encoder_input = x_block  # [B, M, k*stride]
        else:
            encoder_input = x_block.reshape(batch * channels, hop)  # [B*C, k*stride]
        features, encoder_state = self.encoder.forward_step(encoder_input, next(states))  # [B*C, N, k]
        new_states.append(encoder_state)
        masks = self._masks_of(self.masker.forward_step(self._mask_input(features), states, new_states))  # [B*C, S, N, k]
        if self.config.lookahead_frames:
            waiting = torch.cat([next(states), features], dim=-1)  # [B*C, N, D + k]
            features = waiting[..., :hop // self.block_size]  # [B*C, N, k]: the frames whose masks are ready
            new_states.append(waiting[..., hop // self.block_size:])  # [B*C, N, D]
        block, decoder_state = self.decoder.forward_step(masks * features[:, None], next(states))  # [B*C, S, k*stride]
        new_states.append(decoder_state)
        block = block.reshape(batch, channels, self.num_sources, hop)  # [B, C, S, hop]
        return block.transpose(1, 2), new_states  # [B, S, C, hop]
