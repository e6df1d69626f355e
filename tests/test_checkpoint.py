"""speechkit safetensors checkpoints: round trip, metadata, and clear errors (nothing unpickled)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from speechkit import _version
from speechkit.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    METADATA_KEY,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from conftest import PickleExploit, write_pickle
from speechkit.errors import CheckpointError, ConfigError
from speechkit.models import build_model


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model("conv_tasnet", "tiny", causal=True, norm_type="cLN").eval()
    path = save_checkpoint(model, tmp_path / "model.safetensors", provenance={"steps": 3, "data": ("a", "b")})
    return path, model


def _rewrite(source: Path, target: Path, metadata: dict[str, Any] | None = None,
             tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Copy a checkpoint with edited metadata and/or tensors."""
    from safetensors.torch import load_file

    state = load_file(str(source)) if tensors is None else tensors
    header = None if metadata is None else {METADATA_KEY: json.dumps(metadata)}
    save_file(state, str(target), metadata=header)
    return target


def test_round_trip_outputs_identical(saved: tuple[Path, torch.nn.Module]) -> None:
    path, model = saved
    loaded = load_checkpoint(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    assert not loaded.training
    x = torch.randn(1, 1, 700)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor)


@pytest.mark.parametrize("storage_dtype", ["float16", "bfloat16"])
def test_half_precision_storage(saved: tuple[Path, torch.nn.Module], tmp_path: Path, storage_dtype: str) -> None:
    """A half-precision release file is half the size and loads into float32 weights equal to the rounded ones."""
    from safetensors import safe_open

    full, model = saved
    half = save_checkpoint(model, tmp_path / "half.safetensors", storage_dtype=storage_dtype)
    with safe_open(str(half), framework="pt") as handle:
        assert {handle.get_tensor(key).dtype for key in handle.keys()} == {getattr(torch, storage_dtype)}
    weight_bytes = sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values())
    assert full.stat().st_size - half.stat().st_size >= weight_bytes // 2 - 64  # the weights take half the bytes
    assert read_metadata(half)["storage_dtype"] == storage_dtype
    loaded = load_checkpoint(half)
    for key, tensor in model.state_dict().items():
        assert loaded.state_dict()[key].dtype == torch.float32
        assert torch.equal(loaded.state_dict()[key], tensor.to(getattr(torch, storage_dtype)).float())
    x = torch.randn(1, 1, 700)
    with torch.no_grad():
        reference, output = model(x), loaded(x)
    assert not torch.equal(output, reference)  # rounded weights, so not bit-exact...
    assert (output - reference).abs().max() < 0.05 * reference.abs().max()  # ...but close
    with pytest.raises(ConfigError, match="storage_dtype"):
        save_checkpoint(model, tmp_path / "bad.safetensors", storage_dtype="int8")


def test_metadata_contents(saved: tuple[Path, torch.nn.Module]) -> None:
    path, model = saved
    metadata = read_metadata(path)
    assert metadata["format"] == FORMAT and metadata["format_version"] == FORMAT_VERSION
    assert metadata["model"] == "conv_tasnet"
    assert metadata["task"] == "separation"
    assert metadata["sample_rate"] == 8000
    assert metadata["config"]["norm_type"] == "cLN" and metadata["config"]["causal"] is True
    assert metadata["speechkit_version"] == _version.__version__
    assert metadata["provenance"] == {"steps": 3, "data": ["a", "b"]}
    assert load_checkpoint(path).checkpoint_metadata == metadata


def test_enhancement_task_recorded(tmp_path: Path) -> None:
    model = build_model("conv_tasnet", "tiny", n_src=1)
    path = save_checkpoint(model, tmp_path / "enhance.safetensors")
    assert read_metadata(path)["task"] == "enhancement"


def test_refuses_to_overwrite(saved: tuple[Path, torch.nn.Module]) -> None:
    path, model = saved
    with pytest.raises(CheckpointError, match="exists"):
        save_checkpoint(model, path)
    save_checkpoint(model, path, overwrite=True)


def test_missing_and_non_safetensors_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.safetensors")
    text = tmp_path / "text.safetensors"
    text.write_bytes(b"definitely not a safetensors header")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(text)
    torch_file = tmp_path / "model.pth"
    torch.save({"weight": torch.zeros(3)}, torch_file)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(torch_file)


def test_nothing_is_unpickled(tmp_path: Path, pickle_exploit: PickleExploit) -> None:
    payload = write_pickle(tmp_path / "evil.safetensors", pickle_exploit)
    with pytest.raises(CheckpointError):
        load_checkpoint(payload)
    assert not pickle_exploit.ran


def test_safetensors_without_metadata(saved: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    path, _ = saved
    bare = _rewrite(path, tmp_path / "bare.safetensors", metadata=None)
    with pytest.raises(CheckpointError, match="no speechkit metadata"):
        load_checkpoint(bare)
    invalid = tmp_path / "invalid.safetensors"
    save_file({"x": torch.zeros(1)}, str(invalid), metadata={METADATA_KEY: "{not json"})
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_metadata(invalid)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda meta: meta.update(model="no_such_model"), "unknown model 'no_such_model'"),
        (lambda meta: meta["config"].update(dilation_growth=3), "dilation_growth"),
        (lambda meta: meta["config"].pop("n_src"), None),  # defaults fill it: loads, then shapes differ
        (lambda meta: meta.update(format="other-format"), "unknown checkpoint format"),
        (lambda meta: meta.update(format_version=FORMAT_VERSION + 1), "newer"),
        (lambda meta: meta.pop("config"), "lacks 'config'"),
        (lambda meta: meta["config"].update(norm_type="BN"), "norm_type"),
    ],
)
def test_bad_metadata(saved: tuple[Path, torch.nn.Module], tmp_path: Path, edit: Any, message: str | None) -> None:
    path, _ = saved
    metadata = read_metadata(path)
    edit(metadata)
    edited = _rewrite(path, tmp_path / "edited.safetensors", metadata=metadata)
    if message is None:  # n_src falls back to the default 2 == tiny's: loads fine
        load_checkpoint(edited)
        return
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(edited)


def test_missing_unexpected_and_misshaped_tensors(saved: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    path, _ = saved
    metadata = read_metadata(path)
    state = load_file(str(path))
    missing = dict(state)
    del missing["masker.TCN.1.res_conv.bias"]
    with pytest.raises(CheckpointError, match=r"1 missing tensor\(s\): masker.TCN.1.res_conv.bias"):
        load_checkpoint(_rewrite(path, tmp_path / "missing.safetensors", metadata, missing))
    extra = {**state, "masker.surplus": torch.zeros(2)}
    with pytest.raises(CheckpointError, match="1 unexpected tensor.*masker.surplus"):
        load_checkpoint(_rewrite(path, tmp_path / "extra.safetensors", metadata, extra))
    shaped = {**state, "decoder.filterbank._filters": torch.zeros(16, 1, 32)}
    with pytest.raises(CheckpointError, match="mis-shaped.*decoder.filterbank._filters"):
        load_checkpoint(_rewrite(path, tmp_path / "shaped.safetensors", metadata, shaped))
    # a config that disagrees with the weights is reported as mis-shaped tensors too
    bigger = {**metadata, "config": {**metadata["config"], "hid_chan": 32}}
    with pytest.raises(CheckpointError, match="mis-shaped"):
        load_checkpoint(_rewrite(path, tmp_path / "bigger.safetensors", bigger, state))
