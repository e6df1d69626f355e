"""MossFormer2: time-domain separation with MossFormer attention and a gated dilated FSMN.

S. Zhao, Y. Ma, C. Ni, C. Zhang, H. Wang, T. H. Nguyen, K. Zhou, J. Yip, D. Ng, B. Ma,
"MossFormer2: Combining Transformer and RNN-Free Recurrent Network for Enhanced Time-Domain
Monaural Speech Separation", ICASSP 2024 (arXiv:2312.11825); released as ``MossFormer2_SS_16K``
(and an 8 kHz twin) in ClearerVoice-Studio.

Learned encoder (``Conv1d(1 -> N, kernel L, stride L/2)`` + ReLU, unpadded framing) -> mask
network -> one non-negative mask per speaker on the encoder output -> learned decoder (transposed
conv, output cropped or zero-padded to the input length). The mask network: GroupNorm, 1x1 conv,
scaled sinusoidal position code, ``num_layers`` x (MossFormer attention block + gated dilated
FSMN block), LayerNorm, GroupNorm and a skip around the stack, PReLU, 1x1 conv to ``S`` masks,
a tanh/sigmoid gated 1x1 conv, a 1x1 conv back to ``N`` and ReLU.

State-dict keys mirror the official model below its ``enc`` / ``dec`` (``mask_net.*`` is the same),
so :mod:`speechkit.convert.clearervoice` renames only the filterbanks. Not causal: global linear
attention, symmetric FSMN kernels and segment-wide norms; files run in overlapping chunks whose
speakers are re-aligned (:mod:`speechkit.crossfade`).
"""
from __future__ import annotations

import dataclasses
from types import MappingProxyType

import torch
from torch import nn

from ..errors import ConfigError
from ..frontend.filterbank import LearnedDecoder, LearnedEncoder
from ..nn.fsmn import GatedFSMNBlock
from ..nn.mossformer import MossFormerAttention, RotaryEmbedding, ScaledSinusoidalEmbedding
from ..tasks import Task
from .base import SpeechModel
from .spec import FrontendSpec, InferenceSpec, OptionSpec

