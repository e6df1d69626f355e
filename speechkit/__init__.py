"""speechkit: speech enhancement, separation and echo cancellation.

Heavy modules are imported on first use, so ``import speechkit`` stays light and never imports
optional packages (onnxruntime, sounddevice, pesq, matplotlib).
"""
from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

#: public name -> module that defines it (imported lazily)
_LAZY = {
    "load": "speechkit.api",
    "enhance_file": "speechkit.api",
    "separate_file": "speechkit.api",
    "cancel_echo_file": "speechkit.api",
    "load_echo_canceller": "speechkit.api",
    "build_model": "speechkit.models",
    "load_checkpoint": "speechkit.checkpoint",
    "save_checkpoint": "speechkit.checkpoint",
    "retain_freed_memory": "speechkit.memory",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'speechkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["__version__", *_LAZY]
