"""speechkit.metrics against hand-computed cases and on synthetic signals."""
from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from speechkit import metrics
from speechkit.errors import AudioError, ConfigError


def speech_like(seconds: float = 1.0, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Harmonic tones with a syllable-rate envelope (a crude speech stand-in)."""
    rng = np.random.default_rng(seed)
    time = np.arange(int(seconds * sample_rate)) / sample_rate
    pitch = 120 + 40 * np.sin(2 * np.pi * 1.5 * time)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voiced = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * time), 0, None) ** 2
    return (0.3 * voiced * envelope).astype(np.float64)


def test_si_sdr_hand_computed() -> None:
    reference = torch.tensor([1.0, -1.0, 1.0, -1.0])  # zero mean
    noise = torch.tensor([0.5, 0.5, -0.5, -0.5])  # zero mean, orthogonal to the reference
    expected = 10 * math.log10(4.0 / 1.0)
    assert metrics.si_sdr(reference + noise, reference).item() == pytest.approx(expected, abs=1e-6)
    assert metrics.si_sdr(3.0 * (reference + noise), reference).item() == pytest.approx(expected, abs=1e-6)
    # a scaled copy is perfect up to eps
    assert metrics.si_sdr(0.5 * reference, reference).item() > 60
    # SI-SDRi: the mixture has twice the noise amplitude -> 10 log10(4 / 4) = 0 dB at the input
    improvement = metrics.si_sdr_improvement(reference + noise, reference, reference + 2 * noise)
    assert improvement.item() == pytest.approx(expected - 0.0, abs=1e-6)


def test_si_sdr_batches_and_checks_shapes() -> None:
    reference = torch.randn(2, 3, 800)
    scores = metrics.si_sdr(reference + 0.1 * torch.randn(2, 3, 800), reference)
    assert scores.shape == (2, 3)
    with pytest.raises(AudioError):
        metrics.si_sdr(torch.zeros(2, 800), torch.zeros(3, 800))


def test_snr_hand_computed() -> None:
    reference = np.array([1.0, 1.0, 1.0, 1.0])
    estimate = np.array([1.5, 1.0, 1.0, 1.0])  # error energy 0.25, signal 4
    assert metrics.snr(estimate, reference).item() == pytest.approx(10 * math.log10(16.0), abs=1e-6)


def test_relative_level_is_what_si_sdr_cannot_see() -> None:
    reference = torch.from_numpy(speech_like(0.5))
    assert metrics.relative_level_db(reference, reference).item() == pytest.approx(0.0, abs=1e-9)
    louder, quieter = 4.5 * reference, 0.01 * reference
    assert metrics.relative_level_db(louder, reference).item() == pytest.approx(20 * math.log10(4.5), abs=1e-6)
    assert metrics.relative_level_db(quieter, reference).item() == pytest.approx(-40.0, abs=1e-6)
    distorted = reference + 0.1 * torch.from_numpy(speech_like(0.5, seed=1)).roll(800)
    assert metrics.si_sdr(4.5 * distorted, reference).item() == pytest.approx(
        metrics.si_sdr(0.01 * distorted, reference).item(), abs=1e-3)  # same SI-SDR at any level
    scores = metrics.evaluate_item(louder[None, None], reference[None, None], 16000, reference[None],
                                   metrics=("level_db",))
    assert scores["level_db"] == pytest.approx(13.06, abs=0.01)
    assert scores["input_level_db"] == pytest.approx(0.0, abs=1e-9)
    assert metrics.relative_level_db(torch.zeros(3, 100), torch.zeros(3, 100)).tolist() == [0.0] * 3  # silence


def test_best_permutation_restores_swapped_sources() -> None:
    targets = torch.randn(2, 3, 1, 400)
    order = torch.tensor([[2, 0, 1], [1, 2, 0]])
    shuffled = targets[torch.arange(2)[:, None], order] + 0.01 * torch.randn(2, 3, 1, 400)
    restored = metrics.best_permutation(shuffled, targets)
    assert torch.allclose(restored, targets, atol=0.05)
    # hand-computed case: a 2-source swap
    first, second = torch.tensor([1.0, -1.0, 1.0, -1.0]), torch.tensor([1.0, 1.0, -1.0, -1.0])
    swapped = torch.stack([second, first])[None, :, None]  # [1, 2, 1, 4]
    truth = torch.stack([first, second])[None, :, None]
    assert torch.equal(metrics.best_permutation(swapped, truth), truth)


def test_sdr_allows_a_distortion_filter() -> None:
    pytest.importorskip("scipy")
    rng = np.random.default_rng(1)
    reference = speech_like()
    filtered = np.convolve(reference, [0.0] * 40 + [0.8, 0.3, -0.1])[: reference.shape[0]]  # delay + colour
    assert metrics.sdr(filtered, reference) > 40  # a short FIR distortion is not an error
    assert metrics.snr(filtered, reference).item() < 3  # while plain SNR punishes it
    noise = rng.standard_normal(reference.shape[0])
    noise *= np.sqrt(np.sum(reference**2) / np.sum(noise**2) / 10.0)  # 10 dB
    assert metrics.sdr(reference + noise, reference) == pytest.approx(10.0, abs=0.6)


def test_erle_hand_computed() -> None:
    microphone = np.sin(np.linspace(0, 100, 4000))
    assert metrics.erle(microphone, 0.1 * microphone) == pytest.approx(20.0, abs=1e-6)
    mask = np.zeros(4000, dtype=bool)
    mask[:2000] = True
    output = 0.1 * microphone
    output[2000:] = microphone[2000:]  # double talk in the second half is excluded by the mask
    assert metrics.erle(microphone, output, mask) == pytest.approx(20.0, abs=1e-6)
    with pytest.raises(AudioError):
        metrics.erle(microphone, output, np.zeros(4000, dtype=bool))


def test_evaluate_item_is_permutation_invariant_and_reports_improvement() -> None:
    rng = np.random.default_rng(2)
    sources = np.stack([speech_like(0.5, 8000, 0), speech_like(0.5, 8000, 1)])[:, None]  # [2, 1, T]
    mixture = sources.sum(0)  # [1, T]
    estimate = sources[::-1] + 0.01 * rng.standard_normal(sources.shape)
    scores = metrics.evaluate_item(estimate, sources, 8000, mixture, metrics=("si_sdr", "si_sdri"))
    assert scores["si_sdr"] > 20
    assert scores["si_sdri"] == pytest.approx(scores["si_sdr"] - scores["input_si_sdr"])
    with pytest.raises(ConfigError):
        metrics.evaluate_item(estimate, sources, 8000, metrics=("mos",))


def test_summarize_ignores_nan() -> None:
    summary = metrics.summarize([{"name": "a", "x": 1.0}, {"name": "b", "x": float("nan")}, {"name": "c", "x": 3.0}])
    assert summary == {"count": 3.0, "x": 2.0}


@pytest.mark.skipif(importlib.util.find_spec("pesq") is None, reason="pesq is not installed")
def test_pesq_orders_clean_above_noisy() -> None:
    reference = speech_like()
    noisy = reference + 0.05 * np.random.default_rng(3).standard_normal(reference.shape[0])
    clean_wb = metrics.pesq(reference, reference, 16000, "wb")
    noisy_wb = metrics.pesq(noisy, reference, 16000, "wb")
    assert clean_wb > 4.0 and noisy_wb < clean_wb
    assert metrics.pesq(noisy, reference, 16000, "nb") < metrics.pesq(reference, reference, 16000, "nb")
    with pytest.raises(ConfigError):
        metrics.pesq(reference[:8000], reference[:8000], 8000, "wb")


@pytest.mark.skipif(importlib.util.find_spec("pystoi") is None, reason="pystoi is not installed")
def test_stoi_and_estoi_order_clean_above_noisy() -> None:
    reference = speech_like()
    noisy = reference + 0.3 * np.random.default_rng(4).standard_normal(reference.shape[0])
    assert metrics.stoi(reference, reference, 16000) == pytest.approx(1.0, abs=1e-3)
    assert metrics.stoi(noisy, reference, 16000) < 0.95
    assert metrics.stoi(noisy, reference, 16000, extended=True) < metrics.stoi(reference, reference, 16000, extended=True)


@pytest.mark.slow  # librosa/numba import takes ~15 s on first use
@pytest.mark.skipif(
    importlib.util.find_spec("speechmos") is None or importlib.util.find_spec("librosa") is None,
    reason="speechmos (and its librosa dependency) is not installed",
)
def test_dnsmos_returns_three_scores() -> None:
    scores = metrics.dnsmos(speech_like(), 16000)
    assert set(scores) == {"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"}
    assert all(1.0 <= value <= 5.0 for value in scores.values())


def test_missing_metric_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from speechkit.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "speechmos", None)  # makes `import speechmos` fail
    with pytest.raises(MissingDependencyError, match=r"speechkit\[eval\]"):
        metrics.dnsmos(speech_like(), 16000)


def test_metrics_accept_negative_strides() -> None:
    from speechkit.metrics import si_sdr

    rng = np.random.default_rng(0)
    reference = rng.standard_normal(1600)
    assert si_sdr(reference[::-1].copy()[::-1], reference) > 100.0  # a reversed view: negative strides


def test_aecmos_rejects_unknown_talk_type() -> None:
    from speechkit.errors import ConfigError
    from speechkit.metrics import aecmos

    with pytest.raises(ConfigError, match="talk_type"):
        aecmos(np.zeros(16000), np.zeros(16000), np.zeros(16000), 16000, "echo")


@pytest.mark.slow
def test_aecmos_scores_are_mos_values() -> None:
    pytest.importorskip("speechmos")
    pytest.importorskip("librosa")
    from speechkit.metrics import aecmos

    rng = np.random.default_rng(1)
    far_end = 0.1 * rng.standard_normal(16000 * 3)
    microphone = 0.5 * np.convolve(far_end, [0.0, 0.6, 0.3, 0.1])[: far_end.size]
    scores = aecmos(far_end, microphone, 0.01 * microphone, 16000, "st")
    assert set(scores) == {"aecmos_echo", "aecmos_deg"}
    assert all(0.5 <= value <= 5.5 for value in scores.values())
