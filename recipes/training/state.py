"""Training state I/O: atomic ``torch.save``, the resumable train-state file, and RNG states."""
from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechkit._files import publish, temporary_sibling
from speechkit.errors import ConfigError

#: the ``format`` value of every train-state file (``last.pt``, ``step_*.pt``)
STATE_FORMAT = "speechkit-train-state-1"


def atomic_torch_save(state: Mapping[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = temporary_sibling(path)
    try:
        torch.save(dict(state), tmp_name)
        publish(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def load_train_state(path: Path) -> dict[str, Any]:
    """Load a training state saved by the trainer (``weights_only=True``)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != STATE_FORMAT:
        raise ConfigError(f"{path} is not a speechkit training state")
    return state


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors and plain values."""
    _, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": list(random.getstate()[1]) + [random.getstate()[0]],
        "python_gauss": random.getstate()[2],
        "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
        "numpy_rest": [int(position), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    python = list(state["python"])
    random.setstate((python[-1], tuple(python[:-1]), state["python_gauss"]))
    position, has_gauss, cached = state["numpy_rest"]
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
