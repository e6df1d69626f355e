"""The residual-echo suppressor after the linear filter (speechkit.frontend.echo_suppression).

Synthetic signals only: a speech-like far end, a loudspeaker that clips (echo a linear filter
cannot remove), an independent speech-like near end. Stream == offline is checked for every
preset by the registry-wide contract test (``linear_aec:tiny_suppression``).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from speechkit.errors import ConfigError
from speechkit.frontend.echo_suppression import ResidualEchoSuppressor, SuppressorConfig
from speechkit.models import build_model
from test_adaptive_filter import RATE, echo_of, erle_db, room_response, speech_like


def _clipping_echo(seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Far end and its echo through a loudspeaker clipping at 30 % of the peak and a 0.2 s room."""
    far_end = speech_like(seconds, seed=21)
    limit = 0.3 * np.abs(far_end).max()
    return far_end, echo_of(np.clip(far_end, -limit, limit), room_response(0.2, seed=22))


def _cancel(mic: np.ndarray, far_end: np.ndarray, preset: str) -> np.ndarray:
    model = build_model("linear_aec", preset).eval()
    with torch.no_grad():
        return model(torch.from_numpy(np.stack([mic, far_end]))[None])[0, 0, 0].numpy()


def test_suppressor_removes_residual_echo_the_linear_filter_leaves() -> None:
    far_end, echo = _clipping_echo(4.0)
    filtered = _cancel(echo, far_end, "16k_filter_only")
    suppressed = _cancel(echo, far_end, "16k")
    linear, total = erle_db(echo, filtered, 1.0, 4.0), erle_db(echo, suppressed, 1.0, 4.0)
    assert total > linear + 10.0, (linear, total)  # measured: 11.0 -> 28.7 dB


def test_suppressor_keeps_near_end_speech_in_double_talk_and_alone() -> None:
    far_end, echo = _clipping_echo(4.0)
    near_end = speech_like(4.0, seed=23)
    talk = slice(2 * RATE, 4 * RATE)
    for far, mic in ((np.zeros_like(far_end), near_end), (far_end, echo + near_end)):
        filtered = _cancel(mic, far, "16k_filter_only")
        suppressed = _cancel(mic, far, "16k")
        # distortion of the near end: what the suppressor removed beyond the residual echo
        kept = 10 * np.log10(np.sum(suppressed[talk] ** 2) / np.sum(near_end[talk] ** 2))
        assert kept > -3.0, kept  # measured: 0.0 dB alone, -0.55 dB in double talk
    silent_far_end = _cancel(near_end, np.zeros_like(far_end), "16k")
    np.testing.assert_allclose(silent_far_end, near_end, atol=1e-5)  # no far end: the input comes back


def test_suppressor_gain_never_goes_below_its_floor_nor_above_one() -> None:
    suppressor = ResidualEchoSuppressor(SuppressorConfig(win_length=64, max_suppression_db=20.0))
    states = suppressor.initial_state(1)[2:]
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        spec = torch.randn(1, 3, 2, 33, generator=generator)  # error, echo estimate, far end
        gain, states = suppressor._gain(spec, states)
        assert float(gain.min()) >= 0.1 - 1e-6 and float(gain.max()) <= 1.0


@pytest.mark.parametrize(
    "fields",
    [{"win_length": 3}, {"max_suppression_db": 0.0}, {"echo_release": 1.0}, {"min_leakage": 5.0}],
)
def test_bad_suppressor_settings_are_refused(fields: dict) -> None:
    with pytest.raises(ConfigError):
        SuppressorConfig(**fields)


def test_block_length_must_hold_whole_suppressor_hops() -> None:
    from speechkit.models.linear_aec import LinearAECConfig

    with pytest.raises(ConfigError, match="multiple"):
        LinearAECConfig(block_length=96, residual_suppression_db=30.0, suppression_window=128)
