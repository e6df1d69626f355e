"""DeFTAN-II: multichannel speech enhancement by complex spectral mapping with subgroup processing.

D. Lee and J.-W. Choi, "DeFTAN-II: Efficient Multichannel Speech Enhancement with Subgroup
Processing", IEEE/ACM Trans. Audio, Speech, Lang. Process., 2024 (arXiv:2308.15777).

Signal flow (``x [B, M, T]``, M microphones of an array, 16 kHz):

1. **Alignment padding and level.** ``hop`` zeros before and ``rest + hop`` after the signal so the
   frames cover it on the window grid; divide by the standard deviation over all channels and
   samples (multiplied back at the end).
2. **STFT** (centred, periodic Hann, ``n_fft`` 512, hop 256) of every microphone; real and
   imaginary parts interleaved per microphone as ``2 M`` channels: ``[B, 2M, T, F]``.
3. **up_conv**: Conv2d 3x3 to ``heads * embed_dim`` channels, GroupNorm(1), split dense block
   (``heads`` strided subgroups) to ``embed_dim``.
4. ``num_layers`` **DeFTAN-II blocks**, each an F-transformer then a T-transformer over the other
   axis: channel layer norm; unfold ``unfold_kernel`` neighbouring bins/frames into channels;
   split dense block back to ``embed_dim``; pre-norm efficient linear attention with locally
   emphasised Q/K (:mod:`speechkit.nn.linear_attention`) + residual; pre-norm dual-path
   feed-forward (a GELU path beside a GELU -> dilated conv (dilation ``2 ** layer``) path) +
   residual; transposed conv back to the axis length; + block input.
5. **down_conv**: Conv2d 3x3 to ``2 * heads`` channels, split dense block to 2 channels: the real
   and imaginary parts of the enhanced STFT (complex spectral mapping, no mask); iSTFT, crop,
   rescale. Output: the direct-path speech at the reference microphone, ``[B, 1, 1, T]``.

Sizes (parameters counted on the meta device): ``"base"`` (6 layers) 3,997,988 and ``"large"``
(12 layers) 7,712,804 with 4 microphones (paper: 4.0 M / 7.7 M); 8 microphones add 18,432.

**Causal variant** (``causal=True``; our design after the authors' real-time predecessor
DeFT-AN-RT, not in the paper): causal STFT framing (:mod:`speechkit.frontend.framing`), every
time-axis conv left-padded, the T-transformer's unfold looks at the current and previous frames,
its transposed conv keeps the first T outputs, group norms along time become cumulative norms
(statistics over every frame so far, as Conv-TasNet's cLN; ``causal_norm="frame"``: each frame
alone, which removes the frame levels and trained worse),
the T attention becomes prefix-normalised linear attention by cumulative sums, and the input
level is a cumulative RMS of the spectrum in time-domain units (a per-frame scale, undone on the
output frame; the network sees spectra of the offline model's size, and the offline model's weights
load into it, same names and shapes, though as a training start they did worse than none). The
F-transformer works within a frame and is unchanged. It streams one hop per step with explicit
state; the stream equals the offline output delayed by ``n_fft - hop`` samples; algorithmic
latency ``n_fft`` samples (32 ms for 512/256 at 16 kHz).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..frontend.stft import STFTConfig, make_window, stft_pair
from ..nn.linear_attention import EfficientLinearAttention, PreNorm
from ..nn.split_dense import SingleGroupNorm, SplitDenseBlock, TimeConv1d, TimeConv2d, TimeConvTranspose1d
from ..tasks import InputLayout, Task
from .base import SpeechModel
from .spec import FrontendSpec, InferenceSpec, StateSpec

#: floor of the input level estimate (silence must not divide by zero)
LEVEL_FLOOR = 1e-8


@dataclasses.dataclass(frozen=True)
class DeFTAN2Config:
    """Hyper-parameters of :class:`DeFTAN2` (defaults: the paper's base model, 4 microphones)."""

    n_fft: int = 512  # window = DFT size (32 ms at 16 kHz)
    hop_length: int = 256  # STFT hop (the reference uses n_fft // 2)
    num_microphones: int = 4
    reference_microphone: int = 0  # the microphone whose direct-path speech is the target
    array_radius: float | None = 0.1  # uniform circular array radius in metres (None: geometry unknown)
    num_layers: int = 6  # DeFTAN-II blocks (feed-forward dilation 2 ** index)
    embed_dim: int = 64  # channels C of the blocks
    num_heads: int = 4  # attention heads, and the subgroups of up_conv/down_conv
    attention_dim: int = 64  # features per head
    hidden_dim: int = 256  # dual-path feed-forward width (two paths of hidden_dim // 2)
    unfold_kernel: int = 4  # neighbouring bins/frames concatenated (and split dense subgroups)
    feedforward_kernel: int = 5  # dilated conv of the feed-forward
    dropout: float = 0.1
    eps: float = 1e-5
    causal: bool = False
    causal_norm: str = "cumulative"  # causal norms' statistics: every frame so far (cLN) or "frame" (each alone)
    attention_chunk: int = 64  # causal attention: positions per masked product
    logit_bound: float = 20.0  # causal attention: key logit clamp
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        positive = ("n_fft", "hop_length", "num_microphones", "num_layers", "embed_dim", "num_heads",
                    "attention_dim", "hidden_dim", "unfold_kernel", "feedforward_kernel", "attention_chunk",
                    "sample_rate")
        for name in positive:
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"DeFTAN2Config.{name} must be positive, got {getattr(self, name)}")
        if self.hop_length > self.n_fft:
            raise ConfigError(f"DeFTAN2Config.hop_length {self.hop_length} exceeds n_fft {self.n_fft}")
        if not 0 <= self.reference_microphone < self.num_microphones:
            raise ConfigError(f"DeFTAN2Config.reference_microphone {self.reference_microphone} is not one of "
                              f"the {self.num_microphones} microphones")
        if self.causal_norm not in ("frame", "cumulative"):
            raise ConfigError(f"DeFTAN2Config.causal_norm must be 'frame' or 'cumulative', got {self.causal_norm!r}")
        if self.hidden_dim % 2 or self.feedforward_kernel % 2 == 0:
            raise ConfigError("DeFTAN2Config needs an even hidden_dim and an odd feedforward_kernel")
        if self.num_heads == 1 and self.attention_dim == self.embed_dim:
            raise ConfigError("DeFTAN2Config: one head with attention_dim == embed_dim has no output projection")
        if not 0.0 <= self.dropout < 1.0 or not self.eps > 0 or not self.logit_bound > 0:
            raise ConfigError("DeFTAN2Config needs 0 <= dropout < 1 and positive eps and logit_bound")
        if self.array_radius is not None and not self.array_radius > 0:
            raise ConfigError(f"DeFTAN2Config.array_radius must be positive or None, got {self.array_radius}")

    def stft_config(self) -> STFTConfig:
        """Centred Hann STFT (reflect padding, as ``torch.stft``) or, causal, the causal framing."""
        return STFTConfig(n_fft=self.n_fft, hop_length=self.hop_length, win_length=self.n_fft, window="hann",
                          padding="causal" if self.causal else "center", backend="torch")

    def geometry(self) -> tuple[tuple[float, float, float], ...] | None:
        """Microphone positions of the uniform circular array (None when the radius is unknown)."""
        if self.array_radius is None:
            return None
        angles = [2.0 * math.pi * index / self.num_microphones for index in range(self.num_microphones)]
        return tuple((round(self.array_radius * math.cos(a), 9), round(self.array_radius * math.sin(a), 9), 0.0)
                     for a in angles)


