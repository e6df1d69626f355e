"""speechkit checkpoints: safetensors weights with JSON metadata, never pickle.

One ``.safetensors`` file holds the weights; its header metadata holds one entry,
``"speechkit"``, a JSON document::

    {"format": "speechkit-checkpoint", "format_version": 1,
     "model": "conv_tasnet", "task": "separation", "sample_rate": 8000,
     "input_layout": {"num_microphones": 1, "far_end_channel": null, ...},
     "frontend": {"kind": "learned", "win_length": 16, ...},
     "config": {...}, "speechkit_version": "0.1.0", "provenance": {...}}

Loading checks the format, the model name, the config fields, the input layout (checkpoints
written before it was stored load with the model's declared layout), and every tensor name and
shape, and explains each mismatch.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from ._files import publish, temporary_sibling
from ._version import __version__
from .errors import CheckpointError, ConfigError
from .models import config_from_dict, config_to_dict, get_model_class
from .models.base import SpeechModel, json_ready
from .tasks import InputLayout

FORMAT = "speechkit-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "speechkit"
#: precisions a checkpoint may store its floating-point tensors at (None: as the model holds them)
STORAGE_DTYPES = (None, "float16", "bfloat16")


def checkpoint_metadata(model: SpeechModel, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON metadata describing ``model`` (and how it was trained, if given)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.name,
        "task": model.task,
        "sample_rate": model.sample_rate,
        "input_layout": model.input_layout.to_dict(),
        "frontend": model.frontend_spec.to_dict(),
        "config": config_to_dict(model.config),
        "speechkit_version": __version__,
        "provenance": json_ready(provenance or {}),
    }


def save_checkpoint(
    model: SpeechModel,
    path: str | os.PathLike,
    provenance: dict[str, Any] | None = None,
    overwrite: bool = False,
    storage_dtype: str | None = None,
) -> Path:
    """Write ``model`` to ``path`` (``.safetensors``) atomically.

    Args:
        model: the model to save.
        path: destination file.
        provenance: training facts (data, steps, metrics, command) stored with the weights.
        overwrite: replace an existing file.
        storage_dtype: ``"float16"`` or ``"bfloat16"`` stores floating-point tensors at that
            precision (half the size, for release artifacts); loading casts them back to the
            model's precision. Default: as the model holds them (bit-exact round trip).
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path} exists; pass overwrite=True to replace it")
    if storage_dtype not in STORAGE_DTYPES:
        raise ConfigError(f"storage_dtype must be one of {', '.join(map(str, STORAGE_DTYPES))}, not {storage_dtype!r}")
    metadata_values = checkpoint_metadata(model, provenance)
    if storage_dtype is not None:
        metadata_values["storage_dtype"] = storage_dtype
    metadata = {METADATA_KEY: json.dumps(metadata_values, sort_keys=True)}
    tensors = {
        key: _stored(value.detach().cpu(), storage_dtype).contiguous() for key, value in model.state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = temporary_sibling(path)
    try:
        save_file(tensors, tmp_name, metadata=metadata)
        publish(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The speechkit metadata of a checkpoint file, validated."""
    from safetensors import safe_open
    from safetensors import SafetensorError

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a safetensors file ({error})") from error
    if METADATA_KEY not in header:
        raise CheckpointError(
            f"{path} has no speechkit metadata; official checkpoints must be converted first "
            "(see speechkit.convert)"
        )
    try:
        metadata = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: speechkit metadata is not valid JSON ({error})") from error
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {metadata.get('format')!r}")
    if int(metadata.get("format_version", -1)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} uses checkpoint format {metadata['format_version']}, newer than this speechkit "
            f"({FORMAT_VERSION}); upgrade speechkit"
        )
    for key in ("model", "config"):
        if key not in metadata:
            raise CheckpointError(f"{path}: metadata lacks {key!r}")
    return metadata


def preview_keys(items: Iterable[str], limit: int = 8) -> str:
    """``items`` joined by commas, at most ``limit`` of them, then ``... (N more)``."""
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def key_mismatches(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """How ``state`` differs from ``expected`` (a model's state dict), each list sorted.

    Returns the keys ``state`` lacks, the keys it has beyond ``expected``, and
    ``"key (shape) != (expected shape)"`` for each shared key whose shape differs.
    """
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = sorted(
        f"{key} {tuple(state[key].shape)} != {tuple(expected[key].shape)}"
        for key in set(state) & set(expected)
        if tuple(state[key].shape) != tuple(expected[key].shape)
    )
    return missing, unexpected, mis_shaped


def mismatch_problems(
    missing: Iterable[str] = (),
    unexpected: Iterable[str] = (),
    mis_shaped: Iterable[str] = (),
    unexpected_label: str = "unexpected",
) -> list[str]:
    """One phrase per non-empty list, e.g. ``"2 missing tensor(s): a, b"`` (names sorted, see :func:`preview_keys`).

    The phrases of a checkpoint or converter error that does not fit a model; ``unexpected_label``
    names the surplus keys (a converter may call them ``"unconsumed"``).
    """
    problems = []
    for label, keys in (("missing", missing), (unexpected_label, unexpected), ("mis-shaped", mis_shaped)):
        keys = sorted(keys)
        if keys:
            problems.append(f"{len(keys)} {label} tensor(s): {preview_keys(keys)}")
    return problems


def load_state_dict_strict(model: SpeechModel, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``, failing with a list of every missing, unexpected or mis-shaped key."""
    problems = mismatch_problems(*key_mismatches(state, model.state_dict()))
    if problems:
        raise CheckpointError(f"{source} does not fit {model.name}: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> SpeechModel:
    """Build the model a checkpoint describes and load its weights (in eval mode)."""
    from safetensors.torch import load_file

    metadata = read_metadata(path)
    try:
        model_class = get_model_class(metadata["model"])
        config = config_from_dict(model_class.config_class, metadata["config"])
    except ConfigError as error:
        raise CheckpointError(f"{path}: {error}") from error
    model = model_class(config)
    stored = stored_input_layout(metadata, model)
    declared = model.input_layout
    if (stored.num_microphones, stored.far_end_channel) != (declared.num_microphones, declared.far_end_channel):
        raise CheckpointError(
            f"{path} was saved for input {stored.describe()}, but its config builds a model for {declared.describe()}"
        )
    state = load_file(str(path), device=str(map_location))
    expected = model.state_dict()
    state = {  # half-precision release files load into the model's own precision
        key: value.to(expected[key].dtype) if key in expected and value.is_floating_point() else value
        for key, value in state.items()
    }
    load_state_dict_strict(model, state, str(path))
    model.to(map_location)
    model.eval()
    model.checkpoint_metadata = metadata  # type: ignore[attr-defined]
    return model


def stored_input_layout(metadata: dict[str, Any], model: SpeechModel) -> InputLayout:
    """The input layout a checkpoint's metadata records (older checkpoints: ``model``'s declared one)."""
    values = metadata.get("input_layout")
    if values is None:
        return model.input_layout
    try:
        return InputLayout.from_dict(values)
    except (ConfigError, TypeError, ValueError) as error:
        raise CheckpointError(f"invalid input_layout in checkpoint metadata: {error}") from error


def _stored(tensor: torch.Tensor, storage_dtype: str | None) -> torch.Tensor:
    """``tensor`` at the storage precision (floating-point tensors only)."""
    if storage_dtype is None or not tensor.is_floating_point():
        return tensor
    return tensor.to(getattr(torch, storage_dtype))
