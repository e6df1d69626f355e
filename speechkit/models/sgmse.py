"""SGMSE+: score-based diffusion speech enhancement and dereverberation.

J. Richter, S. Welker, J.-M. Lemercier, B. Lay, T. Gerkmann, "Speech Enhancement and
Dereverberation with Diffusion-Based Generative Models", IEEE/ACM TASLP 31:2351-2364, 2023
(arXiv:2208.05830).

The noisy waveform is scaled by its peak, transformed to a centred complex STFT (periodic Hann)
and compressed, ``c = beta |X| ** alpha e^{i angle X}``; the frames are zero-padded (or reflected)
to a multiple of ``frame_multiple``. A generative sampler then draws the clean compressed spectrum
from the reverse of the OUVE SDE (:mod:`speechkit.nn.diffusion`), conditioned on the noisy one,
with the score estimated by an NCSN++ U-Net (:class:`~speechkit.nn.ncsnpp.NCSNppUNet`; the
reference's ``ncsnpp`` backbone, or its ``ncsnpp_48k`` layout in the ``ears_48k`` preset) that reads
``[Re x_t, Im x_t, Re y, Im y]`` and is conditioned on ``log t``. Its output is divided by ``t``
and negated: ``score(x_t, y, t) = -unet([x_t, y], t)``. The sample is decompressed with its padded
frames, inverted, cut to the input length and rescaled by the input peak: as the reference
(``enhancement.py``: ``to_audio(sample, T_orig)`` on the padded sample), so the first padded frames,
which overlap the last ``n_fft / 2`` samples, take part in the overlap-add there.

Inference options: ``seed``, ``steps`` (N), ``corrector_steps``, ``snr`` and ``sampler``
(``"pc"``: reverse-diffusion predictor with annealed Langevin corrector, ``2 N`` network
evaluations with one corrector step; ``"ode"``: Euler steps of the probability-flow ODE, ``N``
evaluations). All noise comes from a generator seeded with ``seed`` at every ``forward``.
Files run in overlapping chunks; chunks are sampled independently (stochastic output).
"""
from __future__ import annotations

import dataclasses
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..frontend.compression import compress_spectrum, decompress_spectrum
from ..frontend.stft import stft_pair
from ..nn.diffusion import COMPLEX_NOISE_STD, OUVESDE, generator_noise, list_noise, ode_sample, pc_sample
from ..nn.ncsnpp import NCSNppUNet
from ..tasks import Task
from .base import SpeechModel
from .spec import FrontendSpec, InferenceSpec, OptionSpec

#: sampler choices of the ``sampler`` option
SAMPLERS = ("pc", "ode")
#: frame padding modes before the U-Net
PAD_MODES = ("zero", "reflect")
#: peaks below this are treated as silence when normalising the input
PEAK_FLOOR = 1e-8


@dataclasses.dataclass(frozen=True)
class SGMSEConfig:
    """SGMSE+ hyper-parameters (reference names in brackets); defaults: the 16 kHz journal model."""

    sample_rate: int = 16000
    n_fft: int = 510  # [n_fft] periodic Hann window of n_fft samples, centred frames: n_fft // 2 + 1 bins
    hop_length: int = 128  # [hop_length]
    compression_alpha: float = 0.5  # [spec_abs_exponent]
    compression_beta: float = 0.15  # [spec_factor]
    frame_multiple: int = 64  # frames are padded to a multiple of this before the U-Net
    pad_mode: str = "zero"  # "zero" or "reflect" frame padding
    base_channels: int = 128  # [nf]
    channel_multipliers: tuple[int, ...] = (1, 1, 2, 2, 2, 2, 2)  # [ch_mult]
    num_res_blocks: int = 2  # [num_res_blocks]
    attention_resolutions: tuple[int, ...] = (16,)  # [attn_resolutions] frequency heights with attention
    fir_taps: tuple[float, ...] = (1.0, 3.0, 3.0, 1.0)  # [fir_kernel]
    fourier_scale: float = 16.0  # [fourier_scale]
    dropout: float = 0.0  # [dropout]
    centered: bool = True  # [centered] False maps the U-Net input x to 2x - 1
    input_skip: bool = True  # [progressive_input] "input_skip" (True) or "none" (False)
    output_skip: bool = True  # [progressive] "output_skip" (True) or "none" (False)
    scale_after_output_layer: bool = False  # [backbone] ncsnpp_48k divides by t after the 1x1 output layer
    theta: float = 1.5  # [theta] OUVE stiffness
    sigma_min: float = 0.05  # [sigma_min]
    sigma_max: float = 0.5  # [sigma_max]
    t_eps: float = 0.03  # [t_eps] smallest diffusion time
    steps: int = 30  # [N] default of the "steps" option
    corrector_steps: int = 1  # [corrector_steps] default of the option
    snr: float = 0.5  # [snr] default of the option

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop_length", "frame_multiple", "base_channels", "num_res_blocks", "steps"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"SGMSEConfig.{name} must be positive, got {getattr(self, name)}")
        scale = 2 ** (len(self.channel_multipliers) - 1)
        if not self.channel_multipliers or self.num_freqs % scale or self.frame_multiple % scale:
            raise ConfigError(
                f"SGMSEConfig: {self.num_freqs} bins and frame_multiple {self.frame_multiple} must be divisible "
                f"by 2**(levels - 1) = {scale}"
            )
        if self.pad_mode not in PAD_MODES:
            raise ConfigError(f"SGMSEConfig.pad_mode must be one of {', '.join(PAD_MODES)}, got {self.pad_mode!r}")
        if not (self.compression_alpha > 0 and self.compression_beta > 0):
            raise ConfigError("SGMSEConfig needs compression_alpha > 0 and compression_beta > 0")
        if not 0 < self.t_eps < 1 or self.corrector_steps < 0 or self.snr < 0:
            raise ConfigError("SGMSEConfig needs 0 < t_eps < 1, corrector_steps >= 0 and snr >= 0")
        OUVESDE(self.theta, self.sigma_min, self.sigma_max)  # validates the SDE

    @property
    def num_freqs(self) -> int:
        """Frequency bins ``n_fft // 2 + 1`` (the U-Net height)."""
        return self.n_fft // 2 + 1


