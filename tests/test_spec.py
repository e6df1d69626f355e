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


def _noisy_model():
    """A stochastic test model: adds noise drawn from a generator seeded with its ``seed`` option."""
    import dataclasses

    import torch

    from speechkit.models.base import SpeechModel

    @dataclasses.dataclass(frozen=True)
    class NoisyConfig:
        sample_rate: int = 8000

    class NoisyModel(SpeechModel):
        name = "test_noisy"
        task = Task.ENHANCEMENT
        config_class = NoisyConfig

        @property
        def inference_spec(self) -> InferenceSpec:
            return InferenceSpec(mode="whole", deterministic=False, options=(
                OptionSpec("seed", int, 0), OptionSpec("steps", int, 2, minimum=1, maximum=8)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            generator = torch.Generator().manual_seed(self.options["seed"])
            noise = torch.randn(x.shape, generator=generator) * 0.01 * self.options["steps"]
            return (x + noise)[:, None]  # [B, C, T] -> [B, 1, C, T]

    return NoisyModel(NoisyConfig())


def test_options_reach_the_model_and_the_seed_makes_it_reproducible() -> None:
    import numpy as np

    from speechkit.api import Processor

    audio = 0.1 * np.random.default_rng(0).standard_normal((1, 800)).astype(np.float32)
    model = _noisy_model()
    assert dict(model.options) == {"seed": 0, "steps": 2}
    processor = Processor(model, options={"seed": "3", "steps": "4"})  # strings, as from --option
    assert dict(model.options) == {"seed": 3, "steps": 4}
    first, again = processor.enhance(audio, 8000), processor.enhance(audio, 8000)
    np.testing.assert_array_equal(first, again)
    Processor(model, options={"seed": 4, "steps": 4})
    assert not np.array_equal(first, processor.enhance(audio, 8000))
    with pytest.raises(ConfigError, match="above its maximum 8"):
        Processor(model, options={"steps": 9})
    with pytest.raises(TypeError):
        model.options["seed"] = 1  # read-only


def test_cli_option_is_validated_in_one_line(tmp_path, capsys) -> None:
    import numpy as np
    import soundfile

    from speechkit.cli import main

    soundfile.write(str(tmp_path / "in.wav"), np.zeros(1600, dtype=np.float32), 16000)
    code = main(["enhance", str(tmp_path / "in.wav"), "-o", str(tmp_path / "out.wav"), "--no-progress",
                 "--option", "steps=3"])
    error = capsys.readouterr().err.strip()
    assert code != 0 and "has no option 'steps'" in error and len(error.splitlines()) == 1
