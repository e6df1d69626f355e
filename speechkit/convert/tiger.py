"""Import official TIGER checkpoints (Hugging Face hub-mixin folders, ``.bin`` / ``.pth`` files).

Accepted inputs:

* a Hugging Face folder (``PyTorchModelHubMixin``): ``config.json`` (the constructor arguments)
  plus ``model.safetensors`` (or ``pytorch_model.bin``), with the plain keys ``BN.i.*``,
  ``separator.*``, ``mask.i.*``;
* one of those weight files directly (its folder's ``config.json`` describes it), or a training
  file: a ``torch.save``-d state dict, a ``{"state_dict": ...}`` package (``best_model.pth``) or a
  Lightning checkpoint whose keys carry the ``audio_model.`` prefix. Training packages store a
  useless ``model_args``, so the architecture always comes from ``config.json`` (or ``config=``).

Pickled files are read with ``torch.load(weights_only=True)``. Every tensor must land on the
model and every model tensor must be present, else one :class:`CheckpointError` line lists what is
missing or unexpected. The constructor arguments map onto :class:`~speechkit.models.tiger.TIGERConfig`
(``out_channels`` -> ``features``, ``in_channels`` -> ``hidden_channels``, ``num_blocks`` ->
``iterations``, ``upsampling_depth`` -> ``depth``, ``win`` -> ``win_length``, ``stride`` ->
``hop_length``, ``num_sources``, ``sample_rate``, ``att_n_head`` -> ``num_heads``, ``att_hid_chan`` ->
``key_channels``; ``att_kernel_size`` and ``att_stride`` are accepted and ignored, as the reference
network never reads them; the hub mixin writes every argument, defaults included); the band table is the reference's speech table,
so a sample rate / window for which it does not fit (or that gives another band count than the
file holds) is refused with the reason.

Key mapping (reference -> speechkit): ``BN.i.0`` -> ``band_split.norms.i`` (group norm),
``BN.i.1`` -> ``band_split.projections.i`` (1x1 conv ``[N, 2w, 1]`` -> linear ``[N, 2w]``),
``mask.i.0`` -> ``band_merge.activations.i`` (PReLU), ``mask.i.1`` -> ``band_merge.projections.i``;
``separator.*`` keeps its names, the channel layer norms' ``gamma``/``beta`` ``[1, C, 1, 1]``
become ``[C]``.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from ..checkpoint import mismatch_problems
from ..errors import CheckpointError, ConfigError
from ..models.tiger import SPEECH_BAND_TABLE, TIGER, TIGERConfig
from .common import finish_conversion, load_weights_only

#: reference constructor argument -> TIGERConfig field
CONFIG_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "out_channels": "features",
        "in_channels": "hidden_channels",
        "num_blocks": "iterations",
        "upsampling_depth": "depth",
        "win": "win_length",
        "stride": "hop_length",
        "num_sources": "num_sources",
        "sample_rate": "sample_rate",
        "att_n_head": "num_heads",
        "att_hid_chan": "key_channels",
    }
)
#: reference constructor arguments that its network never uses (accepted and ignored)
UNUSED_ARGUMENTS = frozenset({"att_kernel_size", "att_stride"})
#: prefix of the model's keys in the reference's Lightning training checkpoints
LIGHTNING_PREFIX = "audio_model."
#: sub-networks of the reference TIGER-DnR (three TIGERs whose outputs 2, 1 and 0 it keeps)
DNR_PARTS = ("dialog", "effect", "music")
#: weight files looked for in a folder, in order
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: (reference pattern, speechkit replacement) for the band split and the mask head
_RENAMES = (
    (r"^BN\.(\d+)\.0\.", r"band_split.norms.\1."),
    (r"^BN\.(\d+)\.1\.", r"band_split.projections.\1."),
    (r"^mask\.(\d+)\.0\.", r"band_merge.activations.\1."),
    (r"^mask\.(\d+)\.1\.", r"band_merge.projections.\1."),
)
_INVERSE_RENAMES = (
    (r"^band_split\.norms\.(\d+)\.", r"BN.\1.0."),
    (r"^band_split\.projections\.(\d+)\.", r"BN.\1.1."),
    (r"^band_merge\.activations\.(\d+)\.", r"mask.\1.0."),
    (r"^band_merge\.projections\.(\d+)\.", r"mask.\1.1."),
)


def speechkit_key(reference_key: str) -> str:
    """Our state-dict key for a reference key (``separator.*`` unchanged)."""
    for pattern, replacement in _RENAMES:
        if re.match(pattern, reference_key):
            return re.sub(pattern, replacement, reference_key)
    return reference_key


def reference_key(key: str) -> str:
    """The reference's state-dict key for one of ours (inverse of :func:`speechkit_key`)."""
    for pattern, replacement in _INVERSE_RENAMES:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    return key


