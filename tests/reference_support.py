"""Shared helpers of the official-code comparisons (``test_*_reference.py``): file loading and error measure."""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch


def load_file_module(name: str, path: Path, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Import one file as module ``name``, registered in ``sys.modules`` until the test ends."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest absolute difference relative to the reference's peak."""
    return float((output - reference).abs().max() / reference.abs().max())
