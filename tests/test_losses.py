"""SNR, SI-SDR and PIT against hand-computed cases."""
from __future__ import annotations

import math

import pytest
import torch

from speechkit.errors import ConfigError
from speechkit.losses import (
    compressed_spectral_loss,
    multi_resolution_stft_loss,
    neg_si_sdr,
    neg_snr,
    pairwise_losses,
    pit_loss,
    reorder_sources,
    si_sdr,
    snr,
)


def _orthogonal_pair(length: int = 8000) -> tuple[torch.Tensor, torch.Tensor]:
    """Two zero-mean, exactly orthogonal signals of unit mean power."""
    time = torch.arange(length, dtype=torch.float64)
    reference = math.sqrt(2.0) * torch.sin(2 * math.pi * 5 * time / length)
    noise = math.sqrt(2.0) * torch.sin(2 * math.pi * 11 * time / length)
    return reference, noise


def test_si_sdr_is_scale_invariant_and_huge_for_scaled_reference() -> None:
    reference = torch.randn(3, 4000, dtype=torch.float64)
    assert torch.all(si_sdr(2.0 * reference, reference) > 100.0)
    estimate = reference + 0.1 * torch.randn_like(reference)
    torch.testing.assert_close(si_sdr(3.0 * estimate, reference), si_sdr(estimate, reference))


def test_si_sdr_and_snr_exact_db_with_orthogonal_noise() -> None:
    reference, noise = _orthogonal_pair()
    for noise_gain, expected_db in ((1.0, 0.0), (0.1, 20.0), (math.sqrt(0.5), 10 * math.log10(2.0))):
        estimate = reference + noise_gain * noise
        assert si_sdr(estimate, reference).item() == pytest.approx(expected_db, abs=1e-6)
        assert snr(estimate, reference).item() == pytest.approx(expected_db, abs=1e-6)


def test_snr_is_not_scale_invariant() -> None:
    reference, _ = _orthogonal_pair()
    # estimate 0.5 * ref: error = 0.5 ref, SNR = 10 log10(1 / 0.25) = 6.02 dB; SI-SDR is huge
    assert snr(0.5 * reference, reference).item() == pytest.approx(10 * math.log10(4.0), abs=1e-9)
    assert si_sdr(0.5 * reference, reference).item() > 100.0


def test_zero_mean_option() -> None:
    reference, noise = _orthogonal_pair()
    estimate = reference + 0.1 * noise + 5.0  # a DC offset
    assert si_sdr(estimate, reference, zero_mean=True).item() == pytest.approx(20.0, abs=1e-6)
    assert si_sdr(estimate, reference, zero_mean=False).item() < 0.0
    assert snr(estimate, reference, zero_mean=True).item() == pytest.approx(20.0, abs=1e-6)


def test_eps_safe_on_silence_and_batched_shapes() -> None:
    silence = torch.zeros(2, 3, 1000)
    for metric in (si_sdr, snr, neg_si_sdr, neg_snr):
        value = metric(silence, silence)
        assert value.shape == (2, 3)
        assert torch.isfinite(value).all()
    assert torch.isfinite(si_sdr(torch.randn(1000), torch.zeros(1000))).all()


def test_negative_losses_and_gradients() -> None:
    reference = torch.randn(2, 1000)
    estimate = (reference + 0.3 * torch.randn(2, 1000)).requires_grad_()
    loss = neg_si_sdr(estimate, reference).mean()
    loss.backward()
    assert torch.isfinite(estimate.grad).all()
    torch.testing.assert_close(neg_snr(estimate, reference), -snr(estimate, reference))


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ConfigError):
        si_sdr(torch.zeros(10), torch.zeros(11))


@pytest.mark.parametrize("num_sources", [2, 3, 4])
def test_pit_finds_the_permutation(num_sources: int) -> None:
    generator = torch.Generator().manual_seed(num_sources)
    references = torch.randn(3, num_sources, 1, 800, generator=generator)
    true_permutations = torch.stack(
        [torch.randperm(num_sources, generator=generator) for _ in range(3)]
    )  # estimate j holds reference true_permutations[b, j]
    estimates = torch.stack([references[b, true_permutations[b]] for b in range(3)])
    estimates = estimates + 0.01 * torch.randn(estimates.shape, generator=generator)
    loss, permutation = pit_loss(estimates, references)
    reordered = reorder_sources(estimates, permutation)
    assert torch.all(si_sdr(reordered, references) > 30.0)
    # permutation[b, j] is the estimate for reference j: the inverse of true_permutations[b]
    assert torch.equal(true_permutations.gather(1, permutation), torch.arange(num_sources).expand(3, -1))
    assert loss.item() < -30.0


