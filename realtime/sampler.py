"""Predictor-corrector sampling over an exported score network, in numpy (no torch).

A stochastic ("sampler") model is exported as its score network ``s(x, condition, t)``:
``(x[1, C, T], condition[1, C, T], t[1]) -> score[1, C, T]``, with the diffusion time an explicit
input and no random operation in the graph. The loop below draws nothing itself: the noise comes in
as an explicit array (:func:`draw_noise` makes it from the schedule's seed), so a run is
reproducible and can be checked step for step against the same loop in PyTorch.

Schedule (the ``schedule`` metadata entry, :class:`Schedule`): a variance-exploding SDE (Song et
al., "Score-Based Generative Modeling through Stochastic Differential Equations", ICLR 2021) with
``sigma(t) = sigma_min * (sigma_max / sigma_min) ** t`` on ``num_steps`` times from 1 down to
``t_eps``. The sampler starts at ``start + sigma(1) * z`` (``start`` is the condition, as in
score-based enhancement, or zeros) and at every time ``t_i``:

* **corrector** (annealed Langevin, ``corrector_steps`` times): ``g = s(x, c, t_i)``, step
  ``e = 2 (snr * |z| / |g|) ** 2``, ``x <- x + e g + sqrt(2 e) z``;
* **predictor** (reverse diffusion): ``d = sigma(t_i) ** 2 - sigma(t_{i+1}) ** 2`` (``sigma = 0``
  after the last time), ``x_mean = x + d s(x, c, t_i)``, ``x <- x_mean + sqrt(d) z``.

The result is the last ``x_mean`` (no noise added at the end). Noise draws are used in that order:
one for the start, then per time ``corrector_steps`` draws and one for the predictor.

``sde = "ouve"`` (SGMSE+, Richter et al., IEEE/ACM TASLP 2023): the Ornstein-Uhlenbeck SDE
``dx = theta (y - x) dt + g(t) dw`` with ``g(t) = sigma(t) sqrt(2 ln(sigma_max / sigma_min))``,
marginal std ``std(t)`` in closed form (:meth:`Schedule.marginal_std`). The start is
``condition + std(1) z``; the predictor is Euler-Maruyama on the reverse SDE with ``dt`` the gap to
the next time (``t_eps`` for the last one): ``x_mean = x - theta (y - x) dt + g(t)^2 dt s``,
``x = x_mean + g(t) sqrt(dt) z``. ``corrector = "annealed"`` uses the step
``e = 2 (snr std(t)) ** 2`` instead of the norm ratio. ``noise_std`` scales the draws of
:func:`draw_noise` (``sqrt(1/2)``: complex standard Gaussian noise in real/imag parts).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .errors import RealtimeError

#: a score function: ``(x [C, T], condition [C, T], t) -> score [C, T]``
ScoreFunction = Callable[[np.ndarray, np.ndarray, float], np.ndarray]
#: supported SDEs
SDES = ("ve", "ouve")
#: Langevin corrector step rules: the norm ratio, or annealed by the marginal std
CORRECTORS = ("langevin", "annealed")
#: where the sampler starts: the condition (noisy input) or zeros
STARTS = ("condition", "zero")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The sampler schedule stored in an export's ``schedule`` metadata (see the module docstring)."""

    sigma_min: float
    sigma_max: float
    num_steps: int
    corrector_steps: int = 1
    snr: float = 0.15
    t_eps: float = 0.03
    start: str = "condition"
    sde: str = "ve"
    seed: int = 0
    theta: float = 0.0
    corrector: str = "langevin"
    noise_std: float = 1.0

    def __post_init__(self) -> None:
        if self.corrector not in CORRECTORS or not self.noise_std > 0 or self.theta < 0:
            raise RealtimeError(
                f"a sampler schedule needs a corrector in {', '.join(CORRECTORS)}, noise_std > 0 and theta >= 0"
            )
        if self.sde not in SDES:
            raise RealtimeError(f"unknown sampler SDE {self.sde!r} (known: {', '.join(SDES)})")
        if self.start not in STARTS:
            raise RealtimeError(f"unknown sampler start {self.start!r} (known: {', '.join(STARTS)})")
        if not 0 < self.sigma_min < self.sigma_max or self.num_steps < 1 or self.corrector_steps < 0:
            raise RealtimeError(
                "a sampler schedule needs 0 < sigma_min < sigma_max, num_steps >= 1 and corrector_steps >= 0"
            )
        if not 0 < self.t_eps < 1 or self.snr < 0:
            raise RealtimeError("a sampler schedule needs 0 < t_eps < 1 and snr >= 0")

    @classmethod
    def from_metadata(cls, values: Mapping[str, Any] | None) -> "Schedule":
        """The schedule of an export's ``schedule`` metadata entry."""
        if not values:
            raise RealtimeError("a sampler export needs a 'schedule' metadata entry")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise RealtimeError(f"unknown sampler schedule entries: {', '.join(unknown)}")
        try:
            return cls(**dict(values))
        except TypeError as error:
            raise RealtimeError(f"incomplete sampler schedule ({error})") from error

    @property
    def num_draws(self) -> int:
        """Noise arrays one run uses."""
        return 1 + self.num_steps * (self.corrector_steps + 1)

    def times(self) -> np.ndarray:
        """The ``num_steps`` diffusion times, from 1 down to ``t_eps``."""
        return np.linspace(1.0, self.t_eps, self.num_steps)

    def sigma(self, t: float) -> float:
        """Noise level at time ``t``."""
        return float(self.sigma_min * (self.sigma_max / self.sigma_min) ** t)

    def marginal_std(self, t: float) -> float:
        """Std of the forward SDE's marginal at ``t`` (VE: ``sigma(t)``; OUVE: the closed form)."""
        if self.sde == "ve":
            return self.sigma(t)
        log_ratio = math.log(self.sigma_max / self.sigma_min)
        rate = self.theta + log_ratio
        variance = self.sigma_min**2 * math.exp(-2.0 * self.theta * t) * math.expm1(2.0 * rate * t)
        return math.sqrt(variance * log_ratio / rate)

    def diffusion(self, t: float) -> float:
        """``g(t)`` of the OUVE SDE."""
        return self.sigma(t) * math.sqrt(2.0 * math.log(self.sigma_max / self.sigma_min))