#: GroupNorm eps of the mask network's two global norms (the official value)
GROUP_NORM_EPS = 1e-8
#: eps of the LayerNorm closing the MossFormer stack (the official value)
STACK_NORM_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class MossFormer2Config:
    """MossFormer2 hyper-parameters; defaults are ``MossFormer2_SS_16K`` (official config names in brackets)."""

    encoder_kernel_size: int = 16  # [encoder_kernel_size] window L in samples; hop L / 2
    encoder_dim: int = 512  # [encoder_embedding_dim] N encoder filters
    model_dim: int = 512  # [mossformer_sequence_dim] D features inside the mask network
    num_layers: int = 24  # [num_mossformer_layer] MossFormer + gated FSMN layers
    num_speakers: int = 2  # [num_spks]
    group_size: int = 256  # frames per local (quadratic) attention group
    query_key_dim: int = 128  # shared query/key projection size
    expansion_factor: float = 4.0  # hidden size of the gated attention unit = expansion_factor * D
    rotary_dim: int = 32  # features carrying the rotary position code (min(32, query_key_dim) officially)
    conv_kernel_size: int = 17  # depthwise conv of every FFConvM
    fsmn_channels: int = 256  # bottleneck of the gated FSMN block
    fsmn_lorder: int = 20  # FSMN memory order: kernel 2 * lorder - 1
    fsmn_depth: int = 2  # dilated dense layers (dilations 1, 2, ...)
    dropout: float = 0.1
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        positive = ("encoder_kernel_size", "encoder_dim", "model_dim", "num_layers", "num_speakers", "group_size",
                    "query_key_dim", "rotary_dim", "conv_kernel_size", "fsmn_channels", "fsmn_lorder", "fsmn_depth",
                    "sample_rate")
        for name in positive:
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"MossFormer2Config.{name} must be positive, got {getattr(self, name)}")
        if self.encoder_kernel_size % 2:
            raise ConfigError(
                f"MossFormer2Config.encoder_kernel_size must be even (hop = L/2), got {self.encoder_kernel_size}"
            )
        if self.model_dim % 2 or self.rotary_dim % 2:
            raise ConfigError("MossFormer2Config.model_dim and rotary_dim must be even (sinusoidal/rotary pairs)")
        if self.rotary_dim > self.query_key_dim:
            raise ConfigError(f"rotary_dim {self.rotary_dim} exceeds query_key_dim {self.query_key_dim}")
        hidden = int(self.model_dim * self.expansion_factor)
        if hidden <= 0 or hidden % 2:
            raise ConfigError(f"expansion_factor * model_dim must be a positive even number, got {hidden}")
        if self.conv_kernel_size % 2 == 0:
            raise ConfigError(
                f"MossFormer2Config.conv_kernel_size must be odd ('same' padding), got {self.conv_kernel_size}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"MossFormer2Config.dropout must be in [0, 1), got {self.dropout}")

    @property
    def stride(self) -> int:
        """Encoder hop in samples (half the window)."""
        return self.encoder_kernel_size // 2


class ComputationBlock(nn.Module):
    """The MossFormer2 stack with its closing norms and skip: ``x + GroupNorm(LayerNorm(stack(x)))``."""

    def __init__(self, config: MossFormer2Config) -> None:
        super().__init__()
        self.intra_mdl = _MossFormerStack(config)
        self.intra_norm = nn.GroupNorm(1, config.model_dim, eps=GROUP_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, D, F] -> [B, D, F]``."""
        stacked = self.intra_mdl(x.transpose(1, 2)).transpose(1, 2)  # [B, F, D] -> [B, D, F]
        return self.intra_norm(stacked) + x


class _MossFormerStack(nn.Module):
    """``num_layers`` x (MossFormer attention, gated FSMN), then LayerNorm; ``[B, F, D] -> [B, F, D]``."""

    def __init__(self, config: MossFormer2Config) -> None:
        super().__init__()
        self.mossformerM = _Layers(config)
        self.norm = nn.LayerNorm(config.model_dim, eps=STACK_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.mossformerM(x))


class _Layers(nn.Module):
    """The interleaved layers; ``layers[i]`` (attention) then ``fsmn[i]`` (recurrent), one shared rotary code."""

    def __init__(self, config: MossFormer2Config) -> None:
        super().__init__()
        rotary = RotaryEmbedding(config.rotary_dim)
        self.fsmn = nn.ModuleList(
            GatedFSMNBlock(config.model_dim, config.fsmn_channels, config.fsmn_lorder, config.fsmn_depth,
                           config.dropout, config.conv_kernel_size)
            for _ in range(config.num_layers)
        )
        self.layers = nn.ModuleList(
            MossFormerAttention(config.model_dim, rotary, config.group_size, config.query_key_dim,
                                config.expansion_factor, config.dropout, config.conv_kernel_size)
            for _ in range(config.num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attention, recurrent in zip(self.layers, self.fsmn):
            x = recurrent(attention(x))  # [B, F, D]
        return x


class MaskNet(nn.Module):
    """Encoder output ``[B, N, F]`` -> one non-negative mask per speaker ``[B, S, N, F]``."""

    def __init__(self, config: MossFormer2Config) -> None:
        super().__init__()
        encoder_dim, model_dim = config.encoder_dim, config.model_dim
        self.num_speakers = config.num_speakers
        self.norm = nn.GroupNorm(1, encoder_dim, eps=GROUP_NORM_EPS)
        self.conv1d_encoder = nn.Conv1d(encoder_dim, model_dim, 1, bias=False)
        self.pos_enc = ScaledSinusoidalEmbedding(model_dim)
        self.mdl = ComputationBlock(config)
        self.prelu = nn.PReLU()
        self.conv1d_out = nn.Conv1d(model_dim, model_dim * config.num_speakers, 1)
        self.output = nn.Sequential(nn.Conv1d(model_dim, model_dim, 1), nn.Tanh())
        self.output_gate = nn.Sequential(nn.Conv1d(model_dim, model_dim, 1), nn.Sigmoid())
        self.conv1_decoder = nn.Conv1d(model_dim, encoder_dim, 1, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, N, F] -> [B, S, N, F]``."""
        batch, num_frames = features.shape[0], features.shape[-1]
        x = self.conv1d_encoder(self.norm(features))  # [B, D, F]
        x = x + self.pos_enc(num_frames, x)  # [B, D, F] + [D, F]
        x = self.conv1d_out(self.prelu(self.mdl(x)))  # [B, S*D, F]
        x = x.reshape(batch * self.num_speakers, -1, num_frames)  # [B*S, D, F]
        masks = self.conv1_decoder(self.output(x) * self.output_gate(x))  # [B*S, N, F]
        return torch.relu(masks.reshape(batch, self.num_speakers, -1, num_frames))  # [B, S, N, F]


class MossFormer2(SpeechModel):
    """MossFormer2 (Zhao et al. 2024): ``x [B, C, T] -> [B, S, C, T]``, channels separated independently."""

    name = "mossformer2"
    task = Task.SEPARATION
    config_class = MossFormer2Config
    paper = (
        "S. Zhao, Y. Ma, C. Ni, C. Zhang, H. Wang, T. H. Nguyen, K. Zhou, J. Yip, D. Ng, B. Ma, MossFormer2: "
        "Combining Transformer and RNN-Free Recurrent Network for Enhanced Time-Domain Monaural Speech "
        "Separation, ICASSP 2024 (arXiv:2312.11825)"
    )
    presets = MappingProxyType(
        {
            # MossFormer2_SS_16K: 55.7 M parameters, 2000 encoder frames per second
            "paper": MossFormer2Config(),
            # the 8 kHz configuration (same network, 1000 frames per second)
            "paper_8k": MossFormer2Config(sample_rate=8000),
            # a CPU-trainable reduction: 256-dim, 8 layers, 4 ms window (500 frames per second)
            "small": MossFormer2Config(
                encoder_kernel_size=64, encoder_dim=256, model_dim=256, num_layers=8, query_key_dim=64,
                fsmn_channels=128,
            ),
            # small and fast, for tests (groups of 16 frames so short inputs span several groups)
            "tiny": MossFormer2Config(
                encoder_kernel_size=16, encoder_dim=16, model_dim=16, num_layers=2, group_size=16,
                query_key_dim=8, expansion_factor=2.0, rotary_dim=4, conv_kernel_size=5, fsmn_channels=8,
                fsmn_lorder=3,
            ),
        }
    )

    def __init__(self, config: MossFormer2Config) -> None:
        super().__init__(config)
        self.encoder = LearnedEncoder(config.encoder_dim, config.encoder_kernel_size, config.stride,
                                      framing="unpadded", activation="relu")
        self.mask_net = MaskNet(config)
        self.decoder = LearnedDecoder(config.encoder_dim, config.encoder_kernel_size, config.stride, framing="unpadded")

    @property
    def num_sources(self) -> int:
        """Number of separated speakers."""
        return int(self.config.num_speakers)

    @property
    def frontend_spec(self) -> FrontendSpec:
        """The learned filterbank: ``encoder_dim`` filters of ``encoder_kernel_size`` samples, hop half of it."""
        config = self.config
        return FrontendSpec(
            kind="learned", window="learned", n_fft=int(config.encoder_dim), win_length=int(config.encoder_kernel_size),
            hop_length=int(config.stride), center=False,
        )

    @property
    def inference_spec(self) -> InferenceSpec:
        """Cross-faded 4 s chunks overlapping by 1 s: bounded memory, speakers re-aligned at each join."""
        return InferenceSpec(
            mode="chunk", chunk_seconds=4.0, overlap_seconds=1.0,
            options=(OptionSpec("bf16", bool, False, help="run convolutions and matrix products in bfloat16 "
                                "(CPU/CUDA autocast; about 1.5x faster on a CPU with bf16 support)"),),
            exemptions=(("chunk_equals_whole", "global linear attention, segment-wide norms and symmetric FSMN "
                         "kernels see the whole chunk, so cross-faded chunks approximate one pass"),),
        )

    def checkpoint_modules(self) -> list[nn.Module]:
        """Every attention and gated-FSMN layer: what training with activation checkpointing recomputes."""
        layers = self.mask_net.mdl.intra_mdl.mossformerM
        return [*layers.layers, *layers.fsmn]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, T] -> [B, S, C, T]`` (in ``x``'s dtype; option ``bf16``: computed under bfloat16 autocast)."""
        if x.dim() != 3:
            raise ConfigError(f"MossFormer2 expects input [batch, channels, time], got shape {tuple(x.shape)}")
        if self.options["bf16"] and not torch.jit.is_tracing():
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                return self._separate(x).to(x.dtype)
        return self._separate(x)

    def _separate(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, length = x.shape
        features = self.encoder(x.reshape(batch * channels, length))  # [B*C, N, F]
        masks = self.mask_net(features)  # [B*C, S, N, F]
        separated = self.decoder(masks * features[:, None], length)  # [B*C, S, T]
        separated = separated.reshape(batch, channels, self.num_sources, length)  # [B, C, S, T]
        return separated.transpose(1, 2)  # [B, S, C, T]
