"""Bundled pretrained models and the resolution of ``--model NAME|PATH``.

A bundled model is a speechkit checkpoint shipped inside the package at
``speechkit/assets/models/<name>.safetensors`` with its model card ``<name>.md`` next to it
(training data, steps, metrics, license). :data:`DEFAULT_MODEL` is used when no model is given.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from .errors import CheckpointError

#: folder of the bundled checkpoints and model cards
MODELS_DIR = Path(__file__).resolve().parent / "assets" / "models"
#: folder of the bundled example recordings
EXAMPLES_DIR = Path(__file__).resolve().parent / "assets" / "examples"
#: bundled model used when none is named (a 16 kHz enhancement Conv-TasNet)
DEFAULT_MODEL = "conv_tasnet_enhance_16k"
#: bundled model used by ``separate`` when none is named (a 16 kHz two-speaker TCN on an STFT, read sentences)
DEFAULT_SEPARATOR = "conv_tasnet_separate_2spk_16k"
#: the bundled model each action uses when none is named
DEFAULT_MODELS = {"enhance": DEFAULT_MODEL, "separate": DEFAULT_SEPARATOR}
#: bundled echo canceller ``aec`` uses when none is named (the trained network behind the linear stage;
#: a copy of speechkit without its file falls back to :data:`LINEAR_ECHO_CANCELLER`)
DEFAULT_ECHO_CANCELLER = "complex_d3net_aec_16k"
#: the one-line explanation when no echo canceller at all is installed
NO_BUNDLED_ECHO_CANCELLER = (
    "no echo canceller is installed in this copy of speechkit; pass --model FILE.safetensors (train one with "
    "recipes/echo_cancellation) "
    "or --linear-only for the linear stage alone (adaptive filter and residual-echo suppressor)"
)
#: the bundled linear echo canceller (adaptive filter + residual-echo suppressor, no network): ``aec --linear-only``, and
#: ``aec``'s default where the trained network (:data:`DEFAULT_ECHO_CANCELLER`) is not installed
LINEAR_ECHO_CANCELLER = "linear_aec_16k"
CHECKPOINT_SUFFIX = ".safetensors"
#: checkpoint files of other toolkits that must be converted before use
FOREIGN_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".tar")


@dataclasses.dataclass(frozen=True)
class BundledModel:
    """A checkpoint shipped with speechkit."""

    name: str
    path: Path
    card: Path | None

    def metadata(self) -> dict[str, Any]:
        """The checkpoint's speechkit metadata."""
        from .checkpoint import read_metadata

        return read_metadata(self.path)


def bundled_models() -> list[BundledModel]:
    """Every bundled model, sorted by name (empty if none is installed)."""
    if not MODELS_DIR.is_dir():
        return []
    found = []
    for path in sorted(MODELS_DIR.glob(f"*{CHECKPOINT_SUFFIX}")):
        card = path.with_suffix(".md")
        found.append(BundledModel(path.stem, path, card if card.is_file() else None))
    return found


def bundled_echo_canceller() -> Path | None:
    """The echo canceller ``aec`` uses by default: the bundled :data:`DEFAULT_ECHO_CANCELLER` network,
    else the bundled :data:`LINEAR_ECHO_CANCELLER` (no network), else None."""
    for name in (DEFAULT_ECHO_CANCELLER, LINEAR_ECHO_CANCELLER):
        path = MODELS_DIR / f"{name}{CHECKPOINT_SUFFIX}"
        if path.is_file():
            return path
    return None


def bundled_model_names() -> list[str]:
    """Names of the bundled models."""
    return [model.name for model in bundled_models()]


def bundled_model(name: str) -> BundledModel:
    """The bundled model called ``name``; :class:`CheckpointError` if it is not installed."""
    path = MODELS_DIR / f"{name}{CHECKPOINT_SUFFIX}"
    if not path.is_file():
        available = ", ".join(bundled_model_names()) or "none are installed in this copy of speechkit"
        raise CheckpointError(f"no bundled model named {name!r} (bundled models: {available})")
    card = path.with_suffix(".md")
    return BundledModel(name, path, card if card.is_file() else None)


def default_model(action: str = "enhance") -> str:
    """Name of the bundled model that ``action`` (``"enhance"`` or ``"separate"``) uses when none is named."""
    if action not in DEFAULT_MODELS:
        raise CheckpointError(f"no default model for {action!r}; actions with one: {', '.join(DEFAULT_MODELS)}")
    return DEFAULT_MODELS[action]


def resolve_model(name_or_path: str | os.PathLike | None = None) -> Path:
    """The checkpoint file that ``name_or_path`` designates.

    Order: an existing file path; a bundled model name; otherwise a clear error. A registry
    architecture name (e.g. ``"conv_tasnet"``) is refused, because it has no trained weights and
    would give random output.
    """
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() in FOREIGN_SUFFIXES:
            raise CheckpointError(
                f"{path} is not a speechkit checkpoint; official checkpoints must be converted to "
                ".safetensors first (see speechkit.convert)"
            )
        return path
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; pass a .safetensors checkpoint file")
    if (MODELS_DIR / f"{text}{CHECKPOINT_SUFFIX}").is_file():
        return MODELS_DIR / f"{text}{CHECKPOINT_SUFFIX}"
    from .models import model_names

    bundled = ", ".join(bundled_model_names()) or "none installed"
    if text in model_names():
        raise CheckpointError(
            f"{text!r} is a model architecture without trained weights (it would output noise); pass a "
            f"trained checkpoint path (train one with the recipes or convert an official one with "
            f"speechkit.convert) or a bundled model name (bundled: {bundled})"
        )
    if text in DEFAULT_MODELS.values():
        raise CheckpointError(
            f"the default bundled model {text!r} is not installed in this copy of speechkit; "
            "pass --model PATH to a trained .safetensors checkpoint"
        )
    if os.sep in text or path.suffix:
        raise CheckpointError(f"checkpoint {path} does not exist")
    raise CheckpointError(f"unknown model {text!r}: not a file and not a bundled model (bundled: {bundled})")
