"""TIGER: band-split time-frequency speech separation with one shared, iterated FFI block.

M. Xu*, K. Li*, G. Chen, X. Hu, "TIGER: Time-frequency Interleaved Gain Extraction and
Reconstruction for Efficient Speech Separation", ICLR 2025 (arXiv:2410.01469).

Centred STFT (Hann) -> band split (a width table in Hz, e.g. 67 bands at 16 kHz; per band a
sequence group norm and a 1x1 projection to ``N`` features) -> the separator: one
frequency-frame interleaved (FFI) block applied ``B`` times with the same weights (iteration
``i > 0`` reads ``PReLU(depthwise_1x1(features + previous output))``); each FFI block is a
frequency path (multi-scale selective attention across the bands of each frame, then full
attention across the bands) followed by a frame path (the same along time) -> per band a PReLU +
grouped 1x1 mask head giving a gated complex mask per source (``value * sigmoid(gate)``), shifted
so the masks of all sources sum to ``1 + 0j`` -> masked mixture -> iSTFT.

Because the FFI weights are shared, ``B`` is an inference option (``iterations``): the ``small``
(B = 4) and ``large`` (B = 8) presets hold the same 0.82 M parameters, and a model can run with
fewer iterations for speed or more for quality. Every norm and attention spans the whole input,
so the model runs files in overlapping chunks (re-aligned across chunks by the runner).

Parameter names inside the separator follow the reference implementation one to one; the band
split / mask head are the shared :class:`~speechkit.frontend.BandSplit` /
:class:`~speechkit.frontend.BandMerge` (see :mod:`speechkit.convert.tiger` for the mapping).
"""
from __future__ import annotations

import dataclasses
from types import MappingProxyType

import torch
from torch import nn

from ..errors import ConfigError
from ..frontend.bandsplit import BandMerge, BandSplit, bands_from_width_table
from ..frontend.masks import apply_complex_mask, sum_to_one_complex_masks
from ..frontend.stft import stft_pair
from ..nn.axis_attention import AxisSelfAttention
from ..nn.multiscale import MultiScaleBlock
from ..nn.norms import ChannelLayerNorm
from ..tasks import Task
from .base import SpeechModel
from .spec import FrontendSpec, InferenceSpec, OptionSpec

#: band widths (Hz) and counts of the speech models: 25 Hz to 1 kHz, 100 Hz to 2 kHz, 250 Hz to 4 kHz, 500 Hz to 8 kHz
SPEECH_BAND_TABLE = ((25.0, 40), (100.0, 10), (250.0, 8), (500.0, 8))
#: the DnR (44.1 kHz) table: 50 Hz to 1 kHz, 100 Hz to 2 kHz, 250 Hz to 4 kHz, 500 Hz to 8 kHz, 1 kHz to 16 kHz, 2 kHz to 20 kHz
DNR_BAND_TABLE = ((50.0, 20), (100.0, 10), (250.0, 8), (500.0, 8), (1000.0, 8), (2000.0, 2))
#: epsilon of the band split's group norm (float32 machine epsilon, as the reference)
BAND_NORM_EPS = float(torch.finfo(torch.float32).eps)
#: largest number of FFI iterations the ``iterations`` option accepts
MAX_ITERATIONS = 64


@dataclasses.dataclass(frozen=True)
class TIGERConfig:
    """TIGER hyper-parameters (paper / reference names in brackets); defaults: the 16 kHz small model."""

    sample_rate: int = 16000
    win_length: int = 640  # [win] STFT window = n_fft (Hann, centred)
    hop_length: int = 160  # [stride]
    band_table: tuple[tuple[float, int], ...] = SPEECH_BAND_TABLE  # (width Hz, count) low to high, rest = 1 band
    features: int = 128  # [N, out_channels] features per band
    hidden_channels: int = 256  # [C, in_channels] channels inside the multi-scale block
    iterations: int = 4  # [B, num_blocks] FFI iterations (shared weights); the option's default
    depth: int = 5  # [D, upsampling_depth] levels of the multi-scale block
    num_heads: int = 4  # attention heads
    key_channels: int = 4  # query/key channels per head
    num_sources: int = 2  # [K]
    dropout: float = 0.1  # of the multi-scale block's global MLP
    mask_groups: int = 0  # groups of each band's mask projection (0: num_sources, as the speech models)

    def __post_init__(self) -> None:
        for name in ("sample_rate", "win_length", "hop_length", "features", "hidden_channels", "iterations",
                     "num_heads", "key_channels", "num_sources"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"TIGERConfig.{name} must be positive, got {getattr(self, name)}")
        if self.hop_length > self.win_length:
            raise ConfigError(f"hop_length {self.hop_length} must not exceed win_length {self.win_length}")
        if self.depth < 3:
            raise ConfigError(f"TIGERConfig.depth must be at least 3, got {self.depth}")
        if self.features % self.num_heads or self.features % self.groups or self.num_sources % self.groups:
            raise ConfigError(
                f"features {self.features} must be divisible by num_heads {self.num_heads} and the mask "
                f"groups {self.groups}, which must divide num_sources {self.num_sources}"
            )
        if not 1 <= self.iterations <= MAX_ITERATIONS:
            raise ConfigError(f"TIGERConfig.iterations must be in 1..{MAX_ITERATIONS}, got {self.iterations}")
        bands_from_width_table(self.band_table, self.sample_rate, self.win_length)  # raises for a bad table

    @property
    def groups(self) -> int:
        """Groups of the mask projections (``mask_groups``, or ``num_sources`` when it is 0)."""
        return self.mask_groups or self.num_sources

    @property
    def num_freqs(self) -> int:
        """STFT bins ``win_length // 2 + 1``."""
        return self.win_length // 2 + 1


