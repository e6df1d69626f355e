"""DeFTAN-II against the official code (``DeFTAN2.py`` of the authors' repository), when a checkout is available.

Set ``DEFTAN2_REFERENCE`` to the folder that holds the official ``DeFTAN2.py``; otherwise the tests
skip. The file is loaded on its own; it needs ``einops`` (only ``rearrange`` is called, with the two
head-splitting patterns of its attention): the real package is used when it is importable, else a
stand-in that implements exactly those two patterns and refuses any other (``repeat`` and
``Rearrange`` are imported but unused). ``packaging`` (imported, unused) comes with pytest.

A randomly initialised official ``DeFTAN2`` (reduced widths, 2 layers, 4 microphones, the official
512/256 STFT and layer types) has its norm, bias and PReLU parameters moved off their initial
values and is saved as a plain ``state_dict`` (the official code has no training loop and no
profiler, so no ``thop`` buffers); ``speechkit convert deftan2``'s converter infers the
configuration from the weight shapes and both networks run on 4-channel batches (the two items at
different levels) of lengths that are and are not multiples of the hop, plus one shorter than a
window. Measured at the official HEAD 3d4cef1 (torch 2.13 CPU): max error relative to the output
peak 8.9e-7, 5.4e-7 and 4.8e-7 at 8192, 5003 and 300 samples (reduced); the full default
``DeFTAN2()`` against our ``base`` preset has the same 3,997,988 parameters (586 tensors) and
agrees to 1.2e-6 on 1 s and 9.7e-7 on 12,345 samples.
In training mode, seeded alike, dropout draws in the same order, so outputs and gradients agree too.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from reference_support import load_file_module, relative_error

from speechkit.convert.deftan2 import convert_deftan2_checkpoint

SOURCE = os.environ.get("DEFTAN2_REFERENCE")
#: a reduced official network: every layer type, 2 blocks (dilations 1 and 2), 4 microphones
REDUCED = {"n_srcs": 1, "win": 512, "n_mics": 4, "n_layers": 2, "att_dim": 6, "hidden_dim": 12, "n_head": 2,
           "emb_dim": 8, "emb_ks": 4, "emb_hs": 1}

pytestmark = pytest.mark.skipif(not SOURCE, reason="DEFTAN2_REFERENCE (folder holding the official DeFTAN2.py) "
                                                   "is not set")


def _einops_stand_in() -> tuple[types.ModuleType, types.ModuleType, types.ModuleType]:
    """``einops`` with the two ``rearrange`` patterns the official attention uses, nothing else."""

    def rearrange(x: torch.Tensor, pattern: str, **sizes: int) -> torch.Tensor:
        if pattern == "b n (h d) -> b h n d":
            return x.unflatten(-1, (sizes["h"], -1)).transpose(1, 2)
        if pattern == "b h n d -> b n (h d)":
            return x.transpose(1, 2).flatten(2)
        raise NotImplementedError(f"einops stand-in: pattern {pattern!r}")

    def unused(*args: object, **kwargs: object) -> None:
        raise NotImplementedError("einops stand-in: only rearrange is implemented")

    einops = types.ModuleType("einops")
    einops.rearrange, einops.repeat = rearrange, unused  # type: ignore[attr-defined]
    layers = types.ModuleType("einops.layers")
    layers_torch = types.ModuleType("einops.layers.torch")
    layers_torch.Rearrange = unused  # type: ignore[attr-defined]
    einops.layers, layers.torch = layers, layers_torch  # type: ignore[attr-defined]
    return einops, layers, layers_torch


def _official_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The official ``DeFTAN2.py`` imported as a module (with an einops stand-in if einops is missing)."""
    path = Path(str(SOURCE)) / "DeFTAN2.py"
    if not path.is_file():
        pytest.fail(f"DEFTAN2_REFERENCE={SOURCE} holds no DeFTAN2.py")
    if importlib.util.find_spec("einops") is None:
        for module in _einops_stand_in():
            monkeypatch.setitem(sys.modules, module.__name__, module)
    return load_file_module("deftan2_official_reference", path, monkeypatch)


def _official_network(monkeypatch: pytest.MonkeyPatch, **arguments: object) -> torch.nn.Module:
    """A randomly initialised official DeFTAN2 whose 1-D parameters (norms, biases, PReLU) are off their init."""
    torch.manual_seed(0)
    official = _official_module(monkeypatch).DeFTAN2(**{**REDUCED, **arguments})
    with torch.no_grad():  # so that a swapped affine, a missing bias or a wrong slope shows
        for name, parameter in official.named_parameters():
            if parameter.dim() == 1 or name.endswith((".gamma", ".beta")):
                parameter.add_(0.2 * torch.randn_like(parameter))
    return official


@pytest.mark.filterwarnings("ignore:stft with return_complex=False is deprecated")
def test_converted_official_model_reproduces_the_official_output(tmp_path, monkeypatch) -> None:
    official = _official_network(monkeypatch).eval()
    path = tmp_path / "deftan2.pt"
    torch.save(official.state_dict(), path)  # the official code saves nothing itself: a plain state dict
    ours = convert_deftan2_checkpoint(path, tmp_path / "deftan2.safetensors").eval()
    config = ours.config
    inferred = (config.num_microphones, config.num_layers, config.embed_dim, config.num_heads, config.attention_dim,
                config.hidden_dim, config.unfold_kernel, config.n_fft, config.hop_length)
    assert inferred == (4, 2, 8, 2, 6, 12, 4, 512, 256)
    assert ours.num_parameters() == sum(p.numel() for p in official.parameters())
    assert set(ours.state_dict()) == set(official.state_dict())
    for length in (8192, 5003, 300):  # a multiple of the hop, not one, shorter than a window
        x = 0.3 * torch.randn(2, 4, length, generator=torch.Generator().manual_seed(length))
        x[1] *= 3.0  # the level normalisation is per item
        with torch.no_grad():
            reference = official(x)  # [B, M, T] -> [B, n_srcs = 1, T]
            output = ours(x)[:, :, 0]  # [B, 1, 1, T] -> [B, 1, T]
        assert output.shape == reference.shape == (2, 1, length)
        error = relative_error(output, reference)
        assert error < 1e-5, (length, error)


@pytest.mark.filterwarnings("ignore:stft with return_complex=False is deprecated")
def test_training_mode_dropout_and_gradients_match_the_official_network(tmp_path, monkeypatch) -> None:
    """Same dropout sites in the same order: seeded alike, outputs and every parameter gradient agree."""
    official = _official_network(monkeypatch, dropout=0.3).train()
    path = tmp_path / "deftan2.pt"
    torch.save(official.state_dict(), path)
    ours = convert_deftan2_checkpoint(path, dropout=0.3).train()
    x = 0.3 * torch.randn(1, 4, 5003, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    reference = official(x)  # [1, 1, T]
    torch.manual_seed(5)
    output = ours(x)[:, :, 0]  # [1, 1, T]
    assert relative_error(output.detach(), reference.detach()) < 1e-5
    reference.pow(2).sum().backward()
    output.pow(2).sum().backward()
    official_parameters = dict(official.named_parameters())
    for name, parameter in ours.named_parameters():
        expected = official_parameters[name].grad
        assert parameter.grad is not None and expected is not None, name
        error = float((parameter.grad - expected).abs().max() / expected.abs().max().clamp_min(1e-12))
        assert error < 1e-4, (name, error)
