"""Training objectives by name: each computes and backpropagates; the legacy loss keys map onto them."""
from __future__ import annotations

import pytest
import torch

from recipes.training.objectives import (
    OBJECTIVES,
    build_objective,
    legacy_objective_spec,
    objective_from_config,
    training_loss,
)
from recipes.trainer import DEFAULT_CONFIG, merge_config
from speechkit import losses
from speechkit.errors import ConfigError

LENGTH = 1600


def make_batch(sources: int = 1, input_channels: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random targets ``[2, S, 1, T]`` in noise: mixture ``[2, C_in, T]`` (and an echo ``[2, 1, T]``)."""
    generator = torch.Generator().manual_seed(seed)
    targets = 0.1 * torch.randn(2, sources, 1, LENGTH, generator=generator)
    noise = 0.05 * torch.randn(2, input_channels, LENGTH, generator=generator)
    mixture = targets.sum(dim=1) + noise  # [2, 1, T] + [2, C_in, T]
    return {"mixture": mixture, "targets": targets, "echo": noise[:, :1]}


class ScaleNet(torch.nn.Module):
    """``x [B, C_in, T] -> w * x[:, :1] [B, S, 1, T]``; ``return_echo`` adds an echo estimate."""

    def __init__(self, sources: int = 1) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.full((sources, 1, 1), 0.8))

    def forward(self, x: torch.Tensor, return_echo: bool = False):
        estimate = self.weight * x[:, None, :1]  # [B, 1, 1, T] * [S, 1, 1] -> [B, S, 1, T]
        if return_echo:
            return estimate, (1 - self.weight) * x[:, None, :1]
        return estimate


SPECS = {
    "pit_si_sdr": ({"name": "pit_si_sdr"}, 2, 1),
    "si_sdr": ({"name": "si_sdr"}, 1, 1),
    "snr": ({"name": "snr"}, 1, 1),
    "echo_aware": ({"name": "echo_aware", "echo_weight": 0.5, "spectral_weight": 2.0, "spectral_n_fft": 256,
                    "spectral_hop_length": 64}, 1, 2),
    "multi_resolution_stft": ({"name": "multi_resolution_stft", "resolutions": [[256, 64], [128, 32]]}, 1, 1),
    "complex_spectral_mapping": ({"name": "complex_spectral_mapping", "n_fft": 256, "hop_length": 64}, 1, 1),
    "combination": ({"name": "combination", "terms": [{"name": "snr"}, {"name": "multi_resolution_stft", "weight": 2.0}]}, 1, 1),
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_objective_computes_and_backpropagates(name: str) -> None:
    spec, sources, input_channels = SPECS[name]
    objective = build_objective(spec)
    model = ScaleNet(sources)
    batch = make_batch(sources, input_channels)
    loss = objective.training_loss(model, batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.weight.grad is not None and torch.isfinite(model.weight.grad).all()
    assert model.weight.grad.abs().sum() > 0


def test_every_registered_objective_has_a_test() -> None:
    assert set(OBJECTIVES) == set(SPECS) | {"denoising_score_matching"}


def test_combination_is_the_weighted_sum() -> None:
    batch = make_batch()
    estimate = 0.7 * batch["targets"] + 0.01
    combined = build_objective(SPECS["combination"][0]).loss(estimate, batch)
    expected = -losses.snr(estimate, batch["targets"]).mean() + 2.0 * losses.multi_resolution_stft_loss(
        estimate, batch["targets"]
    ).mean()
    torch.testing.assert_close(combined, expected)


def test_complex_spectral_mapping_speech_and_implied_noise() -> None:
    batch = make_batch()
    objective = build_objective({"name": "complex_spectral_mapping", "n_fft": 256, "hop_length": 64})
    assert float(objective.loss(batch["targets"].clone(), batch)) == pytest.approx(0.0, abs=1e-6)
    estimate = 0.5 * batch["targets"]
    assert float(objective.loss(estimate, batch)) > 0.01
    # without the magnitude term the implied noise's error is the speech error negated: same L1
    no_magnitude = build_objective(
        {"name": "complex_spectral_mapping", "n_fft": 256, "hop_length": 64, "magnitude_weight": 0.0}
    )
    speech_only = losses.complex_spectral_loss(estimate, batch["targets"], 256, 64, magnitude_weight=0.0).mean()
    torch.testing.assert_close(no_magnitude.loss(estimate, batch), speech_only)
    # with it, the noise term differs (|mix - est| is not |tgt - est|)
    assert not torch.isclose(objective.loss(estimate, batch), losses.complex_spectral_loss(
        estimate, batch["targets"], 256, 64).mean())


def test_magnitude_term_counters_the_shrinkage_of_the_real_imaginary_l1() -> None:
    # an estimate whose phase is unrelated to the target's (noise of the target's spectrum): the L1 on
    # real and imaginary parts alone is lowest for silence, the magnitude term moves the best gain up
    # (why the causal DeFTAN-II recipe adds it: recipes/configs/enhance_deftan2_small_causal_4ch_mag.yaml)
    generator = torch.Generator().manual_seed(0)
    target, unrelated = torch.randn(2, 4, 8000, generator=generator)
    gains = [0.0, 0.25, 0.5, 0.75, 1.0]

    def best_gain(magnitude_weight: float) -> float:
        scores = [float(losses.complex_spectral_loss(gain * unrelated, target, 512, 256,
                                                     magnitude_weight=magnitude_weight).mean()) for gain in gains]
        return gains[scores.index(min(scores))]

    assert best_gain(0.0) == 0.0
    assert best_gain(1.0) >= 0.25


class ToyScoreModel(torch.nn.Module):
    """A variance-exploding SDE ``x_t = x0 + sigma(t) z``, ``sigma(t) = 0.1 + t``, and a learnable
    score ``-(x_t - a * y) / sigma^2``; ``cheat`` makes the score exact by remembering ``x0``."""

    def __init__(self, cheat: bool = False) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.5))
        self.cheat = cheat
        self.clean: torch.Tensor | None = None

    def perturb(self, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor):
        std = 0.1 + t  # [B]
        noise = torch.randn_like(x0)
        self.clean = x0
        return x0 + std[:, None, None, None] * noise, std, noise

    def score(self, x_t: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        std = (0.1 + t)[:, None, None, None]
        centre = self.clean if self.cheat else self.scale * y[:, None]  # [B, 1, 1, T]
        return -(x_t - centre) / std**2


def test_denoising_score_matching() -> None:
    objective = build_objective({"name": "denoising_score_matching", "t_eps": 0.05})
    batch = make_batch()
    torch.manual_seed(0)
    exact = objective.training_loss(ToyScoreModel(cheat=True), batch)
    assert float(exact) == pytest.approx(0.0, abs=1e-10)  # the true score zeroes sigma^2-weighted DSM
    model = ToyScoreModel()
    loss = objective.training_loss(model, batch)
    assert torch.isfinite(loss) and float(loss.detach()) > 0.0
    loss.backward()
    assert model.scale.grad is not None and float(model.scale.grad.abs()) > 0
    with pytest.raises(ConfigError, match="perturb"):
        objective.training_loss(ScaleNet(), batch)
    with pytest.raises(ConfigError, match="combination"):
        build_objective({"name": "combination", "terms": [{"name": "denoising_score_matching"}]})


def test_legacy_loss_keys_map_to_objectives() -> None:
    assert legacy_objective_spec("separation", DEFAULT_CONFIG["loss"]) == {"name": "pit_si_sdr"}
    assert legacy_objective_spec("enhancement", DEFAULT_CONFIG["loss"]) == {"name": "si_sdr"}
    assert legacy_objective_spec("aec", {"echo_weight": 0.1, "aec_floor_db": 40.0}) == {
        "name": "echo_aware", "floor_db": 40.0, "echo_weight": 0.1}
    spec = legacy_objective_spec("enhancement", {"snr_weight": 0.5, "stft_weight": 2.0})
    assert spec == {"name": "combination", "terms": [
        {"name": "si_sdr"}, {"name": "snr", "weight": 0.5}, {"name": "multi_resolution_stft", "weight": 2.0}]}
    # the legacy function and the objective agree
    batch = make_batch()
    estimate = 0.7 * batch["targets"] + 0.01
    legacy = training_loss("enhancement", snr_weight=0.5, stft_weight=2.0)(estimate, batch["targets"])
    torch.testing.assert_close(legacy, build_objective(spec).loss(estimate, batch))
    config = merge_config(DEFAULT_CONFIG, {"objective": {"name": "snr"}, "loss": {"snr_weight": 1.0}})
    with pytest.raises(ConfigError, match="not both"):
        objective_from_config(config)


def test_bad_objective_specs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown objective 'l1'"):
        build_objective({"name": "l1"})
    with pytest.raises(ConfigError, match="objective 'snr'"):
        build_objective({"name": "snr", "floor_db": 3})
    with pytest.raises(ConfigError, match="non-empty"):
        build_objective({"name": "combination", "terms": []})


def test_echo_aware_spectral_term_counts_near_end_items_only() -> None:
    batch = make_batch(input_channels=2)
    batch["targets"][1] = 0.0  # item 1: far-end single talk
    plain = build_objective({"name": "echo_aware"})
    spectral = build_objective({"name": "echo_aware", "spectral_weight": 3.0, "spectral_n_fft": 256,
                                "spectral_hop_length": 64})
    estimate = 0.7 * batch["targets"] + 0.01 * batch["mixture"][:, None, :1]
    microphone = batch["mixture"][:, 0]
    scale = microphone.pow(2).mean(dim=-1).add(1e-8).sqrt()[:, None]
    near_end = losses.compressed_spectral_loss(estimate[0, 0, 0] / scale[0], batch["targets"][0, 0, 0] / scale[0], 256, 64)
    expected = plain.loss(estimate, batch) + 3.0 * near_end / 2  # the far-end item adds nothing, the mean is over 2
    torch.testing.assert_close(spectral.loss(estimate, batch), expected)
    # the term is level-free: scaling every signal leaves it unchanged
    scaled = {key: 10.0 * value for key, value in batch.items()}
    torch.testing.assert_close(spectral.spectral_term(10.0 * estimate, scaled["targets"], 10.0 * microphone),
                               spectral.spectral_term(estimate, batch["targets"], microphone))