def _reference_shape(key: str, tensor: torch.Tensor) -> tuple[int, ...]:
    """The shape the reference stores ``tensor`` (our ``key``) in."""
    if key.startswith("band_split.projections.") and key.endswith(".weight"):
        return (*tensor.shape, 1)  # Conv1d(2w, N, 1)
    if key.startswith("separator.") and key.rsplit(".", 1)[-1] in ("gamma", "beta"):
        return (1, tensor.shape[0], 1, 1)  # LayerNormalization4D
    return tuple(tensor.shape)


def reference_state_dict(model: TIGER) -> dict[str, torch.Tensor]:
    """``model``'s weights under the reference's key names and shapes (what an official file holds)."""
    return {
        reference_key(key): tensor.detach().reshape(_reference_shape(key, tensor)).clone()
        for key, tensor in model.state_dict().items()
    }


def tiger_config(arguments: Mapping[str, Any], source: str = "config.json") -> TIGERConfig:
    """The :class:`TIGERConfig` of the reference constructor ``arguments`` (one-line error if impossible)."""
    unknown = sorted(set(arguments) - set(CONFIG_FIELDS) - UNUSED_ARGUMENTS - {"window"})
    if unknown:
        raise CheckpointError(f"{source}: unknown TIGER argument(s) {', '.join(unknown)}")
    window = str(arguments.get("window", "hann")).lower()
    if window not in ("hann", "hann_window"):
        raise CheckpointError(f"{source}: window {window!r} is not supported; TIGER uses a Hann STFT window")
    values: dict[str, Any] = {"band_table": SPEECH_BAND_TABLE}
    for name, field in CONFIG_FIELDS.items():
        if name in arguments:
            value = arguments[name]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or int(value) != value:
                raise CheckpointError(f"{source}: {name} must be an integer, got {value!r}")
            values[field] = int(value)
    missing = [name for name in ("win", "stride", "sample_rate") if name not in arguments]
    if missing:
        raise CheckpointError(f"{source} lacks {', '.join(missing)} (the band table depends on them)")
    try:
        return TIGERConfig(**values)
    except ConfigError as error:
        raise CheckpointError(
            f"{source}: sample_rate {values['sample_rate']} with win {values['win_length']} does not give a "
            f"TIGER speech model ({error})"
        ) from error


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a weights-only torch file, prefixes stripped."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path))
        except Exception as error:  # safetensors raises its own error types
            raise CheckpointError(f"{path} is not a readable safetensors file ({type(error).__name__})") from error
    else:
        state = load_weights_only(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # best_model.pth (serialize()) or a Lightning checkpoint
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise CheckpointError(f"{path} holds no TIGER state dict (expected a dict of tensors)")
    if state and all(key.startswith(LIGHTNING_PREFIX) for key in state):
        state = {key[len(LIGHTNING_PREFIX):]: value for key, value in state.items()}
    return state


def _locate(path: Path) -> tuple[Path, Path]:
    """``(weights file, config.json)`` of a folder or a weight file."""
    if path.is_dir():
        weights = next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)
        if weights is None:
            raise CheckpointError(f"{path} holds none of {', '.join(WEIGHT_FILES)}")
        return weights, path / "config.json"
    if not path.is_file():
        raise CheckpointError(f"TIGER checkpoint {path} does not exist")
    return path, path.parent / "config.json"