class FFIPath(nn.Module):
    """One path of the FFI block over ``[B, N, n_bands, T]``, across bands or across frames.

    The multi-scale block runs along the path's axis for every position of the other axis, then
    full attention across the path's axis (embeddings over the other axis), a channel layer norm,
    and the path's input is added. Names: ``0`` (multi-scale), ``1`` (attention), ``2`` (norm).
    """

    def __init__(self, config: TIGERConfig, across_frames: bool) -> None:
        super().__init__()
        self.across_frames = across_frames
        self.add_module("0", MultiScaleBlock(config.features, config.hidden_channels, config.depth, config.dropout))
        self.add_module("1", AxisSelfAttention(config.features, config.num_heads, config.key_channels))
        self.add_module("2", ChannelLayerNorm(config.features, eps=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, N, n_bands, T] -> [B, N, n_bands, T]``."""
        multiscale, attention, norm = self._modules["0"], self._modules["1"], self._modules["2"]
        batch, features, bands, frames = x.shape
        if self.across_frames:
            sequences = x.transpose(1, 2).reshape(batch * bands, features, frames)  # [B*n_bands, N, T]
            y = multiscale(sequences).reshape(batch, bands, features, frames)  # [B, n_bands, N, T]
            y = norm(attention(y.permute(0, 2, 3, 1)))  # [B, N, T, n_bands]: attention across frames
            return y.transpose(2, 3) + x  # [B, N, n_bands, T]
        sequences = x.permute(0, 3, 1, 2).reshape(batch * frames, features, bands)  # [B*T, N, n_bands]
        y = multiscale(sequences).reshape(batch, frames, features, bands)  # [B, T, N, n_bands]
        y = norm(attention(y.permute(0, 2, 3, 1)))  # [B, N, n_bands, T]: attention across bands
        return y + x


class FFISeparator(nn.Module):
    """The recurrent separator: one FFI block (frequency path, frame path) iterated with shared weights.

    Names follow the reference: ``freq_path``, ``frame_path``, ``concat_block`` (depthwise 1x1
    ``Conv2d`` + PReLU applied to ``features + previous output`` before every iteration after the first).
    """

    def __init__(self, config: TIGERConfig) -> None:
        super().__init__()
        self.freq_path = FFIPath(config, across_frames=False)
        self.frame_path = FFIPath(config, across_frames=True)
        self.concat_block = nn.Sequential(
            nn.Conv2d(config.features, config.features, 1, groups=config.features), nn.PReLU()
        )

    def forward(self, features: torch.Tensor, iterations: int) -> torch.Tensor:
        """``features [B, N, n_bands, T]`` -> ``[B, N, n_bands, T]`` after ``iterations`` FFI blocks."""
        x = self.frame_path(self.freq_path(features))  # [B, N, n_bands, T]
        for _ in range(iterations - 1):
            x = self.frame_path(self.freq_path(self.concat_block(features + x)))  # [B, N, n_bands, T]
        return x


class TIGER(SpeechModel):
    """TIGER speech separation (module docstring); ``x [B, C, T] -> [B, num_sources, C, T]``."""

    name = "tiger"
    task = Task.SEPARATION
    config_class = TIGERConfig
    paper = (
        "M. Xu, K. Li, G. Chen, X. Hu, TIGER: Time-frequency Interleaved Gain Extraction and "
        "Reconstruction for Efficient Speech Separation, ICLR 2025 (arXiv:2410.01469)"
    )
    presets = MappingProxyType(
        {
            "tiny": TIGERConfig(
                win_length=64, hop_length=16, band_table=((500.0, 4), (1000.0, 2)), features=8,
                hidden_channels=16, iterations=2, depth=3, num_heads=2, key_channels=2,
            ),
            "small": TIGERConfig(iterations=4),
            "large": TIGERConfig(iterations=8),
            "paper": TIGERConfig(iterations=8),
            # 8 kHz (Libri2Mix-style): the speech table up to 4 kHz, 40 ms / 10 ms frames
            "speech_8k": TIGERConfig(sample_rate=8000, win_length=320, hop_length=80, band_table=SPEECH_BAND_TABLE[:3]),
            # one of the three networks of the reference TIGER-DnR (44.1 kHz; 1,407,282 parameters, the
            # paper's 1.40 M): the reference keeps output 2 of its dialog network, 1 of its effect
            # network and 0 of its music network
            "dnr": TIGERConfig(
                sample_rate=44100, win_length=2048, hop_length=512, band_table=DNR_BAND_TABLE, features=132,
                hidden_channels=256, iterations=8, depth=5, num_sources=3,
            ),
        }
    )

    def __init__(self, config: TIGERConfig) -> None:
        super().__init__(config)
        self.bands = bands_from_width_table(config.band_table, config.sample_rate, config.win_length)
        self.stft, self.istft = stft_pair(config.win_length, config.hop_length, window="hann", padding="center")
        self.band_split = BandSplit(self.bands, config.num_freqs, config.features, norm="sequence", eps=BAND_NORM_EPS)
        self.separator = FFISeparator(config)
        self.band_merge = BandMerge(
            self.bands, config.num_freqs, config.features, out_channels=4 * config.num_sources, head="prelu",
            groups=config.groups,
        )

    @property
    def num_sources(self) -> int:
        """``K`` separated speakers."""
        return self.config.num_sources

    @property
    def frontend_spec(self) -> FrontendSpec:
        """Centred Hann STFT of ``win_length`` samples, hop ``hop_length``."""
        config = self.config
        return FrontendSpec(kind="stft", window="hann", n_fft=config.win_length, win_length=config.win_length,
                            hop_length=config.hop_length, center=True)

    @property
    def inference_spec(self) -> InferenceSpec:
        """Chunks of 6 s with 1 s overlap (bounded memory; attention is quadratic in frames)."""
        return InferenceSpec(
            mode="chunk",
            chunk_seconds=6.0,
            overlap_seconds=1.0,
            options=(
                OptionSpec("iterations", int, self.config.iterations, minimum=1, maximum=MAX_ITERATIONS,
                           help="FFI block iterations (same weights): fewer run faster, more may separate better"),
            ),
            exemptions=(
                ("chunk_equals_whole", "its norms and attention span every frame of the input, so a chunk "
                                       "sees different statistics than the whole signal"),
            ),
        )

    def checkpoint_modules(self) -> list[nn.Module]:
        """Modules whose activations training recomputes in the backward pass: the two FFI paths.

        Each of their ``2 * iterations`` calls is then stored as its input only (training memory
        grows with the iterations by a few feature maps instead of every block's activations).
        """
        return [self.separator.freq_path, self.separator.frame_path]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, T] -> [B, num_sources, C, T]`` (channels separated one by one)."""
        batch, channels, length = x.shape
        mixture = self.stft(x.reshape(batch * channels, 1, length))[:, 0]  # [B*C, 2, F, N]
        features = self.band_split(mixture)  # [B*C, N_feat, n_bands, N]
        features = self.separator(features, int(self.options["iterations"]))  # [B*C, N_feat, n_bands, N]
        raw = self.band_merge(features)  # [B*C, 4K, F, N]
        raw = raw.reshape(batch * channels, 2, 2, self.num_sources, raw.shape[-2], raw.shape[-1])  # [B*C, 2, 2, K, F, N]
        masks = raw[:, 0] * torch.sigmoid(raw[:, 1])  # [B*C, 2, K, F, N]: value * sigmoid(gate)
        masks = sum_to_one_complex_masks(masks.transpose(1, 2), source_dim=1, dim=2)  # [B*C, K, 2, F, N]
        sources = apply_complex_mask(mixture.unsqueeze(1), masks)  # [B*C, K, 2, F, N]
        y = self.istft(sources, length=length)  # [B*C, K, T]
        return y.reshape(batch, channels, self.num_sources, length).transpose(1, 2)  # [B, K, C, T]
