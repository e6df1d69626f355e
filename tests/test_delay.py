"""Bulk-delay estimation (GCC-PHAT) and reference alignment."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speechkit.delay import align_reference, check_pair_lengths, estimate_delay, gcc_phat
from speechkit.errors import AudioError

RATE = 16000
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _echo_scene(delay: int, seed: int = 0, seconds: float = 1.0, ser_db: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Reference: speech-like noise bursts; mic: a nonlinear, reverberant, delayed echo + near end + noise."""
    rng = np.random.default_rng(seed)
    length = int(seconds * RATE)
    envelope = np.repeat(rng.uniform(0.0, 1.0, length // 400 + 1) > 0.4, 400)[:length]
    reference = 0.3 * rng.standard_normal(length) * envelope
    taps = rng.standard_normal(64) * np.exp(-np.arange(64) / 12.0)
    taps[0] = 1.5  # direct path
    echo = np.convolve(np.tanh(2.0 * reference), taps)[:length]
    echo = align_reference(echo, delay, length)
    near = rng.standard_normal(length) * np.repeat(rng.uniform(0, 1, length // 800 + 1) > 0.5, 800)[:length]
    near *= np.sqrt(np.mean(echo**2) / max(np.mean(near**2), 1e-12) * 10 ** (ser_db / 10))
    mic = echo + near + 0.01 * rng.standard_normal(length)
    return mic, reference


@pytest.mark.parametrize("delay", [0, 37, 1600, 7999])
def test_finds_the_bulk_delay(delay: int) -> None:
    mic, reference = _echo_scene(delay, seed=delay)
    estimate = estimate_delay(mic, reference, RATE)
    assert estimate.samples == delay
    assert estimate.seconds == pytest.approx(delay / RATE)
    assert estimate.reliable


def test_double_talk_with_loud_near_end() -> None:
    mic, reference = _echo_scene(3200, seed=5, ser_db=10.0)
    assert estimate_delay(mic, reference, RATE).samples == 3200


def test_search_range_and_negative_delays() -> None:
    mic, reference = _echo_scene(0, seed=3)
    leading = mic[400:]  # the microphone now leads the reference by 400 samples
    assert abs(estimate_delay(leading, reference, RATE, allow_negative=True).samples + 400) <= 2
    assert estimate_delay(leading, reference, RATE).samples >= 0  # physical range only
    late_mic, late_reference = _echo_scene(6000, seed=4)
    assert estimate_delay(late_mic, late_reference, RATE, max_delay_seconds=0.2).samples <= 3200


def test_silent_reference_gives_zero_confidence() -> None:
    mic, _ = _echo_scene(100)
    estimate = estimate_delay(mic, np.zeros_like(mic), RATE)
    assert estimate.samples == 0 and estimate.confidence == 0.0 and not estimate.reliable


def test_gcc_phat_lags() -> None:
    rng = np.random.default_rng(0)
    reference = rng.standard_normal(2000)
    mic = np.concatenate([np.zeros(25), reference])[:2000]
    lags, correlation = gcc_phat(mic, reference, max_lag=50, min_lag=-50)
    assert lags[0] == -50 and lags[-1] == 50
    assert lags[np.argmax(correlation)] == 25


def test_input_checks() -> None:
    with pytest.raises(AudioError):
        estimate_delay(np.zeros((2, 100)), np.zeros(100), RATE)
    with pytest.raises(AudioError):
        estimate_delay(np.array([0.0, np.nan]), np.zeros(2), RATE)
    with pytest.raises(AudioError):
        estimate_delay(np.zeros(0), np.zeros(2), RATE)
    assert estimate_delay(np.ones((1, 10)), np.ones((1, 10)), RATE).samples == 0  # [1, T] accepted


def test_align_reference() -> None:
    reference = np.arange(1, 6, dtype=np.float32)
    np.testing.assert_array_equal(align_reference(reference, 2, 6), [0, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(align_reference(reference, -2, 4), [3, 4, 5, 0])
    np.testing.assert_array_equal(align_reference(reference, 0, 3), [1, 2, 3])
    np.testing.assert_array_equal(align_reference(reference, 9, 4), [0, 0, 0, 0])
    assert align_reference(reference[None], 1, 5).shape == (1, 5)


def test_check_pair_lengths() -> None:
    check_pair_lengths(16000, 15000, RATE, 1.0)
    with pytest.raises(AudioError, match="differ by"):
        check_pair_lengths(16000 * 3, 16000, RATE, 1.0)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "speech_commands").is_dir(), reason="needs ../shared/data (real speech, RIRs)")
def test_real_speech_through_a_measured_room() -> None:
    soundfile = pytest.importorskip("soundfile")
    soxr = pytest.importorskip("soxr")
    folders = sorted(path for path in (SHARED / "speech_commands").iterdir() if path.is_dir())
    far_word, near_word = (sorted(folder.glob("*.flac"))[0] for folder in folders[:2])
    far = soundfile.read(str(far_word))[0][:RATE]
    near = soundfile.read(str(near_word))[0][:RATE]
    rir, rir_rate = soundfile.read(str(SHARED / "rirs/office_32ch_linear/rir_source_3.wav"))
    rir = soxr.resample(rir[:, 0], rir_rate, RATE)[:2048]  # T60 is about 40 ms
    direct = int(np.argmax(np.abs(rir)))
    echo = align_reference(np.convolve(np.tanh(2 * far), rir)[: len(far)], 2400, len(far))
    near = near[: len(far)] * np.sqrt(np.mean(echo**2) / max(np.mean(near**2), 1e-12))
    mic = echo + np.pad(near, (0, len(far) - len(near)))
    estimate = estimate_delay(mic, far, RATE)
    assert abs(estimate.samples - (2400 + direct)) <= 16
