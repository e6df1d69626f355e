"""Model registry: names to model classes, presets and summaries.

The table below is the registry; it is a constant, not mutable global state. Adding a model means
adding one line here (one model per file in this package).
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch

from ..errors import ConfigError
from .base import SpeechModel, config_from_dict, config_to_dict, make_config

#: registry name -> "module:Class" (imported on first use)
MODEL_CLASSES: Mapping[str, str] = MappingProxyType(
    {
        "conv_tasnet": "speechkit.models.conv_tasnet:ConvTasNet",
        "complex_d3net_aec": "speechkit.models.complex_d3net_aec:ComplexD3NetAEC",
        "linear_aec": "speechkit.models.linear_aec:LinearEchoCanceller",
        "tiger": "speechkit.models.tiger:TIGER",
        "deftan2": "speechkit.models.deftan2:DeFTAN2",
        "mossformer2": "speechkit.models.mossformer2:MossFormer2",
        "sgmse": "speechkit.models.sgmse:SGMSE",
    }
)


def model_names() -> list[str]:
    """Registered model names."""
    return sorted(MODEL_CLASSES)


def get_model_class(name: str) -> type[SpeechModel]:
    """The model class registered as ``name``."""
    if name not in MODEL_CLASSES:
        raise ConfigError(f"unknown model {name!r} (known: {', '.join(model_names())})")
    module_name, class_name = MODEL_CLASSES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_model(name: str, preset: str = "tiny", **overrides: Any) -> SpeechModel:
    """Build an untrained model from its registry ``name`` and ``preset`` (``"tiny"``, ``"paper"``, ...)."""
    return get_model_class(name).from_preset(preset, **overrides)


def describe_presets() -> list[dict[str, Any]]:
    """One summary per (model, preset): built on the meta device, so no weights are allocated."""
    rows = []
    for name in model_names():
        model_class = get_model_class(name)
        for preset in model_class.presets:
            with torch.device("meta"):
                model = model_class.from_preset(preset)
            rows.append({"preset": preset, **model.describe()})
    return rows


__all__ = [
    "MODEL_CLASSES",
    "SpeechModel",
    "build_model",
    "config_from_dict",
    "config_to_dict",
    "describe_presets",
    "get_model_class",
    "make_config",
    "model_names",
]
