"""A bulk delay that changes mid-recording (a dropped or repeated audio buffer): the delay schedule of
the file path, the echo pipeline's piecewise alignment and ``speechkit aec`` end to end."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from speechkit.delay import TrackerOptions, delay_schedule
from speechkit.inference import EchoPipeline
from speechkit.models import build_model

RATE = 8000


def speech_like(seconds: float, seed: int, rate: int = RATE) -> np.ndarray:
    """Coloured noise in 200 ms bursts with pauses: a far end with silences, as speech has."""
    rng = np.random.default_rng(seed)
    length = int(seconds * rate)
    noise = np.convolve(rng.standard_normal(length), [1.0, 0.6, 0.3], mode="same")
    burst = int(0.2 * rate)
    bursts = np.repeat(rng.random(length // burst + 1) < 0.7, burst)[:length]
    return (0.1 * noise * bursts).astype(np.float32)


def echo_with_jump(far: np.ndarray, before: int, after: int, jump: int, seed: int = 1) -> np.ndarray:
    """The echo of ``far`` through a decaying 20 ms path, ``before`` samples late until sample ``jump``
    and ``after`` samples late from there (a buffer dropped or repeated), plus a little noise."""
    rng = np.random.default_rng(seed)
    taps = int(0.02 * RATE)
    path = 0.3 * rng.standard_normal(taps) * np.exp(-np.arange(taps) / (0.004 * RATE))
    path[0] = 0.8
    echo = []
    for delay in (before, after):
        delayed = np.concatenate([np.zeros(delay, np.float32), far])[: far.shape[-1]]
        echo.append(np.convolve(delayed, path)[: far.shape[-1]])
    mic = np.concatenate([echo[0][:jump], echo[1][jump:]])
    return (mic + 1e-3 * rng.standard_normal(mic.shape[-1])).astype(np.float32)


def blocks(mic: np.ndarray, far: np.ndarray, size: int = 400):
    return ((mic[start : start + size], far[start : start + size]) for start in range(0, mic.shape[-1], size))


@pytest.mark.parametrize("after", [1200, 560])
def test_schedule_dates_each_change_where_the_echo_stays_causal(after: int) -> None:
    far = speech_like(9.0, seed=0)
    jump = 4 * RATE
    mic = echo_with_jump(far, before=800, after=after, jump=jump)  # 100 ms, then 150 or 70 ms
    schedule = delay_schedule(blocks(mic, far), RATE, initial_delay=800, options=TrackerOptions())
    assert len(schedule) == 2 and schedule[0] == (0, 800)
    start, delay = schedule[1]
    assert abs(delay - after) <= 2
    # located within a window, then a quarter second on the causal side of the change
    if after > 800:  # a longer delay only after the change: before it the echo would lead the far end
        assert jump < start <= jump + 0.5 * RATE
    else:  # a shorter one a little before it
        assert jump - 0.5 * RATE <= start < jump


def test_locate_change_finds_the_switch_and_declines_without_evidence() -> None:
    from speechkit.delay import locate_change

    far = speech_like(3.0, seed=6)
    mic = echo_with_jump(far, before=800, after=560, jump=int(1.6 * RATE))
    found = locate_change(mic, far, old=800, new=560, sample_rate=RATE)
    assert found is not None and abs(found - 1.6 * RATE) <= 0.3 * RATE
    steady = echo_with_jump(far, before=800, after=800, jump=0)
    assert locate_change(steady, far, old=800, new=560, sample_rate=RATE) is None
    assert locate_change(np.zeros_like(far), far, old=800, new=560, sample_rate=RATE) is None


def test_schedule_keeps_a_steady_delay_and_a_silent_far_end() -> None:
    far = speech_like(6.0, seed=2)
    steady = echo_with_jump(far, before=800, after=800, jump=0)
    assert delay_schedule(blocks(steady, far), RATE, initial_delay=800) == [(0, 800)]
    silent = np.zeros_like(far)
    assert delay_schedule(blocks(speech_like(6.0, seed=3), silent), RATE, initial_delay=0) == [(0, 0)]


class FarEndRecorder:
    """Stands in for the echo pipeline's model runner: returns the far-end channel it was given."""

    runner = None

    def push(self, pair: np.ndarray) -> np.ndarray:
        return pair[None, None, 1]  # [2, m] -> [1, 1, m]

    def finish(self) -> np.ndarray:
        return np.zeros((1, 1, 0), dtype=np.float32)


