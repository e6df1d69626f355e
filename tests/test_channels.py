"""The channel-selection policy (speechkit.channels, torch-free)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from speechkit.channels import parse_mics, select_channels
from speechkit.errors import ConfigError
from speechkit.tasks import InputLayout

ARRAY = InputLayout(num_microphones=4)
MONO = InputLayout()
AEC = InputLayout(num_microphones=1, far_end_channel=1)


def test_defaults() -> None:
    assert select_channels(3, MONO) == [0, 1, 2]  # a one-channel model runs on every channel
    assert select_channels(6, ARRAY) == [0, 1, 2, 3]  # an array takes the first M
    assert select_channels(2, AEC) == [0]  # an echo canceller's microphone: the first channel


def test_explicit_mics() -> None:
    assert select_channels(6, ARRAY, [5, 4, 3, 2]) == [5, 4, 3, 2]
    assert select_channels(3, MONO, [2]) == [2]
    assert parse_mics("0, 2,3") == [0, 2, 3] and parse_mics(None) is None


@pytest.mark.parametrize(
    ("channels", "layout", "mics", "message"),
    [
        (2, ARRAY, None, "expects 4 microphones but the input has 2"),
        (6, ARRAY, [0, 1], "pass 4 channel number"),
        (4, ARRAY, [0, 1, 2, 4], "channel 4 does not exist"),
        (4, ARRAY, [0, 1, 1, 2], "twice"),
    ],
)
def test_refusals_name_the_layout(channels, layout, mics, message) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        select_channels(channels, layout, mics)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="comma-separated"):
        parse_mics("0;1")


def test_policy_modules_do_not_import_torch() -> None:
    code = "import sys, speechkit.channels, speechkit.tasks; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
