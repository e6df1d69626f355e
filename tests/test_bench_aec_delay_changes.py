"""bench.aec_delay_changes: its timing conditions are what they say (no corpus needed)."""
from __future__ import annotations

import numpy as np

from bench import aec_delay_changes as bench
from speechkit.delay import estimate_delay

RATE = bench.SAMPLE_RATE


def material(seconds: float = 30.0) -> dict:
    rng = np.random.default_rng(0)
    far = (0.05 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)
    response = np.zeros(64, np.float32)
    response[0], response[10] = 1.0, 0.3
    return {"far": far, "response": response, "noise": rng.standard_normal(far.size).astype(np.float32)}


def delay_ms(mic: np.ndarray, far: np.ndarray, start: float, end: float) -> float:
    window = slice(int(start * RATE), int(end * RATE))
    return 1000 * estimate_delay(mic[window], far[window], RATE, analysis_seconds=None).seconds


def test_delays_jumps_and_drift_land_where_the_conditions_say() -> None:
    clip = material()
    far = clip["far"]
    steady = bench.microphone(clip, delay_ms=120.0)
    assert abs(delay_ms(steady, far, 2, 12) - 120.0) < 0.2
    assert abs(delay_ms(steady, far, 18, 28) - 120.0) < 0.2
    for jump in (30.0, -100.0):
        jumped = bench.microphone(clip, delay_ms=200.0, jump_ms=jump)
        assert abs(delay_ms(jumped, far, 2, 14) - 200.0) < 0.2
        assert abs(delay_ms(jumped, far, 16, 28) - (200.0 + jump)) < 0.2
    drifted = bench.microphone(clip, delay_ms=120.0, drift_ppm=100.0)  # 3 ms later by the end of 30 s
    assert delay_ms(drifted, far, 25, 30) - delay_ms(drifted, far, 0, 5) > 2.0
    assert np.max(np.abs(steady)) <= 0.9 + 1e-6
    erle = bench.window_erle(steady, 0.1 * steady)
    assert set(erle) == set(bench.WINDOWS) and all(abs(value - 20.0) < 1e-3 for value in erle.values())
