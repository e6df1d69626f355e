"""Lazy imports of optional dependencies with an actionable error message."""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError


def require(module: str, extra: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``speechkit[extra]``.

    Args:
        module: importable module name, e.g. ``"onnxruntime"``.
        extra: the speechkit extra that provides it, e.g. ``"onnx"``.
        purpose: what it is needed for, used in the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        need = f" for {purpose}" if purpose else ""
        raise MissingDependencyError(
            f"{module} is needed{need} but is not installed: pip install 'speechkit[{extra}]'"
        ) from error