def draw_noise(schedule: Schedule, shape: tuple[int, ...], generator: np.random.Generator) -> np.ndarray:
    """Every noise array of one run, ``[num_draws, *shape]`` float32 standard normal."""
    draws = generator.standard_normal((schedule.num_draws, *shape))
    return (draws * schedule.noise_std if schedule.noise_std != 1.0 else draws).astype(np.float32)


def pc_sample(score: ScoreFunction, condition: np.ndarray, schedule: Schedule, noise: np.ndarray) -> np.ndarray:
    """Run the predictor-corrector sampler; returns the sample, shaped like ``condition``.

    Args:
        score: the score network (e.g. :class:`OnnxScore`).
        condition: the conditioning input ``[C, T]`` (e.g. the noisy signal).
        schedule: the schedule.
        noise: ``[schedule.num_draws, C, T]`` standard normal draws (see :func:`draw_noise`).
    """
    condition = np.asarray(condition, dtype=np.float32)
    if noise.shape != (schedule.num_draws, *condition.shape):
        raise RealtimeError(
            f"the sampler needs noise of shape {(schedule.num_draws, *condition.shape)}, got {noise.shape}"
        )
    times = schedule.times()
    start = condition if schedule.start == "condition" else np.zeros_like(condition)
    x = start + np.float32(schedule.marginal_std(float(times[0]))) * noise[0]  # [C, T]
    x_mean = x
    draw = 1
    for index, time in enumerate(times):
        t = float(time)
        for _ in range(schedule.corrector_steps):
            gradient = score(x, condition, t)
            z = noise[draw]
            draw += 1
            if schedule.corrector == "annealed":
                ratio = schedule.snr * schedule.marginal_std(t)
            else:
                ratio = schedule.snr * float(np.linalg.norm(z)) / max(float(np.linalg.norm(gradient)), 1e-12)
            step = 2.0 * ratio * ratio
            x = x + np.float32(step) * gradient + np.float32(math.sqrt(2.0 * step)) * z
        if schedule.sde == "ouve":
            dt = float(times[index] - times[index + 1]) if index + 1 < len(times) else float(times[-1])
            diffusion = schedule.diffusion(t)
            drift = np.float32(schedule.theta * dt) * (condition - x)
            x_mean = x - drift + np.float32(diffusion * diffusion * dt) * score(x, condition, t)
            x = x_mean + np.float32(diffusion * math.sqrt(dt)) * noise[draw]
            draw += 1
            continue
        sigma_next = schedule.sigma(float(times[index + 1])) if index + 1 < len(times) else 0.0
        variance = schedule.sigma(t) ** 2 - sigma_next**2
        x_mean = x + np.float32(variance) * score(x, condition, t)
        x = x_mean + np.float32(math.sqrt(variance)) * noise[draw]
        draw += 1
    return x_mean


class OnnxScore:
    """The score network of a sampler export as a :data:`ScoreFunction`.

    Args:
        session: the ONNX Runtime session.
        input_names: graph input names of ``(x, condition, t)``.
    """

    def __init__(self, session: Any, input_names: list[str]) -> None:
        if len(input_names) != 3:
            raise RealtimeError(f"a score network takes (x, condition, t), its metadata names {input_names}")
        self.session = session
        self.input_names = list(input_names)
        self._time = np.zeros(1, dtype=np.float32)

    def __call__(self, x: np.ndarray, condition: np.ndarray, t: float) -> np.ndarray:
        """``score [C, T]`` of ``x [C, T]`` given ``condition [C, T]`` at time ``t``."""
        self._time[0] = t
        feeds = dict(zip(self.input_names, (x[None], condition[None], self._time)))  # [C, T] -> [1, C, T]
        (score,) = self.session.run(None, feeds)
        return score.reshape(x.shape)  # [1, C, T] (or [1, 1, C, T]) -> [C, T]
