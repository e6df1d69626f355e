"""The model declarations of speechkit.models.spec: options validation, inference spec, layout."""
from __future__ import annotations

import pytest

from speechkit.errors import ConfigError
from speechkit.models.spec import InferenceSpec, OptionSpec, parse_option_strings
from speechkit.tasks import InputLayout, Task

SPEC = InferenceSpec(
    mode="sampler",
    deterministic=False,
    options=(
        OptionSpec("steps", int, 30, minimum=1, maximum=1000, help="sampler steps"),
        OptionSpec("snr", float, 0.5, minimum=0.0),
        OptionSpec("seed", int, 0),
        OptionSpec("sampler", str, "pc", choices=("pc", "ode")),
        OptionSpec("corrector", bool, True),
    ),
)


def test_options_parse_strings_and_fill_defaults() -> None:
    values = SPEC.validate_options(parse_option_strings(["steps=12", "snr = 0.25", "corrector=no"]), "sgmse")
    assert values == {"steps": 12, "snr": 0.25, "seed": 0, "sampler": "pc", "corrector": False}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"stepz": "3"}, "has no option 'stepz'"),
        ({"steps": "3.5"}, "needs a int value"),
        ({"steps": True}, "needs a int value"),
        ({"steps": "0"}, "below its minimum"),
        ({"steps": 5000}, "above its maximum"),
        ({"sampler": "euler"}, "not one of pc, ode"),
        ({"corrector": "maybe"}, "needs a bool value"),
    ],
)
def test_option_errors_are_one_line(given: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        SPEC.validate_options(given, "sgmse")
    assert "\n" not in str(error.value)


def test_option_strings_need_key_value() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_option_strings(["steps"])
    with pytest.raises(ConfigError, match="twice"):
        parse_option_strings(["a=1", "a=2"])


def test_inference_spec_checks_mode_overlap_and_exemptions() -> None:
    with pytest.raises(ConfigError, match="unknown inference mode"):
        InferenceSpec(mode="batch")
    with pytest.raises(ConfigError, match="overlap_seconds"):
        InferenceSpec(mode="chunk", chunk_seconds=1.0, overlap_seconds=1.0)
    with pytest.raises(ConfigError, match="exemption"):
        InferenceSpec(mode="whole", exemptions=(("chunk_equals_whole", ""),))
    spec = InferenceSpec(mode="whole", exemptions=(("chunk_equals_whole", "attends to all frames"),))
    assert spec.exemption("chunk_equals_whole") == "attends to all frames"
    assert spec.exemption("onnx_export") is None


def test_task_is_a_string_and_layout_round_trips() -> None:
    assert Task.AEC == "aec" and Task("separation") is Task.SEPARATION and str(Task.ENHANCEMENT) == "enhancement"
    with pytest.raises(ConfigError, match="unknown task"):
        Task.parse("echo")
    layout = InputLayout(num_microphones=4, geometry=((0, 0, 0), (0.05, 0, 0), (0.1, 0, 0), (0.15, 0, 0)))
    assert InputLayout.from_dict(layout.to_dict()) == layout
    assert InputLayout(far_end_channel=1).num_channels == 2
    with pytest.raises(ConfigError, match="far_end_channel"):
        InputLayout(num_microphones=2, far_end_channel=0)
    assert InputLayout.legacy("aec", 2) == InputLayout(far_end_channel=1)