def _read_arguments(config: str | os.PathLike | Mapping[str, Any] | None, default: Path) -> tuple[dict[str, Any], str]:
    if isinstance(config, Mapping):
        return dict(config), "config"
    config_path = Path(config) if config is not None else default
    if not config_path.is_file():
        raise CheckpointError(
            f"{config_path} is missing: TIGER files do not record their architecture, give the Hugging Face "
            "config.json beside the weights (or config=)"
        )
    try:
        arguments = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{config_path} is not a JSON file ({error})") from error
    if not isinstance(arguments, dict):
        raise CheckpointError(f"{config_path} must hold a JSON object of constructor arguments")
    return arguments, str(config_path)


def convert_tiger_state_dict(state: Mapping[str, torch.Tensor], model: TIGER, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Rename reference tensors onto ``model``; one-line error listing missing, unexpected or mis-shaped keys."""
    expected = model.state_dict()
    parts = sorted({key.split(".", 1)[0] for key in state} & set(DNR_PARTS))
    if parts:
        raise CheckpointError(
            f"{source} is a TIGER-DnR file (networks {', '.join(parts)}): only single-network TIGER files import; "
            "the dnr preset is the architecture of one of its networks"
        )
    file_bands = {int(key.split(".")[1]) for key in state if re.match(r"^BN\.\d+\.", key)}
    if file_bands and len(file_bands) != len(model.bands):
        raise CheckpointError(
            f"{source} has {len(file_bands)} bands but sample_rate {model.config.sample_rate} with win "
            f"{model.config.win_length} gives {len(model.bands)}: wrong sample_rate or win in the config"
        )
    converted: dict[str, torch.Tensor] = {}
    unexpected, mis_shaped, seen = [], [], set()
    for key, tensor in state.items():
        target = speechkit_key(key)
        if target not in expected:
            unexpected.append(key)
            continue
        seen.add(target)
        want = expected[target].shape
        same_sizes = [size for size in tensor.shape if size != 1] == [size for size in want if size != 1]
        if not same_sizes:  # only singleton axes may differ (conv vs linear, [1, C, 1, 1] vs [C])
            mis_shaped.append(f"{key} {tuple(tensor.shape)} vs {tuple(_reference_shape(target, expected[target]))}")
            continue
        converted[target] = tensor.detach().to(torch.float32).reshape(want)
    missing = sorted(reference_key(key) for key in set(expected) - seen)
    problems = []
    if any(entry.startswith("BN.") for entry in mis_shaped):
        problems.append(
            f"its band widths differ from those of sample_rate {model.config.sample_rate} with win "
            f"{model.config.win_length} (wrong sample_rate or win in the config)"
        )
    problems.extend(mismatch_problems(missing, unexpected, mis_shaped))
    if problems:
        raise CheckpointError(f"{source} does not match a TIGER of its config: " + "; ".join(problems))
    return converted


def convert_tiger_checkpoint(
    path: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    config: str | os.PathLike | Mapping[str, Any] | None = None,
) -> TIGER:
    """Build a :class:`TIGER` from an official checkpoint, optionally saving it as ours.

    Args:
        path: a Hugging Face folder (``config.json`` + ``model.safetensors`` / ``pytorch_model.bin``),
            one of those files, or a training ``.pth`` / ``.ckpt`` (its folder's ``config.json``).
        out_path: if given, write a speechkit ``.safetensors`` checkpoint there with provenance.
        overwrite: replace an existing ``out_path``.
        config: the constructor arguments (a JSON file or a mapping) instead of ``config.json``.

    Returns:
        The converted model, in eval mode.
    """
    weights, default_config = _locate(Path(path))
    arguments, config_source = _read_arguments(config, default_config)
    model = TIGER(tiger_config(arguments, config_source))
    state = convert_tiger_state_dict(_load_weights(weights), model, str(weights))
    provenance = {
        "converted_from": "tiger",
        "source_file": weights.name,
        "reference_arguments": json.loads(json.dumps(arguments, default=str)),
        "note": "official TIGER weights (Xu, Li et al., ICLR 2025); keys mapped by speechkit.convert.tiger",
    }
    return finish_conversion(model, state, out_path, overwrite, provenance)


__all__ = [
    "CONFIG_FIELDS",
    "convert_tiger_checkpoint",
    "convert_tiger_state_dict",
    "reference_key",
    "reference_state_dict",
    "speechkit_key",
    "tiger_config",
]