class ChannelLayerNorm4d(nn.Module):
    """Layer norm over the channels of ``[B, C, T, F]`` at every (t, f); ``gamma``/``beta`` ``[1, C, 1, 1]``."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, T, F] -> [B, C, T, F]``."""
        mean = x.mean(dim=1, keepdim=True)  # [B, 1, T, F]
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)  # [B, 1, T, F]
        return (x - mean) / torch.sqrt(var + self.eps) * self.gamma + self.beta


class DualPathFeedForward(nn.Module):
    """DPFN: ``[Linear-GELU] || [Linear-GELU -> dilated Conv1d-norm-PReLU]`` -> Linear, over ``x [N, L, C]``.

    Module tree as the reference: ``PW1.0``, ``PW2.0`` (Linear ``C -> hidden/2``), ``DW_Conv.0/1/2``
    (full Conv1d ``hidden/2``, kernel ``kernel_size``, dilation; single-group norm; PReLU),
    ``PW3.0`` (Linear ``hidden -> C``).
    """

    def __init__(self, dim: int, hidden_dim: int, kernel_size: int, dilation: int, dropout: float,
                 causal: bool, eps: float = 1e-5, causal_norm: str = "cumulative") -> None:
        super().__init__()
        half = hidden_dim // 2
        self.PW1 = nn.ModuleList([nn.Linear(dim, half), nn.GELU(), nn.Dropout(dropout)])
        self.PW2 = nn.ModuleList([nn.Linear(dim, half), nn.GELU(), nn.Dropout(dropout)])
        self.DW_Conv = nn.ModuleList([TimeConv1d(half, half, kernel_size, dilation=dilation, causal=causal),
                                      SingleGroupNorm(half, eps, causal_norm if causal else "all"), nn.PReLU(half)])
        self.PW3 = nn.ModuleList([nn.Linear(hidden_dim, dim), nn.Dropout(dropout)])

    def cache_shapes(self, items: int) -> list[tuple[int, ...]]:
        """The dilated conv's history and the norm's running sums (causal), else ``[]``."""
        return [*self.DW_Conv[0].cache_shapes(items), *self.DW_Conv[1].cache_shapes(items)]

    @staticmethod
    def _run(layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor, caches: Sequence[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x [N, L, C] -> [N, L, C]`` and the new caches."""
        direct = self._run(self.PW1, x)  # [N, L, hidden/2]
        conv, norm, activation = self.DW_Conv
        count = len(conv.cache_shapes(1))
        conv_caches, norm_caches = (None, None) if caches is None else (caches[:count], caches[count:])
        dilated, new_caches = conv(self._run(self.PW2, x).transpose(1, 2), conv_caches)  # [N, hidden/2, L]
        dilated, norm_new = norm(dilated, norm_caches)
        dilated = activation(dilated).transpose(1, 2)  # [N, L, hidden/2]
        return self._run(self.PW3, torch.cat([direct, dilated], dim=2)), new_caches + norm_new  # [N, L, C]


def unfold_neighbours(x: torch.Tensor, kernel: int, cache: torch.Tensor | None, causal: bool
                      ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Concatenate ``kernel`` neighbouring positions: ``[N, C, L] -> [N, C * kernel, L']``.

    Channel ``c * kernel + j`` holds position ``p + j`` (``F.unfold``'s order, so subgroup ``j`` of
    the following split dense block is offset ``j``). Centred: ``L' = L - kernel + 1``. Causal: the
    previous ``kernel - 1`` positions come from ``cache`` (zeros offline) and ``L' = L``.
    """
    new_caches: list[torch.Tensor] = []
    if causal:
        if cache is None:
            cache = x.new_zeros(x.shape[0], x.shape[1], kernel - 1)
        x = torch.cat([cache, x], dim=2)  # [N, C, kernel - 1 + L]
        new_caches = [x[:, :, x.shape[2] - (kernel - 1) :]]
    taps = [x[:, :, j : x.shape[2] - (kernel - 1) + j] for j in range(kernel)]  # kernel x [N, C, L']
    stacked = torch.stack(taps, dim=2)  # [N, C, kernel, L']
    return stacked.reshape(x.shape[0], x.shape[1] * kernel, stacked.shape[-1]), new_caches  # [N, C*kernel, L']


class DeFTAN2Block(nn.Module):
    """F-transformer then T-transformer over ``[B, C, T, F]`` (T causal when ``causal``)."""

    def __init__(self, index: int, config: DeFTAN2Config) -> None:
        super().__init__()
        dim, kernel, eps = config.embed_dim, config.unfold_kernel, config.eps
        self.kernel = kernel
        self.causal = config.causal
        for axis, causal in (("F", False), ("T", config.causal)):
            attention = EfficientLinearAttention(dim, config.num_heads, config.attention_dim, config.dropout, causal,
                                                 config.attention_chunk, config.logit_bound)
            feedforward = DualPathFeedForward(dim, config.hidden_dim, config.feedforward_kernel, 2**index,
                                              config.dropout, causal, eps, config.causal_norm)
            setattr(self, f"{axis}_norm", ChannelLayerNorm4d(dim, eps))
            setattr(self, f"{axis}_inv", SplitDenseBlock(dim * kernel, dim, kernel, dims=1, causal=causal, eps=eps,
                                                         causal_norm=config.causal_norm))
            setattr(self, f"{axis}_att", PreNorm(dim, attention))
            setattr(self, f"{axis}_ffw", PreNorm(dim, feedforward))
            setattr(self, f"{axis}_linear", TimeConvTranspose1d(dim, dim, kernel, causal=causal))

    def cache_shapes(self, items: int) -> list[tuple[int, ...]]:
        """T-path histories for ``items = B * F`` sequences (causal), in use order."""
        if not self.causal:
            return []
        dim = self.T_linear.in_channels
        return [(items, dim, self.kernel - 1), *self.T_inv.cache_shapes(items), *self.T_att.cache_shapes(items),
                *self.T_ffw.cache_shapes(items), *self.T_linear.cache_shapes(items)]

    def _path(self, axis: str, sequences: torch.Tensor, caches: Iterator[torch.Tensor] | None, causal: bool
              ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``[N, C, L] -> [N, C, L]`` through unfold, split dense, attention, feed-forward, transposed conv."""
        inv, att, ffw, linear = (getattr(self, f"{axis}_{part}") for part in ("inv", "att", "ffw", "linear"))

        def take(module: nn.Module) -> list[torch.Tensor] | None:
            count = len(module.cache_shapes(1))
            return None if caches is None or not causal else [next(caches) for _ in range(count)]

        unfold_cache = next(caches) if caches is not None and causal else None
        unfolded, new_caches = unfold_neighbours(sequences, self.kernel, unfold_cache, causal)  # [N, C*k, L']
        features, updated = inv(unfolded, take(inv))  # [N, C, L']
        new_caches += updated
        features = features.transpose(1, 2)  # [N, L', C]
        attended, updated = att(features, take(att))
        features = features + attended
        new_caches += updated
        fed, updated = ffw(features, take(ffw))
        features = features + fed
        new_caches += updated
        output, updated = linear(features.transpose(1, 2), take(linear))  # [N, C, L]
        return output, new_caches + updated

    def forward(self, x: torch.Tensor, caches: Iterator[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x [B, C, T, F] -> [B, C, T, F]`` and the new T-path caches."""
        batch, channels, frames, freqs = x.shape
        bins = self.F_norm(x).transpose(1, 2).reshape(batch * frames, channels, freqs)  # [B*T, C, F]
        bins, _ = self._path("F", bins, None, False)  # [B*T, C, F]
        x = bins.reshape(batch, frames, channels, freqs).transpose(1, 2) + x  # [B, C, T, F]
        sequences = self.T_norm(x).permute(0, 3, 1, 2).reshape(batch * freqs, channels, frames)  # [B*F, C, T]
        sequences, new_caches = self._path("T", sequences, caches, self.causal)  # [B*F, C, T]
        return sequences.reshape(batch, freqs, channels, frames).permute(0, 2, 3, 1) + x, new_caches  # [B, C, T, F]


class DeFTAN2(SpeechModel):
    """DeFTAN-II: ``x [B, M, T]`` (array) -> direct-path speech at the reference microphone ``[B, 1, 1, T]``."""

    name = "deftan2"
    task = Task.MULTICHANNEL_ENHANCEMENT
    config_class = DeFTAN2Config
    paper = ("D. Lee and J.-W. Choi, DeFTAN-II: Efficient Multichannel Speech Enhancement with Subgroup "
             "Processing, IEEE/ACM Trans. Audio, Speech, Lang. Process., 2024 (arXiv:2308.15777)")
    presets = MappingProxyType({
        "paper": DeFTAN2Config(),
        "base": DeFTAN2Config(),
        "base_8mic": DeFTAN2Config(num_microphones=8),
        "large": DeFTAN2Config(num_layers=12),
        "large_8mic": DeFTAN2Config(num_layers=12, num_microphones=8),
        # CPU-trainable reductions (our choice): 2 blocks, 32 channels, 2 heads of 32, feed-forward 64
        "small": DeFTAN2Config(num_layers=2, embed_dim=32, num_heads=2, attention_dim=32, hidden_dim=64),
        "small_causal": DeFTAN2Config(num_layers=2, embed_dim=32, num_heads=2, attention_dim=32, hidden_dim=64,
                                      causal=True),
        "tiny": DeFTAN2Config(n_fft=64, hop_length=32, num_layers=2, embed_dim=8, num_heads=2, attention_dim=4,
                              hidden_dim=16, dropout=0.0),
        "tiny_causal": DeFTAN2Config(n_fft=64, hop_length=32, num_layers=2, embed_dim=8, num_heads=2,
                                     attention_dim=4, hidden_dim=16, dropout=0.0, causal=True, attention_chunk=5),
    })

    def __init__(self, config: DeFTAN2Config) -> None:
        super().__init__(config)
        framing = config.stft_config()
        self.stft, self.istft = stft_pair(framing)
        # causal level: spectral RMS -> time-domain RMS (a white signal's spectrum has RMS sqrt(sum w^2 / 2) x its std)
        window = make_window(framing.window, framing.frame_length, torch.float64, device="cpu")  # [win_length]
        self.spectral_level_gain = float(window.pow(2).sum().div(2).sqrt())
        stem = config.num_heads * config.embed_dim
        causal = config.causal
        self.up_conv = nn.ModuleList([
            TimeConv2d(2 * config.num_microphones, stem, (3, 3), causal=causal),
            SingleGroupNorm(stem, config.eps, config.causal_norm if causal else "all"),
            SplitDenseBlock(stem, config.embed_dim, config.num_heads, dims=2, causal=causal, eps=config.eps,
                            causal_norm=config.causal_norm),
        ])
        self.blocks = nn.ModuleList(DeFTAN2Block(index, config) for index in range(config.num_layers))
        self.down_conv = nn.ModuleList([
            TimeConv2d(config.embed_dim, 2 * config.num_heads, (3, 3), causal=causal),
            SplitDenseBlock(2 * config.num_heads, 2, config.num_heads, dims=2, causal=causal, eps=config.eps,
                            causal_norm=config.causal_norm),
        ])

    # ----------------------------------------------------------------- description
    @property
    def input_layout(self) -> InputLayout:
        """``num_microphones`` array channels, the reference microphone, the circular geometry."""
        config = self.config
        return InputLayout(num_microphones=config.num_microphones, reference_microphone=config.reference_microphone,
                           geometry=config.geometry())

    @property
    def frontend_spec(self) -> FrontendSpec:
        """Hann STFT, centred (offline model) or causal framing (causal variant); no compression."""
        config = self.config
        return FrontendSpec(kind="stft", window="hann", n_fft=config.n_fft, win_length=config.n_fft,
                            hop_length=config.hop_length, center=not config.causal)

    @property
    def inference_spec(self) -> InferenceSpec:
        """Causal: streams by hops. Offline model: long cross-faded chunks (whole-utterance statistics)."""
        if self.config.causal:
            return InferenceSpec(mode="stream")
        return InferenceSpec(
            mode="chunk", chunk_seconds=8.0, overlap_seconds=1.0,
            exemptions=(("chunk_equals_whole", "normalises by whole-chunk statistics (input level, group norms "
                         "over all frames) and its T-attention summarises every frame"),),
        )

    @property
    def causal(self) -> bool:
        """True for the causal variant."""
        return bool(self.config.causal)

    @property
    def supports_streaming(self) -> bool:
        """The causal variant streams."""
        return bool(self.config.causal)

    @property
    def block_size(self) -> int:
        """One STFT hop (causal variant)."""
        if not self.config.causal:
            raise NotImplementedError(f"{self.name} (non-causal) does not stream")
        return int(self.config.hop_length)

    @property
    def stream_delay(self) -> int:
        """``n_fft - hop_length`` samples (causal overlap-add)."""
        if not self.config.causal:
            raise NotImplementedError(f"{self.name} (non-causal) does not stream")
        return self.stft.stream_delay

    # ----------------------------------------------------------------- network
    def _network_state_shapes(self, batch_size: int) -> list[tuple[str, tuple[int, ...]]]:
        freqs = self.stft.num_freqs
        shapes: list[tuple[str, tuple[int, ...]]] = [("level", (batch_size, 2))]

        def stage(prefix: str, modules: nn.ModuleList) -> None:
            conv, dense = modules[0], modules[-1]
            norm = [*modules[1].cache_shapes(batch_size)] if len(modules) == 3 else []
            pieces = [*conv.cache_shapes(batch_size, freqs), *norm, *dense.cache_shapes(batch_size, freqs)]
            shapes.extend((f"{prefix}_{index}", shape) for index, shape in enumerate(pieces))

        stage("up", self.up_conv)
        for layer, block in enumerate(self.blocks):
            shapes.extend((f"block{layer}_{index}", shape)
                          for index, shape in enumerate(block.cache_shapes(batch_size * freqs)))
        stage("down", self.down_conv)
        return shapes

    def _conv_stage(self, modules: nn.ModuleList, x: torch.Tensor, caches: Iterator[torch.Tensor] | None
                    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        conv, dense = modules[0], modules[-1]
        take = (lambda count: None) if caches is None else (lambda count: [next(caches) for _ in range(count)])
        x, new_caches = conv(x, take(len(conv.cache_shapes(1, 1))))  # [B, C', T, F]
        if len(modules) == 3:
            x, updated = modules[1](x, take(len(modules[1].cache_shapes(1))))  # [B, C', T, F]
            new_caches += updated
        x, updated = dense(x, take(len(dense.cache_shapes(1, 1))))  # [B, C'', T, F]
        return x, new_caches + updated

    def _network(self, features: torch.Tensor, caches: Iterator[torch.Tensor] | None
                 ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``[B, 2M, T, F]`` (interleaved real/imag per microphone) -> ``[B, 2, T, F]`` and new caches."""
        hidden, new_caches = self._conv_stage(self.up_conv, features, caches)  # [B, C, T, F]
        for block in self.blocks:
            hidden, updated = block(hidden, caches)  # [B, C, T, F]
            new_caches += updated
        output, updated = self._conv_stage(self.down_conv, hidden, caches)  # [B, 2, T, F]
        return output, new_caches + updated

    def _check_input(self, x: torch.Tensor) -> None:
        if torch.jit.is_tracing():
            return
        if x.dim() != 3 or x.shape[1] != self.config.num_microphones:
            raise ConfigError(f"{self.name} expects x [batch, {self.config.num_microphones} microphones, time], "
                              f"got shape {tuple(x.shape)}")

    def _spectral_map(self, spec: torch.Tensor, caches: Iterator[torch.Tensor] | None
                      ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``spec [B, M, 2, F, N] -> [B, 1, 2, F, N]`` through the network."""
        batch, mics, _, freqs, frames = spec.shape
        features = spec.reshape(batch, 2 * mics, freqs, frames).transpose(2, 3)  # [B, 2M, N, F]
        frames_needed = self.config.unfold_kernel - frames
        if not self.config.causal and frames_needed > 0:  # fewer frames than the unfold window
            features = F.pad(features, (0, 0, 0, frames_needed))  # [B, 2M, k, F]
        output, new_caches = self._network(features, caches)  # [B, 2, N', F]
        return output[:, :, :frames].transpose(2, 3).unsqueeze(1), new_caches  # [B, 1, 2, F, N]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, M, T]`` -> enhanced reference-microphone speech ``[B, 1, 1, T]``."""
        self._check_input(x)
        if self.config.causal:
            return self._forward_causal(x)
        length = x.shape[-1]
        hop, window = self.config.hop_length, self.config.n_fft
        rest = window - (hop + length % window) % window  # align the frames with the window grid
        padded = F.pad(x, (hop, rest + hop))  # [B, M, T + rest + 2 hop]
        level = padded.std(dim=(1, 2), keepdim=True).clamp_min(LEVEL_FLOOR)  # [B, 1, 1]
        spec = self.stft(padded / level)  # [B, M, 2, F, N]
        output, _ = self._spectral_map(spec, None)  # [B, 1, 2, F, N]
        signal = self.istft(output, length=padded.shape[-1])  # [B, 1, T + rest + 2 hop]
        return (signal[..., hop : hop + length] * level).unsqueeze(1)  # [B, 1, 1, T]

    # ----------------------------------------------------------------- causal variant
    def _normalise(self, spec: torch.Tensor, level_state: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cumulative level of ``spec [B, M, 2, F, N]`` per frame: (normalised spec, scale ``[B, 1, 1, 1, N]``, state).

        The scale is the cumulative spectral RMS over ``spectral_level_gain``, a time-domain RMS as the offline
        model's input std (equal for white noise), so the network sees spectra of the offline model's size.
        """
        energy = spec.pow(2).mean(dim=(1, 2, 3))  # [B, N]
        cumulative = level_state[:, 0:1] + torch.cumsum(energy, dim=1)  # [B, N]
        counts = level_state[:, 1:2] + torch.cumsum(torch.ones_like(energy), dim=1)  # [B, N]
        scale = (torch.sqrt(cumulative / counts) / self.spectral_level_gain).clamp_min(LEVEL_FLOOR)  # [B, N]
        new_state = torch.stack([cumulative[:, -1], counts[:, -1]], dim=1)  # [B, 2]
        scale = scale[:, None, None, None, :]  # [B, 1, 1, 1, N]
        return spec / scale, scale, new_state

    def _causal_spectra(self, spec: torch.Tensor, caches: Iterator[torch.Tensor]
                        ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        normalised, scale, level_state = self._normalise(spec, next(caches))  # [B, M, 2, F, N]
        output, new_caches = self._spectral_map(normalised, caches)  # [B, 1, 2, F, N]
        return output * scale, [level_state, *new_caches]

    def _forward_causal(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.stft(x)  # [B, M, 2, F, N]
        zeros = iter([spec.new_zeros(shape) for _, shape in self._network_state_shapes(x.shape[0])])
        output, _ = self._causal_spectra(spec, zeros)  # [B, 1, 2, F, N]
        return self.istft(output, length=x.shape[-1]).unsqueeze(1)  # [B, 1, 1, T]

    def state_specs(self, batch_size: int) -> list[StateSpec]:
        """STFT buffer, level sums, conv/attention histories, iSTFT overlap (causal variant)."""
        if not self.config.causal:
            raise ConfigError(f"{self.name} (non-causal) does not stream; use the causal variant")
        overlap = self.config.n_fft - self.config.hop_length
        specs = [("stft_buffer", (batch_size, self.config.num_microphones, overlap)),
                 *self._network_state_shapes(batch_size), ("istft_overlap", (batch_size, 1, overlap))]
        return [StateSpec(name, shape) for name, shape in specs]

    def forward_step(self, x_block: torch.Tensor, state: Sequence[torch.Tensor]
                     ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``k`` hops ``x_block [B, M, k * hop]`` -> ``[B, 1, 1, k * hop]`` and the new states."""
        hop = self.block_size
        if not torch.jit.is_tracing():
            self.check_step_length(x_block, "hop")
        states = self.read_state(state)
        stft_state, frames = next(states), []
        for start in range(0, x_block.shape[-1], hop):
            frame, stft_state = self.stft.forward_step(x_block[..., start : start + hop], stft_state)  # [B, M, 2, F, 1]
            frames.append(frame)
        spec = frames[0] if len(frames) == 1 else torch.cat(frames, dim=-1)  # [B, M, 2, F, k]
        output, network_states = self._causal_spectra(spec, states)  # [B, 1, 2, F, k]
        istft_state, blocks = next(states), []
        for index in range(output.shape[-1]):
            block, istft_state = self.istft.forward_step(output[..., index : index + 1], istft_state)  # [B, 1, hop]
            blocks.append(block)
        signal = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=-1)  # [B, 1, k * hop]
        return signal.unsqueeze(1), [stft_state, *network_states, istft_state]  # [B, 1, 1, k * hop]
