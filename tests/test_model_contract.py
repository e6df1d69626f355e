"""The model contract, checked for every registered model with its ``tiny`` preset(s).

Every preset whose name starts with ``tiny`` is checked (e.g. ``tiny`` and ``tiny_causal``, so a
model with causal and non-causal variants has both covered).

A model added to ``MODEL_CLASSES`` gets every check below by registering. A check that cannot
apply to a model is skipped only when the model declares why, in
``inference_spec.exemptions`` (``(check, reason)``); the reason is printed and shown as the
skip reason, so nothing opts out silently. Tolerances: streamed and chunked outputs equal one
offline pass within ``TOLERANCE`` (relative to the output peak); checkpoints round-trip bit-exactly.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from functools import lru_cache

import numpy as np
import pytest
import torch

from speechkit.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from speechkit.inference import process_array
from speechkit.models import MODEL_CLASSES, get_model_class
from speechkit.models.base import SpeechModel
from speechkit.models.spec import CONTRACT_CHECKS, FrontendSpec, InferenceSpec, StateSpec
from speechkit.tasks import InputLayout, Task

#: streamed / chunked output vs one offline pass: max abs difference / max(1, peak)
TOLERANCE = 1e-4
#: test signal length in seconds
SECONDS = 0.3
NAMES = sorted(MODEL_CLASSES)
#: "model" or "model:preset" for every tiny preset of every registered model
CASES = [
    name if preset == "tiny" else f"{name}:{preset}"
    for name in NAMES
    for preset in get_model_class(name).presets
    if preset.startswith("tiny")
]


@lru_cache(maxsize=None)
def _model(case: str) -> SpeechModel:
    name, _, preset = case.partition(":")
    torch.manual_seed(0)
    return get_model_class(name).from_preset(preset or "tiny").eval()


def _input(model: SpeechModel, batch: int = 1, seed: int = 1) -> torch.Tensor:
    length = int(SECONDS * model.sample_rate)
    if model.supports_streaming:
        length -= length % model.block_size
    generator = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(batch, model.num_input_channels, length, generator=generator)  # [B, C_in, T]


def _offline(model: SpeechModel, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _exempt(model: SpeechModel, check: str) -> None:
    """Skip ``check`` when the model declares a reason (printed), else return."""
    reason = model.inference_spec.exemption(check)
    if reason is not None:
        print(f"{model.name}: {check} exempt: {reason}")
        pytest.skip(f"{model.name} declares: {reason}")


def _close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    assert float(np.abs(actual - expected).max()) / scale <= TOLERANCE


@pytest.mark.parametrize("name", NAMES)
def test_every_model_has_a_tiny_preset(name: str) -> None:
    assert "tiny" in get_model_class(name).presets


@pytest.mark.parametrize("name", CASES)
def test_declarations_on_the_meta_device(name: str) -> None:
    model_name, _, preset = name.partition(":")
    model_class = get_model_class(model_name)
    assert model_class.paper and model_class.name == model_name
    with torch.device("meta"):
        model = model_class.from_preset(preset or "tiny")
    assert isinstance(Task(model.task), Task)
    layout, spec, frontend = model.input_layout, model.inference_spec, model.frontend_spec
    assert isinstance(layout, InputLayout) and isinstance(spec, InferenceSpec) and isinstance(frontend, FrontendSpec)
    assert model.num_input_channels == layout.num_channels
    assert (layout.far_end_channel is not None) == (model.task == Task.AEC)
    assert all(check in CONTRACT_CHECKS for check, _ in spec.exemptions)
    assert spec.mode != "stream" or model.supports_streaming
    if not spec.deterministic:
        assert "seed" in {option.name for option in spec.options}, "a stochastic model declares a seed option"
    assert dict(model.options) == {option.name: option.default for option in spec.options}
    if model.supports_streaming:
        specs = model.state_specs(2)
        assert all(isinstance(state, StateSpec) for state in specs)
        assert len({state.name for state in specs}) == len(specs) == len(model.state_names())
        assert model.algorithmic_latency == model.block_size + model.stream_delay


@pytest.mark.parametrize("name", CASES)
def test_forward_shapes(name: str) -> None:
    model = _model(name)
    x = _input(model, batch=2)
    y = _offline(model, x)
    assert y.shape == (2, model.num_sources, model.num_output_channels, x.shape[-1])
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", CASES)
def test_checkpoint_round_trip(name: str, tmp_path) -> None:
    model = _model(name)
    path = save_checkpoint(model, tmp_path / "model.safetensors")
    metadata = read_metadata(path)
    assert InputLayout.from_dict(metadata["input_layout"]) == model.input_layout
    assert FrontendSpec.from_dict(metadata["frontend"]) == model.frontend_spec
    assert Task(metadata["task"]) == model.task
    loaded = load_checkpoint(path)
    assert loaded.input_layout == model.input_layout and loaded.frontend_spec == model.frontend_spec
    _exempt(model, "checkpoint_bit_exact")
    x = _input(model)
    assert torch.equal(_offline(loaded, x), _offline(model, x))


@pytest.mark.parametrize("name", CASES)
def test_file_inference_equals_whole_signal(name: str) -> None:
    model = _model(name)
    _exempt(model, "chunk_equals_whole")
    spec = model.inference_spec
    x = _input(model, seed=2)
    chunk = spec.chunk_seconds or 0.1
    overlap = spec.overlap_seconds if spec.overlap_seconds is not None else 0.2 * chunk
    output = process_array(model, x[0].numpy(), model.sample_rate, chunk_seconds=chunk, overlap_seconds=overlap)
    _close(output, _offline(model, x)[0].numpy())


@pytest.mark.parametrize("name", CASES)
def test_stream_equals_offline(name: str) -> None:
    model = _model(name)
    if not model.supports_streaming:
        assert model.inference_spec.mode != "stream"
        pytest.skip(f"{name} does not stream: inference mode {model.inference_spec.mode!r}")
    delay, block = model.stream_delay, model.block_size
    x = _input(model, seed=3)[..., : 40 * block]  # 40 steps of one block (the contract's step size)
    padded = torch.nn.functional.pad(x, (0, delay + (-delay) % block))  # [1, C_in, T + delay']
    state, pieces = model.initial_state(1), []
    with torch.no_grad():
        for start in range(0, padded.shape[-1], block):
            y_block, state = model.forward_step(padded[..., start : start + block], state)
            pieces.append(y_block)
    streamed = torch.cat(pieces, dim=-1)[..., delay : delay + x.shape[-1]]  # [1, S, C_out, T]
    _close(streamed.numpy(), _offline(model, x).numpy())


@pytest.mark.parametrize("name", CASES)
def test_onnx_export_and_metadata(name: str, tmp_path) -> None:
    for module in ("onnx", "onnxruntime"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    from speechkit.export import export_onnx, read_onnx_metadata

    model = _model(name)
    _exempt(model, "onnx_export")
    mode = model.inference_spec.mode
    streaming = mode == "stream"
    result = export_onnx(model, tmp_path / "model.onnx", streaming=streaming, verify_steps=4)
    assert result.max_abs_error <= result.tolerance  # ONNX Runtime == PyTorch
    metadata = read_onnx_metadata(result.onnx_path)
    assert InputLayout.from_dict(metadata["input_layout"]) == model.input_layout
    assert FrontendSpec.from_dict(metadata["frontend"]) == model.frontend_spec
    assert metadata["inference"]["mode"] == mode and Task(metadata["task"]) == model.task
    assert metadata["num_input_channels"] == model.num_input_channels


def test_exemptions_need_a_known_check_and_a_reason() -> None:
    """The opt-out mechanism itself: an unknown check or an empty reason is refused."""
    from speechkit.errors import ConfigError

    with pytest.raises(ConfigError):
        InferenceSpec(mode="chunk", exemptions=(("everything", "because"),))
    with pytest.raises(ConfigError):
        InferenceSpec(mode="chunk", exemptions=(("onnx_export", " "),))
    assert dataclasses.is_dataclass(InferenceSpec)


def test_old_checkpoints_without_layout_and_with_removed_fields_load(tmp_path) -> None:
    """A checkpoint written before contract v2: no input_layout/frontend, the AEC's stft_backend field."""
    import json

    from safetensors.torch import load_file, save_file

    model = _model("complex_d3net_aec")
    path = save_checkpoint(model, tmp_path / "new.safetensors")
    metadata = read_metadata(path)
    for key in ("input_layout", "frontend"):
        del metadata[key]
    metadata["config"]["stft_backend"] = "conv"
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(path)), str(old), metadata={"speechkit": json.dumps(metadata)})
    loaded = load_checkpoint(old)
    assert loaded.input_layout == InputLayout(num_microphones=1, far_end_channel=1)
    x = _input(model)
    assert torch.equal(_offline(loaded, x), _offline(model, x))
    metadata["input_layout"] = InputLayout(num_microphones=2).to_dict()  # disagrees with the config
    save_file(load_file(str(path)), str(old), metadata={"speechkit": json.dumps(metadata)})
    from speechkit.errors import CheckpointError

    with pytest.raises(CheckpointError, match="saved for input 2 microphones"):
        load_checkpoint(old)