def test_pit_swapped_two_sources_matches_hand_value() -> None:
    reference, noise = _orthogonal_pair(4000)
    references = torch.stack([reference, noise])[None]  # [1, 2, T]
    estimates = torch.stack([noise + 0.1 * reference, reference + 0.1 * noise])[None]  # swapped
    loss, permutation = pit_loss(estimates, references)
    assert permutation.tolist() == [[1, 0]]
    assert loss.item() == pytest.approx(-20.0, abs=1e-6)
    pairwise = pairwise_losses(estimates, references)
    assert pairwise.shape == (1, 2, 2)
    assert pairwise[0, 1, 0].item() == pytest.approx(-20.0, abs=1e-6)


def test_pit_with_snr_loss_and_errors() -> None:
    references = torch.randn(2, 2, 500)
    loss, permutation = pit_loss(references.flip(1), references, loss_fn=neg_snr)
    assert permutation.tolist() == [[1, 0], [1, 0]]
    assert loss.item() < -100.0
    with pytest.raises(ConfigError):
        pit_loss(torch.randn(1, 5, 100), torch.randn(1, 5, 100))
    with pytest.raises(ConfigError):
        pit_loss(torch.randn(1, 2, 100), torch.randn(1, 3, 100))
    with pytest.raises(ConfigError):
        reorder_sources(torch.randn(2, 2, 10), torch.zeros(2, 3, dtype=torch.long))


def check_spectral_loss(loss, light_noise: float, heavy_noise: float, zero: float):  # noqa: ANN001, ANN201
    """The checks every spectral loss passes: ``[2, 1, T] -> [2, 1]``, ``zero`` at most for equal
    signals, larger for more noise, finite gradients. Returns reference, noise, light and heavy losses."""
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(2, 1, 8000, generator=generator)
    noise = torch.randn(2, 1, 8000, generator=generator)
    assert loss(reference, reference).shape == (2, 1)
    assert loss(reference, reference).abs().max() < zero
    light = loss(reference + light_noise * noise, reference)
    heavy = loss(reference + heavy_noise * noise, reference)
    assert torch.all(heavy > light) and torch.all(light > 0)
    estimate = (reference + 0.3 * noise).requires_grad_(True)
    loss(estimate, reference).sum().backward()
    assert torch.isfinite(estimate.grad).all()
    return reference, noise, light, heavy


def test_multi_resolution_stft_loss_is_zero_for_equal_level_invariant_and_grows_with_noise() -> None:
    reference, noise, light, _ = check_spectral_loss(multi_resolution_stft_loss, 0.1, 1.0, zero=1e-5)
    scaled = multi_resolution_stft_loss(100.0 * (reference + 0.1 * noise), 100.0 * reference)
    assert torch.allclose(scaled, light, rtol=1e-3, atol=1e-4)  # overall level does not matter
    wrong_gain = multi_resolution_stft_loss(0.5 * reference, reference)
    assert torch.all(wrong_gain > 0.1)  # but the estimate's gain relative to the reference does


def test_compressed_spectral_loss_weighs_quiet_errors_more_than_an_snr() -> None:
    reference, noise, _, heavy = check_spectral_loss(compressed_spectral_loss, 0.01, 0.1, zero=1e-6)
    # a passage 40 dB quieter at the same SNR: 1e-4 of the loud one's cost for an MSE, about
    # 0.01^0.6 = 0.063 after the 0.3 power-law compression
    quiet = compressed_spectral_loss(0.01 * (reference + 0.1 * noise), 0.01 * reference)
    assert torch.all(quiet > 0.03 * heavy) and torch.all(quiet < 0.2 * heavy)
    silent = torch.zeros(1, 8000, requires_grad=True)
    compressed_spectral_loss(silent, reference[0]).sum().backward()  # a silent output: finite gradient
    assert torch.isfinite(silent.grad).all()