class SGMSE(SpeechModel):
    """SGMSE+ score model with its predictor-corrector sampler (see the module docstring)."""

    name = "sgmse"
    task = Task.ENHANCEMENT
    config_class = SGMSEConfig
    paper = (
        "J. Richter, S. Welker, J.-M. Lemercier, B. Lay, T. Gerkmann, Speech Enhancement and Dereverberation "
        "with Diffusion-Based Generative Models, IEEE/ACM TASLP 31, 2023"
    )
    presets = MappingProxyType(
        {
            "paper": SGMSEConfig(),
            "paper_dereverb": SGMSEConfig(steps=50, snr=0.33),
            # EARS 48 kHz: the reference ncsnpp_48k backbone with its training defaults (no progressive
            # input/output paths, no attention but the middle one, t scaling after the output layer) on 768 bins
            "ears_48k": SGMSEConfig(
                sample_rate=48000, n_fft=1534, hop_length=384, compression_alpha=0.667, compression_beta=0.065,
                pad_mode="reflect", theta=2.0, sigma_min=0.1, sigma_max=1.0, attention_resolutions=(),
                input_skip=False, output_skip=False, scale_after_output_layer=True,
            ),
            "small": SGMSEConfig(
                base_channels=32, channel_multipliers=(1, 2, 2, 2), num_res_blocks=1, attention_resolutions=(32,),
                frame_multiple=8,
            ),
            # for CPU training: 16 channels at the two finest levels, 64 at the two coarsest (1.24 M
            # parameters, 3.9 GMACs per network evaluation per second of audio against small's 9.8)
            "xsmall": SGMSEConfig(
                base_channels=16, channel_multipliers=(1, 2, 4, 4), num_res_blocks=1, attention_resolutions=(32,),
                frame_multiple=8,
            ),
            "tiny": SGMSEConfig(
                n_fft=62, hop_length=16, base_channels=8, channel_multipliers=(1, 2, 2), num_res_blocks=1,
                attention_resolutions=(8,), frame_multiple=4, steps=3,
            ),
        }
    )

    #: validation of a training run: the sampler on a small fixed subset (the seed is the validation's)
    validation_defaults = MappingProxyType({"subset": 8})

    def __init__(self, config: SGMSEConfig) -> None:
        super().__init__(config)
        self.stft, self.istft = stft_pair(config.n_fft, config.hop_length, window="hann", padding="center")
        self.sde = OUVESDE(config.theta, config.sigma_min, config.sigma_max)
        self.backbone = NCSNppUNet(
            in_channels=4,
            out_channels=2,
            height=config.num_freqs,
            base_channels=config.base_channels,
            channel_multipliers=config.channel_multipliers,
            num_res_blocks=config.num_res_blocks,
            attention_resolutions=config.attention_resolutions,
            fir_taps=config.fir_taps,
            fourier_scale=config.fourier_scale,
            dropout=config.dropout,
            centered=config.centered,
            input_skip=config.input_skip,
            output_skip=config.output_skip,
            scale_after_output_layer=config.scale_after_output_layer,
        )

    @property
    def frontend_spec(self) -> FrontendSpec:
        config = self.config
        return FrontendSpec(kind="stft", window="hann", n_fft=config.n_fft, win_length=config.n_fft,
                            hop_length=config.hop_length, center=True, compression=config.compression_alpha)

    @property
    def inference_spec(self) -> InferenceSpec:
        config = self.config
        return InferenceSpec(
            mode="sampler",
            deterministic=False,
            chunk_seconds=4.0,
            overlap_seconds=0.5,
            options=(
                OptionSpec("seed", int, 0, help="seed of every noise draw (same seed and input: same output)"),
                OptionSpec("steps", int, config.steps, minimum=1, maximum=1000, help="reverse diffusion steps N"),
                OptionSpec("corrector_steps", int, config.corrector_steps, minimum=0, maximum=10,
                           help="annealed Langevin corrector steps per time step"),
                OptionSpec("snr", float, config.snr, minimum=0.0, maximum=10.0,
                           help="signal-to-noise ratio r of the corrector step size 2 (r std(t))^2"),
                OptionSpec("sampler", str, "pc", choices=SAMPLERS,
                           help="pc: predictor-corrector; ode: probability-flow ODE (Euler)"),
            ),
            exemptions=(
                ("chunk_equals_whole", "a stochastic sampler: each chunk draws its own noise"),
            ),
        )

    # ------------------------------------------------------------------ transforms
    def spectrum(self, waveform: torch.Tensor) -> torch.Tensor:
        """Compressed complex spectrum: ``[B, 1, T] -> [B, 1, 2, F, N]``."""
        spec = self.stft(waveform)  # [B, 1, 2, F, N]
        return compress_spectrum(spec, self.config.compression_alpha, self.config.compression_beta)

    def waveform(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """Inverse of :meth:`spectrum`: ``[B, 1, 2, F, N] -> [B, 1, length]``."""
        spec = decompress_spectrum(spec, self.config.compression_alpha, self.config.compression_beta)
        return self.istft(spec, length=length)  # [B, 1, T]

    def pad_frames(self, spec: torch.Tensor) -> torch.Tensor:
        """Pad the frame axis of ``[..., F, N]`` to a multiple of ``frame_multiple``."""
        frames = spec.shape[-1]
        missing = (-frames) % self.config.frame_multiple
        if missing == 0:
            return spec
        if self.config.pad_mode == "zero":
            return F.pad(spec, (0, missing))  # [..., F, N']
        flat = spec.reshape(-1, *spec.shape[-2:])  # [B', F, N]
        return F.pad(flat, (0, missing), mode="reflect").reshape(*spec.shape[:-1], frames + missing)  # [..., F, N']

    def _normalised(self, *waveforms: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Waveforms ``[B, 1, T]`` divided by the first one's peak (the noisy input), and that peak ``[B, 1, 1]``."""
        peak = waveforms[0].abs().amax(dim=-1, keepdim=True).clamp_min(PEAK_FLOOR)  # [B, 1, 1]
        return (*(waveform / peak for waveform in waveforms), peak)

    # ------------------------------------------------------------------ score model
    def network_score(self, state: torch.Tensor, condition: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """Score of padded spectra ``state, condition [B, 1, 2, F, N]`` at ``time [B]`` (same shape)."""
        features = torch.cat((state[:, 0], condition[:, 0]), dim=1)  # [B, 4, F, N]: Re x, Im x, Re y, Im y
        return -self.backbone(features, time).unsqueeze(1)  # [B, 2, F, N] -> [B, 1, 2, F, N]

    def score(self, state: torch.Tensor, condition: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """The official ``ScoreModel.forward``: the score of ``state [B, 1, 2, F, N]`` at ``time [B]``.

        ``condition`` is the compressed noisy spectrum ``[B, 1, 2, F, N]`` or the noisy waveform
        ``[B, 1, T]`` (then normalised and transformed as in :meth:`perturb`). Frames are padded
        for the U-Net and cropped back. ``torch.complex(s[:, :, 0], s[:, :, 1])`` of the result
        is the reference's complex ``[B, 1, F, N]`` score.
        """
        if condition.dim() == 3:
            (condition, _) = self._normalised(condition)
            condition = self.spectrum(condition)  # [B, 1, 2, F, N]
        frames = state.shape[-1]
        return self.network_score(self.pad_frames(state), self.pad_frames(condition), time)[..., :frames]

    def perturb(
        self, clean: torch.Tensor, noisy: torch.Tensor, time: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample the forward SDE for denoising score matching.

        ``clean`` ``[B, 1, T]`` (or ``[B, 1, 1, T]``) and ``noisy`` ``[B, 1, T]`` are divided by the
        noisy peak and transformed; returns ``(x_t [B, 1, 2, F, N], std [B], z)`` with complex
        standard Gaussian ``z``.
        """
        if clean.dim() == 4:
            clean = clean[:, 0]  # [B, S=1, 1, T] -> [B, 1, T]
        noisy, clean, _ = self._normalised(noisy, clean)
        target, condition = self.spectrum(clean), self.spectrum(noisy)  # [B, 1, 2, F, N] each
        std = self.sde.std(time)  # [B]
        noise = generator_noise(generator)(0, target) if generator is not None else torch.randn_like(target) * 0.5**0.5
        perturbed = self.sde.mean(target, condition, time) + std.reshape(-1, 1, 1, 1, 1) * noise
        return perturbed, std, noise

    # ------------------------------------------------------------------ sampling
    def sample(self, condition: torch.Tensor, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Draw the clean padded spectrum given ``condition [B, 1, 2, F, N]`` (frames a multiple of ``frame_multiple``).

        Noise comes from a generator seeded with the ``seed`` option, or from ``noise`` (complex
        standard Gaussian draws shaped like ``condition``, in the sampler's order).
        """
        options = self.options
        source = list_noise(noise) if noise is not None else generator_noise(
            torch.Generator().manual_seed(int(options["seed"]))
        )
        if options["sampler"] == "ode":
            return ode_sample(self.network_score, condition, self.sde, source, options["steps"], self.config.t_eps)
        return pc_sample(self.network_score, condition, self.sde, source, options["steps"],
                         options["corrector_steps"], options["snr"], self.config.t_eps)

    # ------------------------------------------------------------------ export
    #: what the exported score network's ``x`` and ``condition`` are
    score_domain = "compressed_stft"

    @property
    def score_network_frames(self) -> tuple[int, int]:
        """Frame counts the score-network export is verified at (multiples of ``frame_multiple``)."""
        return (self.config.frame_multiple, 2 * self.config.frame_multiple)

    def score_network(self) -> nn.Module:
        """The score network with real I/O: ``(x, condition [B, 2, F, N], t [B]) -> score [B, 2, F, N]``."""
        return _ScoreNetwork(self)

    def score_network_inputs(self, frames: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """Random example inputs of the score network with ``frames`` frames."""
        shape = (1, 2, self.config.num_freqs, int(frames))
        state = 0.3 * torch.randn(shape, generator=generator)
        condition = 0.3 * torch.randn(shape, generator=generator)
        return state, condition, torch.rand(1, generator=generator) * (1.0 - self.config.t_eps) + self.config.t_eps

    def sampler_schedule(self) -> dict:
        """The ``realtime.sampler`` schedule of the current options (predictor-corrector)."""
        options = self.options
        return {
            "sde": "ouve", "theta": self.config.theta, "sigma_min": self.config.sigma_min,
            "sigma_max": self.config.sigma_max, "num_steps": int(options["steps"]),
            "corrector_steps": int(options["corrector_steps"]), "snr": float(options["snr"]),
            "t_eps": self.config.t_eps, "start": "condition", "seed": int(options["seed"]),
            "corrector": "annealed", "noise_std": COMPLEX_NOISE_STD,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, 1, T] -> [B, 1, 1, T]``: the enhanced signal (one sampler run per item)."""
        length = x.shape[-1]
        noisy, peak = self._normalised(x)
        condition = self.spectrum(noisy)  # [B, 1, 2, F, N]
        estimate = self.sample(self.pad_frames(condition))  # [B, 1, 2, F, N'], padded frames kept (as the reference)
        return (self.waveform(estimate, length) * peak).unsqueeze(1)  # [B, 1, T] -> [B, 1, 1, T]


class _ScoreNetwork(nn.Module):
    """:meth:`SGMSE.network_score` on ``[B, 2, F, N]`` spectra (no channel axis): what the export traces."""

    def __init__(self, model: SGMSE) -> None:
        super().__init__()
        self.model = model

    def forward(self, state: torch.Tensor, condition: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """``state, condition [B, 2, F, N]``, ``time [B]`` -> ``[B, 2, F, N]``."""
        return self.model.network_score(state.unsqueeze(1), condition.unsqueeze(1), time)[:, 0]
