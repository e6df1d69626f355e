"""Training objectives by name: how a batch and a model become one scalar loss.

A config names its objective with keyword arguments (``objective: {name: snr}``, or a weighted
``combination`` of several); with ``objective: null`` the task and the legacy ``loss:`` keys pick it
(:func:`legacy_objective_spec`). Batches are ``{"mixture": [B, C_in, T], "targets": [B, S, C, T],
...}`` (an echo canceller's also hold ``"echo": [B, 1, T]``).

An :class:`Objective` has three entry points:

* :meth:`Objective.loss` ``(estimate, batch)``: the loss of a model output (validation, combinations);
* :meth:`Objective.training_loss` ``(model, batch)``: runs the model and returns the loss (the
  echo-aware objective also asks the model for its echo estimate; score matching perturbs the
  targets and asks the model for a score);
* :meth:`Objective.validation_loss` ``(model, estimate, batch)``: the loss logged at validation.

A model that defines ``training_step(batch, objective) -> loss`` is trained through that method
instead of :meth:`Objective.training_loss` (see :class:`recipes.training.step.TrainingStep`).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch

from speechkit import losses
from speechkit.errors import ConfigError
from speechkit.tasks import Task


def echo_aware_loss(
    estimate: torch.Tensor, reference: torch.Tensor, microphone: torch.Tensor, floor_db: float = 50.0
) -> torch.Tensor:
    """Negative SNR with an energy floor tied to the microphone, per item: ``[B, ...T] -> [B]``.

    ``10 log10(|ref - est|^2 + tau) - 10 log10(|ref|^2 + tau)`` with
    ``tau = 10^(-floor_db / 10) |mic|^2`` (the soft threshold of Wisdom et al., "Unsupervised sound
    separation using mixture invariant training", NeurIPS 2020). Scale-dependent, so a silent
    reference (far-end single talk) means "output silence": the loss is then
    ``10 log10(1 + |est|^2 / tau) >= 0``, i.e. it rewards echo suppression up to ``floor_db`` dB
    below the microphone; with speech in the reference it is the negative SNR, capped near
    ``floor_db`` dB above the microphone level. Energies are summed over every axis after the batch.

    Args:
        estimate: ``[B, ...]`` output (e.g. ``[B, 1, 1, T]``).
        reference: same shape; may be all zeros.
        microphone: ``[B, ...]`` the microphone signal of each item (any trailing shape).
        floor_db: how far below the microphone energy the floor sits.
    """
    dims = tuple(range(1, estimate.dim()))
    floor = 10.0 ** (-float(floor_db) / 10.0) * microphone.pow(2).flatten(1).sum(dim=1) + 1e-8  # [B]
    error_energy = (reference - estimate).pow(2).sum(dim=dims)  # [B]
    reference_energy = reference.pow(2).sum(dim=dims)  # [B]
    return 10.0 * torch.log10(error_energy + floor) - 10.0 * torch.log10(reference_energy + floor)


def _full_precision(function: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
    """``function(*tensors)`` in float32 with autocast off (losses stay exact under bf16/fp16)."""
    with torch.autocast(device_type=tensors[0].device.type, enabled=False):
        return function(*(tensor.float() for tensor in tensors))


def _reference_input(batch: Mapping[str, Any], channels: int) -> torch.Tensor:
    """The first ``channels`` channels of the mixture (the reference microphone(s)): ``[B, C, T]``."""
    return batch["mixture"][:, :channels]


class Objective:
    """Base class: a signal-level loss of the model output against ``batch["targets"]``."""

    #: the registry name
    name = ""

    def loss(self, estimate: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        """Scalar loss of ``estimate [B, S, C, T]`` for ``batch`` (float32)."""
        raise NotImplementedError

    def training_loss(self, model: torch.nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        """Run ``model`` on ``batch["mixture"]`` (under any active autocast) and return the loss."""
        estimate = model(batch["mixture"])  # [B, C_in, T] -> [B, S, C, T]
        return _full_precision(lambda output: self.loss(output, batch), estimate)

    def validation_loss(
        self, model: torch.nn.Module, estimate: torch.Tensor, batch: Mapping[str, Any]
    ) -> torch.Tensor:
        """The loss logged at validation: :meth:`loss` of the model's output."""
        return self.loss(estimate, batch)


class _NegativeMetric(Objective):
    """Mean of ``-metric(estimate, targets, zero_mean)`` over items, sources and channels."""

    metric: ClassVar[Callable[..., torch.Tensor]]

    def __init__(self, zero_mean: bool) -> None:
        self.zero_mean = bool(zero_mean)

    def loss(self, estimate: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        return -type(self).metric(estimate, batch["targets"], zero_mean=self.zero_mean).mean()


class NegativeSiSdr(_NegativeMetric):
    """Mean negative SI-SDR over items, sources and channels."""

    name = "si_sdr"
    metric = staticmethod(losses.si_sdr)

    def __init__(self, zero_mean: bool = True) -> None:
        super().__init__(zero_mean)


class NegativeSnr(_NegativeMetric):
    """Mean negative SNR (scale-dependent) over items, sources and channels."""

    name = "snr"
    metric = staticmethod(losses.snr)

    def __init__(self, zero_mean: bool = False) -> None:
        super().__init__(zero_mean)


class PitSiSdr(Objective):
    """Utterance-level permutation-invariant negative SI-SDR (separation)."""

    name = "pit_si_sdr"

    def loss(self, estimate: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        loss, _ = losses.pit_loss(estimate, batch["targets"], losses.neg_si_sdr)
        return loss


class MultiResolutionStft(Objective):
    """Mean multi-resolution STFT loss (:func:`speechkit.losses.multi_resolution_stft_loss`)."""

    name = "multi_resolution_stft"

    def __init__(self, resolutions: Sequence[Sequence[int]] | None = None, eps: float = 1e-3) -> None:
        self.kwargs: dict[str, Any] = {"eps": float(eps)}
        if resolutions is not None:
            self.kwargs["resolutions"] = tuple((int(n_fft), int(hop)) for n_fft, hop in resolutions)

    def loss(self, estimate: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        return losses.multi_resolution_stft_loss(estimate, batch["targets"], **self.kwargs).mean()


class ComplexSpectralMapping(Objective):
    """DeFTAN-II's complex spectral mapping loss on the speech and on the implied noise.

    ``0.5 * D(est, targets) + 0.5 * D(mix - sum(est), mix - sum(targets))`` with ``D`` the L1
    distance of real part, imaginary part and magnitude of the STFT
    (:func:`speechkit.losses.complex_spectral_loss`); ``mix`` is the reference channel(s) of the
    mixture. ``noise_weight`` sets the noise share (0.5 by default).
    """

    name = "complex_spectral_mapping"

    def __init__(
        self, n_fft: int = 512, hop_length: int = 128, magnitude_weight: float = 1.0, noise_weight: float = 0.5
    ) -> None:
        self.kwargs = {"n_fft": int(n_fft), "hop_length": int(hop_length), "magnitude_weight": float(magnitude_weight)}
        self.noise_weight = float(noise_weight)

    def loss(self, estimate: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        targets = batch["targets"]
        speech = losses.complex_spectral_loss(estimate, targets, **self.kwargs).mean()
        mixture = _reference_input(batch, targets.shape[2]).to(estimate.dtype)  # [B, C, T]
        noise_estimate = mixture - estimate.sum(dim=1)  # [B, S, C, T] -> [B, C, T]
        noise = mixture - targets.sum(dim=1)  # [B, S, C, T] -> [B, C, T]
        noise_term = losses.complex_spectral_loss(noise_estimate, noise, **self.kwargs).mean()
        return (1.0 - self.noise_weight) * speech + self.noise_weight * noise_term


class EchoAware(Objective):
    """The echo canceller's objective: mean :func:`echo_aware_loss` of the near-end estimate.

    With ``echo_weight`` and an ``"echo"`` entry in the batch, training also asks the model for
    its echo estimate (``model(mixture, return_echo=True)``) and adds ``echo_weight`` times the
    same loss of it against the true echo in the microphone.

    With ``spectral_weight``, items with near-end speech (double talk, near-end single talk) also
    add ``spectral_weight`` times :func:`speechkit.losses.compressed_spectral_loss` of the
    near-end estimate, both signals divided by the item's microphone RMS: a perceptual term
    against the near-end distortion an SNR tolerates. Far-end single talk keeps the energy term
    alone.
    """

    name = "echo_aware"

    def __init__(
        self, floor_db: float = 50.0, echo_weight: float = 0.0, spectral_weight: float = 0.0,
        spectral_n_fft: int = 512, spectral_hop_length: int = 128,
    ) -> None:
        self.floor_db = float(floor_db)
        self.echo_weight = float(echo_weight)
        self.spectral_weight = float(spectral_weight)
        self.spectral_stft = {"n_fft": int(spectral_n_fft), "hop_length": int(spectral_hop_length)}

    def combine(
        self,
        estimate: torch.Tensor,
        targets: torch.Tensor,
        mixture: torch.Tensor,
        echo_estimate: torch.Tensor | None = None,
        echo: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Near-end term (plus the weighted echo term when both echo tensors are given)."""
        microphone = mixture[:, 0]  # [B, 2, T] -> [B, T]
        loss = echo_aware_loss(estimate, targets, microphone, self.floor_db).mean()
        if self.spectral_weight:
            loss = loss + self.spectral_weight * self.spectral_term(estimate, targets, microphone)
        if self.echo_weight and echo_estimate is not None and echo is not None:
            echo = echo.reshape(echo_estimate.shape)  # [B, 1, T] -> [B, 1, 1, T]
            loss = loss + self.echo_weight * echo_aware_loss(echo_estimate, echo, microphone, self.floor_db).mean()
        return loss

    def spectral_term(self, estimate: torch.Tensor, targets: torch.Tensor, microphone: torch.Tensor) -> torch.Tensor:
        """Batch mean of the compressed spectral loss over the items with near-end speech (0 items: 0)."""
        scale = microphone.pow(2).mean(dim=-1).add(1e-8).sqrt()  # [B, T] -> [B]
        batch = estimate.shape[0]
        flat_estimate = estimate.reshape(batch, -1) / scale[:, None]  # [B, 1, 1, T] -> [B, T]
        flat_targets = targets.reshape(batch, -1) / scale[:, None]  # [B, 1, 1, T] -> [B, T]
        near_end = flat_targets.abs().amax(dim=-1) > 0.0  # [B]
        per_item = losses.compressed_spectral_loss(flat_estimate, flat_targets, **self.spectral_stft)  # [B]
        return (per_item * near_end).sum() / batch

    def loss(self, estimate: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.combine(estimate, batch["targets"], batch["mixture"])

    def training_loss(self, model: torch.nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        if not (self.echo_weight and "echo" in batch):
            return super().training_loss(model, batch)
        estimate, echo_estimate = model(batch["mixture"], return_echo=True)  # [B, 1, 1, T] each
        return _full_precision(
            lambda near, echo_out: self.combine(near, batch["targets"], batch["mixture"], echo_out, batch["echo"]),
            estimate, echo_estimate,
        )


class DenoisingScoreMatching(Objective):
    """Sigma^2-weighted denoising score matching for a score-based (diffusion) model, as SGMSE+.

    The model must provide ``perturb(x0, y, t) -> (x_t, std, z)`` (sample the forward SDE's
    marginal at times ``t [B]`` given clean targets ``x0`` and the mixture ``y``) and
    ``score(x_t, y, t)`` (its score estimate, the shape of ``x_t``). With ``t ~ U(t_eps, t_max)``
    per item the loss is ``mean |score * std + z|^2``
    (:func:`speechkit.losses.score_matching_loss`). Validation logs the same loss (under the
    validation seed); the model's ``forward`` is its sampler.
    """

    name = "denoising_score_matching"

    def __init__(self, t_eps: float = 0.03, t_max: float = 1.0) -> None:
        if not 0.0 <= float(t_eps) < float(t_max):
            raise ConfigError("denoising_score_matching needs 0 <= t_eps < t_max")
        self.t_eps = float(t_eps)
        self.t_max = float(t_max)

    def training_loss(self, model: torch.nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        for method in ("perturb", "score"):
            if not callable(getattr(model, method, None)):
                raise ConfigError(f"denoising_score_matching needs a model with a {method}() method")
        clean, mixture = batch["targets"], batch["mixture"]
        times = torch.rand(clean.shape[0], device=clean.device) * (self.t_max - self.t_eps) + self.t_eps  # [B]
        perturbed, std, noise = model.perturb(clean, mixture, times)
        score = model.score(perturbed, mixture, times)
        return _full_precision(lambda *tensors: losses.score_matching_loss(*tensors).mean(), score, std, noise)

    def loss(self, estimate: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        raise ConfigError("denoising_score_matching is computed from the model, not from an output")

    def validation_loss(
        self, model: torch.nn.Module, estimate: torch.Tensor, batch: Mapping[str, Any]
    ) -> torch.Tensor:
        return self.training_loss(model, batch)


class Combination(Objective):
    """A weighted sum of output-based objectives: ``terms: [{name: snr, weight: 1.0}, ...]``.

    The model runs once; each term's :meth:`Objective.loss` is weighted (``weight``, default 1)
    and summed. Terms that need the model itself (score matching) cannot be combined; an
    ``echo_aware`` term contributes its near-end loss only (use ``echo_aware`` alone for the echo term).
    """

    name = "combination"

    def __init__(self, terms: Sequence[Mapping[str, Any]]) -> None:
        if not terms:
            raise ConfigError("objective 'combination' needs a non-empty list of terms")
        self.terms: list[tuple[float, Objective]] = []
        for term in terms:
            spec = dict(term)
            weight = float(spec.pop("weight", 1.0))
            objective = build_objective(spec)
            if isinstance(objective, DenoisingScoreMatching):
                raise ConfigError("denoising_score_matching cannot be part of a combination")
            self.terms.append((weight, objective))

    def loss(self, estimate: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        total: torch.Tensor | None = None
        for weight, objective in self.terms:
            term = objective.loss(estimate, batch)
            term = term if weight == 1.0 else weight * term
            total = term if total is None else total + term
        assert total is not None
        return total


#: objective classes by config name
OBJECTIVES: Mapping[str, type[Objective]] = {
    cls.name: cls
    for cls in (
        PitSiSdr, NegativeSiSdr, NegativeSnr, EchoAware, MultiResolutionStft, ComplexSpectralMapping,
        DenoisingScoreMatching, Combination,
    )
}


def build_objective(spec: Mapping[str, Any]) -> Objective:
    """The objective ``spec["name"]`` built with the other keys of ``spec`` as keyword arguments."""
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ConfigError("an objective must be a mapping with a 'name'")
    name = spec["name"]
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r} (known: {', '.join(sorted(OBJECTIVES))})")
    kwargs = {key: value for key, value in spec.items() if key != "name"}
    try:
        return OBJECTIVES[name](**kwargs)
    except TypeError as error:
        raise ConfigError(f"objective {name!r}: {error}") from error


def legacy_objective_spec(task: str, loss: Mapping[str, Any]) -> dict[str, Any]:
    """The objective the legacy ``loss:`` keys describe for ``task``.

    aec: ``echo_aware`` (``aec_floor_db``, ``echo_weight``); separation: ``pit_si_sdr``; any other
    task: ``si_sdr``, in a ``combination`` with ``snr`` (``snr_weight``) and
    ``multi_resolution_stft`` (``stft_weight``) when those weights are set.
    """
    if task == Task.AEC:
        return {"name": "echo_aware", "floor_db": float(loss.get("aec_floor_db", 50.0)),
                "echo_weight": float(loss.get("echo_weight", 0.0))}
    if task == Task.SEPARATION:
        return {"name": "pit_si_sdr"}
    terms: list[dict[str, Any]] = [{"name": "si_sdr"}]
    if float(loss.get("snr_weight", 0.0)):
        terms.append({"name": "snr", "weight": float(loss["snr_weight"])})
    if float(loss.get("stft_weight", 0.0)):
        terms.append({"name": "multi_resolution_stft", "weight": float(loss["stft_weight"])})
    return terms[0] if len(terms) == 1 else {"name": "combination", "terms": terms}


def objective_spec(config: Mapping[str, Any]) -> dict[str, Any]:
    """The objective spec of a resolved config: ``objective``, or the legacy ``loss`` keys' mapping."""
    from recipes.training.config import DEFAULT_CONFIG

    spec = config.get("objective")
    if spec is None:
        return legacy_objective_spec(config["task"], config["loss"])
    if dict(config["loss"]) != dict(DEFAULT_CONFIG["loss"]):
        raise ConfigError("set either 'objective' or the legacy 'loss' keys, not both")
    return dict(spec)


def objective_from_config(config: Mapping[str, Any]) -> Objective:
    """Build the objective of a resolved config (see :func:`objective_spec`)."""
    return build_objective(objective_spec(config))


def training_loss(
    task: str, snr_weight: float = 0.0, echo_weight: float = 0.0, aec_floor_db: float = 50.0,
    stft_weight: float = 0.0,
) -> Callable[..., torch.Tensor]:
    """The legacy loss function of ``task``: ``loss(estimate[B, S, C, T], targets[B, S, C, T]) -> scalar``.

    Echo cancellation (``"aec"``): ``loss(estimate, targets, mixture, echo_estimate=None, echo=None)``
    with ``mixture [B, 2, T]`` (microphone first), as :meth:`EchoAware.combine`. Kept for callers
    of the old API; new code uses :func:`build_objective`.
    """
    keys = {"snr_weight": snr_weight, "echo_weight": echo_weight, "aec_floor_db": aec_floor_db,
            "stft_weight": stft_weight}
    objective = build_objective(legacy_objective_spec(task, keys))
    if isinstance(objective, EchoAware):
        return objective.combine

    def loss(estimate: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return objective.loss(estimate, {"targets": targets})

    return loss
