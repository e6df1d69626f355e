"""TIGER against the official code (``look2hear/models/tiger.py``), when a checkout of it is available.

Set ``TIGER_REFERENCE`` to the folder that holds the official ``look2hear`` package; otherwise the
test skips. Only ``look2hear/models/tiger.py``, ``base_model.py`` and ``layers/{activations,
normalizations}.py`` are loaded: the package's ``__init__`` files pull in librosa, torch_complex
and ``distutils``, and ``base_model`` the Hugging Face hub mixin, none of which the network needs,
so they are stood in for. A randomly initialised official ``TIGER`` of the 16 kHz speech table (a
reduced width, the official layer types) is saved in the Hugging Face layout (``config.json`` +
``model.safetensors``), converted with ``speechkit convert tiger``, and both are run on lengths
that are and are not multiples of the hop: the separated signals must agree to float rounding.
"""
from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from reference_support import load_file_module, relative_error

from speechkit.convert.tiger import convert_tiger_checkpoint, convert_tiger_state_dict
from speechkit.models.tiger import TIGER

SOURCE = os.environ.get("TIGER_REFERENCE")


def _official_tiger_class(root: Path, monkeypatch: pytest.MonkeyPatch) -> type:
    """The reference ``TIGER`` class, loaded file by file with stand-ins for its unrelated imports."""
    hub = types.ModuleType("huggingface_hub")

    class PyTorchModelHubMixin:  # the mixin only adds hub upload/download methods
        def __init_subclass__(cls, **kwargs: object) -> None:
            super().__init_subclass__()

    hub.PyTorchModelHubMixin = PyTorchModelHubMixin  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    for package in ("look2hear", "look2hear.layers", "look2hear.models"):
        module = types.ModuleType(package)
        module.__path__ = [str(root / package.replace(".", "/"))]  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, package, module)
    layers = sys.modules["look2hear.layers"]
    for name in ("activations", "normalizations"):
        setattr(layers, name, load_file_module(f"look2hear.layers.{name}",
                                               root / "look2hear" / "layers" / f"{name}.py", monkeypatch))
    load_file_module("look2hear.models.base_model", root / "look2hear" / "models" / "base_model.py", monkeypatch)
    return load_file_module("look2hear.models.tiger", root / "look2hear" / "models" / "tiger.py", monkeypatch).TIGER


@pytest.mark.skipif(not SOURCE, reason="TIGER_REFERENCE (folder holding the official look2hear package) is not set")
def test_converted_official_model_reproduces_the_official_output(tmp_path, monkeypatch) -> None:
    official_class = _official_tiger_class(Path(str(SOURCE)), monkeypatch)
    arguments = {"out_channels": 16, "in_channels": 32, "num_blocks": 2, "upsampling_depth": 5, "att_n_head": 4,
                 "att_hid_chan": 4, "att_kernel_size": 8, "att_stride": 1, "win": 640, "stride": 160,
                 "num_sources": 2, "sample_rate": 16000}
    torch.manual_seed(0)
    official = official_class(**arguments).eval()
    with torch.no_grad():  # random norms and PReLU slopes, so that a swapped affine or slope shows
        for name, parameter in official.named_parameters():
            if parameter.dim() == 1:
                parameter.add_(0.2 * torch.randn_like(parameter))
    folder = tmp_path / "TIGER-speech"
    folder.mkdir()
    save_file({key: value.contiguous() for key, value in official.state_dict().items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(arguments))
    ours = convert_tiger_checkpoint(folder, tmp_path / "tiger.safetensors")
    assert ours.num_parameters() == sum(p.numel() for p in official.parameters())
    ours.eval()
    for length in (8000, 9003):
        x = 0.3 * torch.randn(2, length, generator=torch.Generator().manual_seed(length))
        with torch.no_grad():
            reference = official(x[:, None])  # [B, 1, T] -> [B, K, T]
            output = ours(x[:, None])[:, :, 0]  # [B, K, 1, T] -> [B, K, T]
        assert output.shape == reference.shape
        assert relative_error(output, reference) < 1e-5, relative_error(output, reference)


@pytest.mark.skipif(not SOURCE, reason="TIGER_REFERENCE (folder holding the official look2hear package) is not set")
def test_dnr_preset_is_one_network_of_the_official_tiger_dnr(monkeypatch) -> None:
    """The ``dnr`` band table and layout equal a network of ``look2hear/models/tiger_dnr.py`` (reduced widths)."""
    _official_tiger_class(Path(str(SOURCE)), monkeypatch)
    official_module = load_file_module("look2hear.models.tiger_dnr",
                                       Path(str(SOURCE)) / "look2hear" / "models" / "tiger_dnr.py", monkeypatch)
    torch.manual_seed(0)
    official = official_module.TIGER(out_channels=12, in_channels=16, num_blocks=2, upsampling_depth=3, win=2048,
                                     stride=512, num_sources=3, sample_rate=44100).eval()
    ours = TIGER.from_preset("dnr", features=12, hidden_channels=16, iterations=2, depth=3).eval()
    assert [end - start for start, end in ours.bands] == [int(width) for width in official.band_width]
    ours.load_state_dict(convert_tiger_state_dict(official.state_dict(), ours))
    x = 0.3 * torch.randn(1, 30000, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = official(x[:, None])  # [B, 1, T] -> [B, 3, T]
        output = ours(x[:, None])[:, :, 0]
    assert relative_error(output, reference) < 1e-5
