"""Score-based diffusion for conditional restoration: the OUVE SDE and its samplers (PyTorch).

The Ornstein-Uhlenbeck SDE with variance-exploding diffusion (OUVE) of SGMSE+ (J. Richter,
S. Welker, J.-M. Lemercier, B. Lay, T. Gerkmann, "Speech Enhancement and Dereverberation with
Diffusion-Based Generative Models", IEEE/ACM TASLP 31, 2023) drifts the clean state ``x`` toward the
condition ``y`` while adding noise::

    dx = theta (y - x) dt + g(t) dw,    g(t) = sigma_min (sigma_max / sigma_min) ** t sqrt(2 ln(sigma_max / sigma_min))

with the closed-form marginal mean ``e^{-theta t} x0 + (1 - e^{-theta t}) y`` and std
:meth:`OUVESDE.std`. Sampling starts at ``y + std(1) z`` and runs on ``steps`` times from 1 down to
``t_eps``:

* **predictor-corrector** (:func:`pc_sample`): per time, ``corrector_steps`` annealed Langevin steps
  (step ``e = 2 (snr std(t)) ** 2``: ``x <- x + e s + sqrt(2 e) z``), then one reverse-diffusion
  (Euler-Maruyama) step ``x_mean = x - theta (y - x) dt + g(t)^2 dt s``, ``x = x_mean + g(t) sqrt(dt) z``
  with ``dt`` the gap to the next time (``t_eps`` itself for the last one). The result is the last
  ``x_mean``;
* **probability-flow ODE** (:func:`ode_sample`): Euler steps of ``dx = [theta (y - x) - g^2 s / 2] dt``
  backwards on the same times (only the start is random).

Noise is complex Gaussian noise in the stacked real layout: every real and imaginary part is
``N(0, 1/2)``, so ``E|z|^2 = 1`` per complex bin. The draws come from a ``noise`` callable (the
``index``-th draw for a shape), in the order: start, then per time the corrector draws and the
predictor draw; :func:`generator_noise` draws them from a seeded ``torch.Generator``,
:func:`list_noise` replays given arrays (to compare with another implementation of the loop).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence

import torch

from ..errors import ConfigError

#: a score function ``(x, condition, t [B]) -> score`` (shape of ``x``)
ScoreFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
#: a noise source ``(index, like) -> standard complex Gaussian draw shaped like ``like```
NoiseFn = Callable[[int, torch.Tensor], torch.Tensor]
#: per-part std of complex standard Gaussian noise in the stacked real layout
COMPLEX_NOISE_STD = math.sqrt(0.5)


@dataclasses.dataclass(frozen=True)
class OUVESDE:
    """The OUVE SDE (see the module docstring)."""

    theta: float = 1.5
    sigma_min: float = 0.05
    sigma_max: float = 0.5

    def __post_init__(self) -> None:
        if not (self.theta >= 0 and 0 < self.sigma_min < self.sigma_max):
            raise ConfigError("the OUVE SDE needs theta >= 0 and 0 < sigma_min < sigma_max")

    @property
    def log_ratio(self) -> float:
        """``ln(sigma_max / sigma_min)``."""
        return math.log(self.sigma_max / self.sigma_min)

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """``g(t)``."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t * math.sqrt(2.0 * self.log_ratio)

    def mean(self, x0: torch.Tensor, condition: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Marginal mean at ``t [B]`` of ``x0`` given ``condition`` (both ``[B, ...]``)."""
        decay = torch.exp(-self.theta * t).reshape(-1, *([1] * (x0.dim() - 1)))  # [B, 1, ...]
        return decay * x0 + (1.0 - decay) * condition

    def std(self, t: torch.Tensor) -> torch.Tensor:
        """Marginal std at ``t`` (closed form of the OU variance with exponential diffusion)."""
        rate = self.theta + self.log_ratio
        variance = self.sigma_min**2 * torch.exp(-2.0 * self.theta * t) * torch.expm1(2.0 * rate * t)
        return torch.sqrt(variance * self.log_ratio / rate)


def times(steps: int, t_eps: float, like: torch.Tensor | None = None) -> torch.Tensor:
    """The ``steps`` sampling times from 1 down to ``t_eps``."""
    return torch.linspace(1.0, t_eps, steps, dtype=torch.float32 if like is None else like.dtype)


def num_draws(steps: int, corrector_steps: int, sampler: str = "pc") -> int:
    """Noise draws one run uses."""
    return 1 + steps * (corrector_steps + 1) if sampler == "pc" else 1


def generator_noise(generator: torch.Generator) -> NoiseFn:
    """Complex standard Gaussian draws from ``generator``, in call order."""

    def draw(index: int, like: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(like.shape, generator=generator, dtype=like.dtype)
        return (noise * COMPLEX_NOISE_STD).to(like.device)

    return draw


def list_noise(draws: Sequence[torch.Tensor]) -> NoiseFn:
    """Replay ``draws`` (already complex standard Gaussian, shaped like the state)."""

    def draw(index: int, like: torch.Tensor) -> torch.Tensor:
        if index >= len(draws):
            raise ConfigError(f"the sampler needs noise draw {index}, only {len(draws)} were given")
        return draws[index].to(like)

    return draw


def _column(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return value.reshape(-1, *([1] * (like.dim() - 1)))  # [B] -> [B, 1, ...]


def _start(condition: torch.Tensor, sde: OUVESDE, noise: NoiseFn) -> torch.Tensor:
    """The first state ``y + std(1) z`` (noise draw 0), ``[B, ...]`` like ``condition``."""
    ones = torch.ones(condition.shape[0], dtype=condition.dtype)
    return condition + _column(sde.std(ones), condition) * noise(0, condition)


def _schedule(steps: int, t_eps: float, condition: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per sampling time (:func:`times`): ``t`` expanded to ``[B]`` and the gap ``dt`` to the next time.

    The last time's ``dt`` is ``t_eps`` itself.
    """
    grid = times(steps, t_eps, condition)
    for index in range(steps):
        step = grid[index] - grid[index + 1] if index + 1 < steps else grid[-1]
        yield grid[index].expand(condition.shape[0]), step


def _reverse_euler(
    state: torch.Tensor,
    condition: torch.Tensor,
    sde: OUVESDE,
    diffusion: torch.Tensor,
    step: torch.Tensor,
    gradient: torch.Tensor,
    weight: float,
) -> torch.Tensor:
    """One Euler step back in time: ``x - theta (y - x) dt + weight g^2 dt s``.

    ``weight`` is 1 for the reverse SDE's mean (:func:`pc_sample`) and 0.5 for the
    probability-flow ODE (:func:`ode_sample`); ``diffusion`` is ``g(t)`` shaped ``[B, 1, ...]``.
    """
    return state - sde.theta * (condition - state) * step + weight * diffusion**2 * step * gradient


def pc_sample(
    score: ScoreFn,
    condition: torch.Tensor,
    sde: OUVESDE,
    noise: NoiseFn,
    steps: int = 30,
    corrector_steps: int = 1,
    snr: float = 0.5,
    t_eps: float = 0.03,
) -> torch.Tensor:
    """Predictor-corrector sampling (reverse diffusion + annealed Langevin); ``condition [B, ...]``."""
    start = _start(condition, sde, noise)
    state, state_mean, draw = start, start, 1
    for t, step in _schedule(steps, t_eps, condition):  # t [B]
        langevin = 2.0 * (snr * _column(sde.std(t), state)) ** 2
        for _ in range(corrector_steps):
            gradient = score(state, condition, t)
            state = state + langevin * gradient + torch.sqrt(2.0 * langevin) * noise(draw, state)
            draw += 1
        diffusion = _column(sde.diffusion(t), state)
        gradient = score(state, condition, t)
        state_mean = _reverse_euler(state, condition, sde, diffusion, step, gradient, 1.0)
        state = state_mean + diffusion * torch.sqrt(step) * noise(draw, state)
        draw += 1
    return state_mean


def ode_sample(
    score: ScoreFn,
    condition: torch.Tensor,
    sde: OUVESDE,
    noise: NoiseFn,
    steps: int = 30,
    t_eps: float = 0.03,
) -> torch.Tensor:
    """Euler steps of the probability-flow ODE (deterministic after the start draw)."""
    state = _start(condition, sde, noise)
    for t, step in _schedule(steps, t_eps, condition):  # t [B]
        diffusion = _column(sde.diffusion(t), state)
        gradient = score(state, condition, t)
        state = _reverse_euler(state, condition, sde, diffusion, step, gradient, 0.5)
    return state


__all__ = [
    "COMPLEX_NOISE_STD",
    "OUVESDE",
    "generator_noise",
    "list_noise",
    "num_draws",
    "ode_sample",
    "pc_sample",
    "times",
]
