"""Import DeFTAN-II checkpoints of the reference implementation (``DeFTAN2`` module state dicts).

The reference code publishes no training loop, so a released file is either a plain
``state_dict`` or a dict wrapping one (``{"state_dict": ...}``, ``{"model": ...}``, a training
package with optimiser state, ...). Both are read with ``torch.load(weights_only=True)``; the
state dict is the nested mapping holding ``up_conv.0.weight`` (a ``module.``-style prefix shared
by all its keys, as DataParallel writes, is removed). Buffers named ``total_ops`` /
``total_params`` (left by the ``thop`` profiler) are dropped; every other tensor must land on
:class:`~speechkit.models.deftan2.DeFTAN2`, whose module tree mirrors the reference's key names,
else a one-line :class:`~speechkit.errors.CheckpointError` lists the missing/unexpected keys.

A state dict carries no configuration, so the architecture is inferred from the weight shapes:
microphones (``up_conv.0`` input channels / 2), heads (subgroups of ``up_conv.2``), channels,
attention width per head, feed-forward width and kernel, unfold kernel and number of layers.
What cannot be seen in the weights is assumed and recorded: the STFT (``n_fft`` 512, hop 256: the
reference's defaults; override with ``n_fft``/``hop_length``), 16 kHz, reference microphone 0, a
uniform circular array of radius 10 cm (the simulated arrays of the reference's data generator).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import key_mismatches, mismatch_problems
from ..errors import CheckpointError, ConfigError
from ..models.deftan2 import DeFTAN2, DeFTAN2Config
from .common import finish_conversion, load_weights_only

#: the key that identifies a DeFTAN-II state dict
ANCHOR_KEY = "up_conv.0.weight"
#: profiler buffer names dropped on import
PROFILER_BUFFERS = ("total_ops", "total_params")
#: wrapper keys tried first when the file is a dict around the state dict
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "model_state", "ema")


def _find_state_dict(package: Any, where: str = "", depth: int = 0) -> tuple[Mapping[str, Any], str] | None:
    """The nested mapping that holds the anchor key (with any prefix), and where it was found."""
    if not isinstance(package, Mapping) or depth > 3:
        return None
    if any(isinstance(key, str) and key.endswith(ANCHOR_KEY) for key in package):
        return package, where or "<top level>"
    ordered = [key for key in WRAPPER_KEYS if key in package] + [key for key in package if key not in WRAPPER_KEYS]
    for key in ordered:
        found = _find_state_dict(package[key], f"{where}.{key}" if where else str(key), depth + 1)
        if found is not None:
            return found
    return None


def read_deftan2_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load the state dict of a DeFTAN-II file; return it (prefix removed, profiler buffers dropped) and notes."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"DeFTAN-II checkpoint {path} does not exist")
    package = load_weights_only(path)
    found = _find_state_dict(package)
    if found is None:
        raise CheckpointError(f"{path} holds no DeFTAN-II state dict (no {ANCHOR_KEY!r} key at any level)")
    raw, location = found
    anchor = next(key for key in raw if isinstance(key, str) and key.endswith(ANCHOR_KEY))
    prefix = anchor[: -len(ANCHOR_KEY)]
    state: dict[str, torch.Tensor] = {}
    dropped, foreign = [], []
    for key, value in raw.items():
        if not isinstance(key, str) or not key.startswith(prefix) or not isinstance(value, torch.Tensor):
            foreign.append(str(key))
        elif key.rsplit(".", 1)[-1] in PROFILER_BUFFERS:
            dropped.append(key)
        else:
            state[key[len(prefix) :]] = value.detach().to(torch.float32)
    if foreign:
        raise CheckpointError(f"{path}: {len(foreign)} unexpected entr(y/ies) beside the state dict: "
                              f"{', '.join(sorted(foreign)[:8])}")
    notes = {"state_dict_location": location, "key_prefix": prefix, "dropped_profiler_buffers": len(dropped)}
    return state, notes


def _shape(state: Mapping[str, torch.Tensor], key: str, source: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"{source}: missing tensor {key!r} needed to infer the architecture")
    return tuple(state[key].shape)


def _count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    indices = {key[len(prefix) :].split(".", 1)[0] for key in state if key.startswith(prefix)}
    return len([index for index in indices if index.isdigit()])


def infer_config(state: Mapping[str, torch.Tensor], source: str = "checkpoint", **overrides: Any) -> DeFTAN2Config:
    """The :class:`DeFTAN2Config` the weight shapes imply (STFT and geometry: see the module docstring)."""
    stem, input_channels = _shape(state, "up_conv.0.weight", source)[:2]
    heads = _count(state, "up_conv.2.blocks.")
    embed_dim = _shape(state, "up_conv.2.blocks.0.0.weight", source)[0]
    layers = _count(state, "blocks.")
    if input_channels % 2 or heads < 1 or layers < 1 or stem != heads * embed_dim:
        raise CheckpointError(f"{source}: up_conv shapes ({stem}x{input_channels}, {heads} subgroups of "
                              f"{embed_dim}) are not a DeFTAN-II stem")
    outputs = _shape(state, "down_conv.0.weight", source)[0]
    if outputs != 2 * heads:
        raise CheckpointError(f"{source}: down_conv has {outputs} channels, i.e. {outputs // (2 * heads)} sources; "
                              "only the one-source enhancement model converts")
    inner = _shape(state, "blocks.0.F_att.fn.to_q.weight", source)[0]
    values = {
        "num_microphones": input_channels // 2,
        "num_layers": layers,
        "embed_dim": embed_dim,
        "num_heads": heads,
        "attention_dim": inner // heads,
        "hidden_dim": 2 * _shape(state, "blocks.0.F_ffw.fn.PW1.0.weight", source)[0],
        "unfold_kernel": _count(state, "blocks.0.F_inv.blocks."),
        "feedforward_kernel": _shape(state, "blocks.0.F_ffw.fn.DW_Conv.0.weight", source)[-1],
        **overrides,
    }
    try:
        return DeFTAN2Config(**values)
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"{source}: inferred configuration is invalid ({error})") from error


def describe_inferred(config: DeFTAN2Config) -> str:
    """One line naming what was inferred from weight shapes and what was assumed."""
    return (f"inferred from weight shapes: {config.num_layers} layers, {config.embed_dim} channels, "
            f"{config.num_heads} heads x {config.attention_dim}, feed-forward {config.hidden_dim} "
            f"(kernel {config.feedforward_kernel}), unfold {config.unfold_kernel}, {config.num_microphones} "
            f"microphones; assumed: n_fft {config.n_fft}, hop {config.hop_length}, {config.sample_rate} Hz, "
            f"reference microphone {config.reference_microphone}, circular array radius {config.array_radius} m")


def convert_deftan2_checkpoint(
    path: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    **overrides: Any,
) -> DeFTAN2:
    """Build a :class:`DeFTAN2` from a reference-implementation checkpoint, optionally saving it as ours.

    Args:
        path: ``torch.save``-d state dict, or a dict wrapping one.
        out_path: if given, write a speechkit ``.safetensors`` checkpoint there with provenance.
        overwrite: replace an existing ``out_path``.
        overrides: config fields the weights cannot show (``n_fft``, ``hop_length``,
            ``reference_microphone``, ``array_radius``, ``sample_rate``).

    Returns:
        The converted model, in eval mode.
    """
    source = str(path)
    state, notes = read_deftan2_state_dict(path)
    config = infer_config(state, source, **overrides)
    model = DeFTAN2(config)
    problems = mismatch_problems(*key_mismatches(state, model.state_dict()))
    if problems:
        raise CheckpointError(f"{source} does not match the DeFTAN-II its shapes imply: " + "; ".join(problems))
    provenance = {
        "converted_from": "deftan2",
        "source_file": Path(path).name,
        **notes,
        "configuration": describe_inferred(config),
        "note": "a state dict carries no configuration: the architecture is inferred from the weight "
                "shapes; STFT, sample rate, reference microphone and array geometry are assumed",
    }
    return finish_conversion(model, state, out_path, overwrite, provenance)


__all__ = ["convert_deftan2_checkpoint", "describe_inferred", "infer_config", "read_deftan2_state_dict"]
