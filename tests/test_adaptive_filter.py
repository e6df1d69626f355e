"""The linear echo-cancellation stage (partitioned-block frequency-domain Kalman filter) on synthetic linear echo.

Far end: speech-like coloured noise (syllable-rate envelope, pauses); echo path: an exponentially
decaying random room response (T60 0.25 s) with a direct path, times 0.7. The residual echo is
measured directly (error minus near end minus noise), so double talk is scored on the echo alone.
Figures measured at the commit that added these tests (the thresholds sit below them), 16 kHz
preset (16 ms blocks, 20 partitions = 320 ms):

* convergence from scratch: ERLE 24 dB over 0.5-0.75 s, 37 dB over 1-2 s;
* echo-path change (a new room response): 11 dB over 0.25-0.5 s after it, 15 dB over 0.5-1 s,
  24 dB over 1-1.5 s, 37 dB over 1.5-2.5 s;
* 3 s of double talk at 0 dB signal-to-echo ratio: 27.5 dB over the whole double talk, no 0.25 s
  window below 7.7 dB (no divergence), 31 dB in the second after it;
* a room with a 0.5 s reverberation time: 32 dB with 320 ms of filter, 15 dB with 128 ms.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from scipy.signal import fftconvolve, lfilter

from speechkit.frontend.adaptive_filter import KalmanFilterConfig, PartitionedKalmanFilter
from speechkit.models import build_model

RATE = 16000


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """Low-pass coloured noise under a random syllable-rate envelope with pauses, RMS 0.05.

    The envelope is low-passed noise (about 2-8 Hz), so two talkers' envelopes are independent, as
    real talkers' are (a shared periodic envelope would correlate their powers).
    """
    rng = np.random.default_rng(seed)
    count = int(seconds * RATE)
    coloured = lfilter([1.0], [1.0, -1.3, 0.5], rng.standard_normal(count))
    rate_of_change = 2 * np.pi * 6.0 / RATE
    syllables = lfilter([rate_of_change], [1.0, rate_of_change - 1.0], rng.standard_normal(count))  # one-pole low-pass
    syllables = lfilter([rate_of_change], [1.0, rate_of_change - 1.0], syllables)
    envelope = np.maximum(0.5 + syllables / syllables.std(), 0.0) ** 2
    pauses = lfilter([2 * np.pi * 0.5 / RATE], [1.0, 2 * np.pi * 0.5 / RATE - 1.0], rng.standard_normal(count))
    gate = 0.1 + (pauses > -0.5 * pauses.std())
    signal = coloured * envelope * gate
    return (0.05 * signal / signal.std()).astype(np.float32)


def room_response(seconds: float, seed: int, direct: int = 40, t60: float = 0.25) -> np.ndarray:
    rng = np.random.default_rng(seed)
    taps = np.arange(int(seconds * RATE))
    response = rng.standard_normal(taps.size) * np.exp(-6.9 * taps / (t60 * RATE))
    response[:direct] = 0.0
    response[direct] += 1.0
    return (0.7 * response / np.sqrt(np.sum(response**2))).astype(np.float32)


def run_filter(mic: np.ndarray, far_end: np.ndarray, config: KalmanFilterConfig | None = None) -> np.ndarray:
    adaptive_filter = PartitionedKalmanFilter(config or KalmanFilterConfig())
    with torch.no_grad():
        error, _ = adaptive_filter(torch.from_numpy(mic)[None], torch.from_numpy(far_end)[None])
    return error[0].numpy()


def erle_db(echo: np.ndarray, residual: np.ndarray, start: float, stop: float) -> float:
    window = slice(int(start * RATE), int(stop * RATE))
    return float(10 * np.log10(np.sum(echo[window] ** 2) / np.sum(residual[window] ** 2)))


def echo_of(far_end: np.ndarray, response: np.ndarray) -> np.ndarray:
    return fftconvolve(far_end, response)[: far_end.size].astype(np.float32)


def test_converges_to_a_high_erle_within_a_second() -> None:
    far_end = speech_like(2.0, seed=1)
    echo = echo_of(far_end, room_response(0.2, seed=2))
    noise = 1e-4 * np.random.default_rng(9).standard_normal(far_end.size).astype(np.float32)
    residual = run_filter(echo + noise, far_end) - noise
    assert erle_db(echo, residual, 0.0, 0.25) < 10.0  # it starts unconverged (the test can fail)
    assert erle_db(echo, residual, 0.5, 0.75) > 20.0
    assert erle_db(echo, residual, 1.0, 2.0) > 32.0


def test_tracks_an_abrupt_echo_path_change() -> None:
    far_end = speech_like(5.0, seed=1)
    before, after = echo_of(far_end, room_response(0.2, seed=2)), echo_of(far_end, room_response(0.2, seed=3, direct=60))
    change = int(2.5 * RATE)
    echo = np.concatenate([before[:change], after[change:]])
    residual = run_filter(echo, far_end)
    assert erle_db(echo, residual, 2.0, 2.5) > 35.0
    assert erle_db(echo, residual, 2.5, 2.75) < 5.0  # the old estimate is wrong right after the change
    assert erle_db(echo, residual, 3.0, 3.5) > 12.0
    assert erle_db(echo, residual, 4.0, 5.0) > 25.0


def test_no_divergence_through_long_double_talk() -> None:
    far_end = speech_like(6.0, seed=1)
    echo = echo_of(far_end, room_response(0.2, seed=2))
    near_end = speech_like(6.0, seed=5) * np.sqrt(np.mean(echo**2) / 0.05**2)  # 0 dB signal-to-echo ratio
    near_end[: int(2 * RATE)] = 0.0
    near_end[int(5 * RATE) :] = 0.0
    residual = run_filter(echo + near_end, far_end) - near_end
    assert erle_db(echo, residual, 1.5, 2.0) > 30.0
    assert erle_db(echo, residual, 2.0, 5.0) > 18.0  # three seconds of double talk
    for start in np.arange(2.0, 5.0, 0.25):
        assert erle_db(echo, residual, start, start + 0.25) > 3.0, start
    assert erle_db(echo, residual, 5.0, 6.0) > 24.0


def test_a_320_ms_filter_cancels_a_long_room_tail() -> None:
    far_end = speech_like(4.0, seed=1)
    echo = echo_of(far_end, room_response(0.5, seed=2, t60=0.5))
    long_tail = erle_db(echo, run_filter(echo, far_end), 2.5, 4.0)
    short_tail = erle_db(echo, run_filter(echo, far_end, KalmanFilterConfig(num_partitions=8)), 2.5, 4.0)
    assert long_tail > 28.0 and long_tail > short_tail + 8.0, (long_tail, short_tail)


def test_stream_of_steps_equals_the_whole_signal_bit_for_bit() -> None:
    config = KalmanFilterConfig(block_length=64, num_partitions=6)
    adaptive_filter = PartitionedKalmanFilter(config)
    generator = torch.Generator().manual_seed(0)
    far_end = 0.1 * torch.randn(2, 40 * 64 + 17, generator=generator)  # a partial last block
    mic = 0.5 * far_end.roll(5, dims=-1) + 0.01 * torch.randn(far_end.shape, generator=generator)
    with torch.no_grad():
        whole_error, whole_echo = adaptive_filter(mic, far_end)
        padded_mic, padded_far = (torch.nn.functional.pad(signal, (0, 64 - 17)) for signal in (mic, far_end))
        states, errors, echoes = adaptive_filter.initial_state(2), [], []
        for start in range(0, padded_mic.shape[-1], 64):
            error, echo, states = adaptive_filter.step(
                padded_mic[:, start : start + 64], padded_far[:, start : start + 64], states
            )
            errors.append(error)
            echoes.append(echo)
    assert torch.equal(torch.cat(errors, dim=-1)[:, : mic.shape[-1]], whole_error)
    assert torch.equal(torch.cat(echoes, dim=-1)[:, : mic.shape[-1]], whole_echo)
    assert all(torch.count_nonzero(state) == 0 for state in adaptive_filter.initial_state(1))  # contract: zero start


def test_digital_silence_and_a_far_end_unrelated_to_the_microphone_stay_finite() -> None:
    silence = np.zeros(RATE, np.float32)
    assert np.array_equal(run_filter(silence, silence), silence)
    unrelated_mic, far_end = speech_like(2.0, seed=7), speech_like(2.0, seed=8)
    error = run_filter(unrelated_mic, far_end)
    assert np.isfinite(error).all()
    # nothing to cancel: the output stays the microphone (within 1 dB of its energy)
    assert abs(10 * np.log10(np.sum(error**2) / np.sum(unrelated_mic**2))) < 1.0


#: the long-stream check's length: 1 minute in the suite; SPEECHKIT_LONG_TESTS=1 runs the full
#: 10 minutes (two passes: 281 s on the loaded 2-core machine, passed 2026-12-04)
LONG_STREAM_MINUTES = 10 if os.environ.get("SPEECHKIT_LONG_TESTS") == "1" else 1


@pytest.mark.slow
def test_long_stream_is_bit_stable() -> None:
    """A long stream with double talk and echo-path changes (every 2 minutes; every 30 s in 1 minute).

    Bit-stable: streaming in 1-second steps equals the whole-signal pass exactly, every state
    stays finite and bounded, and the last minute cancels as well as the first one did.
    """
    minutes = LONG_STREAM_MINUTES
    far_end = speech_like(60.0 * minutes, seed=11)
    echo = np.zeros_like(far_end)
    segment = (120 if minutes > 1 else 30) * RATE  # echo path changes
    for index, start in enumerate(range(0, far_end.size, segment)):
        piece = echo_of(far_end[max(0, start - RATE) : start + segment], room_response(0.2, seed=20 + index))
        echo[start : start + segment] = piece[-min(segment, far_end.size - start) :]
    near_end = speech_like(60.0 * minutes, seed=12) * 0.5
    near_end *= (np.arange(far_end.size) // (20 * RATE)) % 3 == 1  # 20 s of double talk every minute
    mic = echo + near_end
    model = build_model("linear_aec", "16k_filter_only").eval()
    x = torch.from_numpy(np.stack([mic, far_end]))[None]  # [1, 2, T]
    with torch.no_grad():
        whole = model(x)[0, 0, 0]
        state, pieces = model.initial_state(1), []
        step = RATE // model.block_size * model.block_size
        for start in range(0, x.shape[-1], step):
            block = x[..., start : start + step]
            if block.shape[-1] % model.block_size:
                block = torch.nn.functional.pad(block, (0, model.block_size - block.shape[-1] % model.block_size))
            output, state = model.forward_step(block, state)
            pieces.append(output[0, 0, 0])
    streamed = torch.cat(pieces)[: x.shape[-1]]
    assert torch.equal(streamed, whole)
    assert all(torch.isfinite(tensor).all() and tensor.abs().max() < 1e6 for tensor in state)
    residual = whole.numpy() - near_end
    single_talk = lambda minute: slice((60 * minute + 45) * RATE, (60 * minute + 60) * RATE)  # noqa: E731
    erle = [10 * np.log10(np.sum(echo[single_talk(m)] ** 2) / np.sum(residual[single_talk(m)] ** 2))
            for m in range(minutes)]
    assert min(erle) > 25.0, erle
    assert erle[-1] > erle[0] - 3.0, erle


def test_a_clipping_microphone_keeps_the_error_within_twice_full_scale() -> None:
    """An overdriven microphone (the echo 20 times too loud for the converter) clips; the filter's estimate
    of the unclipped echo is clipped too in those blocks, so the error stays within twice full scale, where
    without the guard it reaches several times full scale. Unclipped input is untouched."""
    far_end = speech_like(2.0, seed=3)
    echo = echo_of(far_end, room_response(0.1, seed=4))
    overdriven = np.clip(echo * 0.9 / np.abs(echo).max() * 20.0, -1.0, 1.0).astype(np.float32)
    guarded = run_filter(overdriven, far_end)
    unguarded = run_filter(overdriven, far_end, KalmanFilterConfig(saturation_level=0.0))
    assert np.abs(guarded).max() <= 2.0 < np.abs(unguarded).max()
    clean = (echo * 0.9 / np.abs(echo).max()).astype(np.float32)  # peak 0.9: no block saturates
    unguarded_clean = run_filter(clean, far_end, KalmanFilterConfig(saturation_level=0.0))
    np.testing.assert_array_equal(run_filter(clean, far_end), unguarded_clean)
    with pytest.raises(Exception, match="saturation_level must not be negative"):
        KalmanFilterConfig(saturation_level=-1.0)