def test_pipeline_aligns_the_far_end_piecewise_from_blocks_of_any_size() -> None:
    model = build_model("complex_d3net_aec", "tiny")
    schedule = [(0, 30), (500, 90), (1200, -20)]  # longer, then shorter (even negative) delays
    pipeline = EchoPipeline(model, RATE, RATE, schedule)
    pipeline.pipeline = FarEndRecorder()
    reference = np.arange(1, 2001, dtype=np.float32)
    rng = np.random.default_rng(0)
    output, position = [], 0
    while position < reference.shape[-1]:
        size = int(rng.integers(1, 300))
        block = reference[position : position + size]
        output.append(pipeline.push(np.zeros_like(block), block))
        position += size
    output.append(pipeline.finish())
    aligned = np.concatenate(output)
    expected = np.zeros(2000, dtype=np.float32)
    for (start, delay), end in zip(schedule, [500, 1200, 2000]):
        sources = np.arange(start, end) - delay
        inside = (sources >= 0) & (sources < 2000)
        expected[start:end][inside] = reference[sources[inside]]
    np.testing.assert_array_equal(aligned, expected)
    assert pipeline.delay_schedule == schedule
    assert pipeline._reference.shape[-1] <= 400  # the reference it keeps stays bounded


def test_a_schedule_must_start_at_zero_and_increase() -> None:
    from speechkit.errors import ConfigError

    model = build_model("complex_d3net_aec", "tiny")
    with pytest.raises(ConfigError, match="start at sample 0"):
        EchoPipeline(model, RATE, RATE, [(10, 5)])
    with pytest.raises(ConfigError, match="increasing"):
        EchoPipeline(model, RATE, RATE, [(0, 5), (100, 6), (100, 7)])


def test_aec_follows_a_shorter_delay_that_a_fixed_alignment_cannot_cancel(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The bundled linear stage (no learned weights) on a far end whose echo arrives 30 ms earlier from
    4 s on: with one delay for the whole file that echo leads the aligned far end and stays."""
    from speechkit.api import load_echo_canceller
    from speechkit.metrics import erle

    rate = 16000
    far = speech_like(7.0, seed=4, rate=rate)
    jump = 4 * rate
    rng = np.random.default_rng(5)
    taps = int(0.02 * rate)
    path = 0.3 * rng.standard_normal(taps) * np.exp(-np.arange(taps) / (0.004 * rate))
    path[0] = 0.8
    echoes = [np.convolve(np.concatenate([np.zeros(delay, np.float32), far])[: far.size], path)[: far.size]
              for delay in (2400, 1920)]  # 150 ms, then 120 ms
    mic = (np.concatenate([echoes[0][:jump], echoes[1][jump:]]) + 1e-4 * rng.standard_normal(far.size)).astype(np.float32)
    processor = load_echo_canceller("linear_aec_16k")
    tracked = processor.cancel_echo(mic, far, rate)
    fixed = processor.cancel_echo(mic, far, rate, track_delay=False)
    late = slice(jump + 2 * rate, None)  # after the change is confirmed
    assert erle(mic[late], tracked[late]) > erle(mic[late], fixed[late]) + 10.0
    assert erle(mic[late], tracked[late]) > 15.0
    # the file path makes the same schedule from its own pass over both files and equals the array path
    soundfile.write(tmp_path / "mic.wav", mic, rate, subtype="FLOAT")
    soundfile.write(tmp_path / "far.wav", far, rate, subtype="FLOAT")
    result = processor.cancel_echo_file(tmp_path / "mic.wav", tmp_path / "far.wav", tmp_path / "out.wav")
    assert len(result.delay_schedule) == 2 and abs(result.delay_schedule[1][1] - 1920) <= 2
    written, _ = soundfile.read(tmp_path / "out.wav", dtype="float32")
    np.testing.assert_allclose(written, tracked, atol=1e-5)
    # the command line says where the delay changed; --fixed-delay keeps the first one
    from speechkit.cli import EXIT_OK, main

    assert main(["aec", "--mic", str(tmp_path / "mic.wav"), "--ref", str(tmp_path / "far.wav"),
                 "-o", str(tmp_path / "cli.wav"), "--linear-only"]) == EXIT_OK
    assert ", then 120.0 ms from" in capsys.readouterr().err
    assert main(["aec", "--mic", str(tmp_path / "mic.wav"), "--ref", str(tmp_path / "far.wav"),
                 "-o", str(tmp_path / "fixed.wav"), "--linear-only", "--fixed-delay"]) == EXIT_OK
    assert "(delay 150.0 ms)" in capsys.readouterr().err
    fixed_file, _ = soundfile.read(tmp_path / "fixed.wav", dtype="float32")
    np.testing.assert_allclose(fixed_file, fixed, atol=1e-5)
