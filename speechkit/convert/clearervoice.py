"""Import ClearerVoice-Studio MossFormer2 separation checkpoints (``last_best_checkpoint.pt``).

The released file (``MossFormer2_SS_16K``; the 8 kHz model has the same layout) is a
``torch.save``-d dict whose ``"model"`` entry is the state dict of the separation network, perhaps
beside optimizer state and counters; a checkpoint written by a DDP run prefixes every key with
``module.``. It is read with ``torch.load(weights_only=True, mmap=True)``: nothing but tensors and
plain containers is unpickled, and the storages are memory-mapped, so the optimizer state next to
the weights is never read into memory (no extra class is allowed; a file that needs one is refused
with its name).

Key layout (the module loaded is the bare network, no ``model.`` prefix): ``enc.conv1d.weight``,
``dec.weight`` and ``mask_net.*``. ``mask_net.*`` maps one to one onto :class:`MossFormer2`'s
``mask_net`` (whose names mirror the official ones); the filterbanks become
``encoder.filterbank._filters`` / ``decoder.filterbank._filters``. Two kinds of official tensors
are constants, not weights: ``mask_net.pos_enc.inv_freq`` and the rotary frequencies saved once per
layer (``...layers.{i}.rotary_pos_emb.freqs``, one shared module); they are checked against the
values speechkit computes and refused if they differ. Every other tensor must land on the model
with its shape: a missing, unexpected or mis-shaped key is a one-line :class:`CheckpointError`
(ClearerVoice's own loader skips such keys silently).

The architecture is read off the tensor shapes (filters, window, widths, layer count, speakers,
FSMN order and depth); the sample rate is not in the file and is given by the caller (16000 for
``MossFormer2_SS_16K``, 8000 for the 8 kHz model).
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import key_mismatches, mismatch_problems
from ..errors import CheckpointError, ConfigError
from ..models.mossformer2 import MossFormer2, MossFormer2Config
from ..nn.mossformer import rotary_frequencies
from .common import finish_conversion, load_weights_only

#: official key -> speechkit key for the two filterbanks
FILTERBANK_KEYS = {"enc.conv1d.weight": "encoder.filterbank._filters", "dec.weight": "decoder.filterbank._filters"}
#: the sinusoidal position code's constant frequencies (checked, not loaded)
POSITION_FREQS_KEY = "mask_net.pos_enc.inv_freq"
#: the rotary code's constant frequencies, saved under every layer's name (checked, not loaded)
ROTARY_FREQS_KEY = re.compile(r"^mask_net\.mdl\.intra_mdl\.mossformerM\.layers\.(\d+)\.rotary_pos_emb\.freqs$")
#: prefix of the official layer tensors
LAYER_PREFIX = "mask_net.mdl.intra_mdl.mossformerM."
#: a DDP checkpoint's key prefix
DDP_PREFIX = "module."
#: relative tolerance when checking the constant frequency tensors
CONSTANT_RTOL = 1e-5


def _weights_only_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``, memory-mapped when the file is a zip archive (any torch >= 1.6 save)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap" not in str(error) and "zip" not in str(error):
            raise
    return torch.load(path, map_location="cpu", weights_only=True)  # legacy (pre-zip) format: no mmap


def read_clearervoice_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The model state dict of a ClearerVoice checkpoint (``module.`` stripped) and facts about the file.

    Returns ``(state, facts)``; ``facts`` holds ``other_entries`` (the top-level keys beside
    ``"model"``, never read) and ``ddp_prefix`` (whether ``module.`` was stripped).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ClearerVoice checkpoint {path} does not exist")
    package = load_weights_only(
        path, _weights_only_load, hint="; speechkit allows no extra classes in ClearerVoice files"
    )
    if not isinstance(package, Mapping):
        raise CheckpointError(
            f"{path} is not a ClearerVoice checkpoint (expected a dict, got {type(package).__name__})"
        )
    state = package["model"] if "model" in package else package
    other_entries = sorted(str(key) for key in package if key != "model") if "model" in package else []
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{path}: the 'model' entry is not a non-empty state dict")
    tensors: dict[str, torch.Tensor] = {}
    stripped = False
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: state entry {key!r} is not a named tensor")
        name = key[len(DDP_PREFIX):] if key.startswith(DDP_PREFIX) else key
        stripped = stripped or name != key
        if name in tensors:
            raise CheckpointError(f"{path}: {name!r} appears both with and without the {DDP_PREFIX!r} prefix")
        tensors[name] = value
    return tensors, {"other_entries": other_entries, "ddp_prefix": stripped}


def _shape(state: Mapping[str, torch.Tensor], key: str, source: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"{source} is not a MossFormer2 separation checkpoint (no {key!r})")
    return tuple(state[key].shape)


def clearervoice_config(state: Mapping[str, torch.Tensor], sample_rate: int = 16000,
                        source: str = "checkpoint") -> MossFormer2Config:
    """The :class:`MossFormer2Config` whose tensors have the shapes found in ``state`` (official key names)."""
    encoder_dim, _, kernel_size = _shape(state, "enc.conv1d.weight", source)
    model_dim = _shape(state, "mask_net.conv1d_encoder.weight", source)[0]
    layer = LAYER_PREFIX + "layers.0."
    fsmn = LAYER_PREFIX + "fsmn.0."
    num_layers = len({key.split(".")[5] for key in state if key.startswith(LAYER_PREFIX + "layers.")})
    memory_conv = re.compile(re.escape(fsmn) + r"gated_fsmn\.fsmn\.conv\.conv\d+\.weight$")
    fsmn_depth = len([key for key in state if memory_conv.match(key)])
    rotary_key = layer + "rotary_pos_emb.freqs"
    try:
        return MossFormer2Config(
            encoder_kernel_size=int(kernel_size),
            encoder_dim=int(encoder_dim),
            model_dim=int(model_dim),
            num_layers=num_layers,
            num_speakers=_shape(state, "mask_net.conv1d_out.weight", source)[0] // int(model_dim),
            query_key_dim=_shape(state, layer + "to_qk.mdl.1.weight", source)[0],
            expansion_factor=_shape(state, layer + "to_hidden.mdl.1.weight", source)[0] / int(model_dim),
            rotary_dim=2 * _shape(state, rotary_key, source)[0] if rotary_key in state else 32,
            conv_kernel_size=_shape(state, layer + "to_hidden.mdl.3.sequential.1.conv.weight", source)[-1],
            fsmn_channels=_shape(state, fsmn + "conv1.0.weight", source)[0],
            fsmn_lorder=(_shape(state, fsmn + "gated_fsmn.fsmn.conv.conv1.weight", source)[2] + 1) // 2,
            fsmn_depth=fsmn_depth,
            sample_rate=int(sample_rate),
        )
    except ConfigError as error:
        raise CheckpointError(f"{source}: unsupported MossFormer2 configuration ({error})") from error


def convert_clearervoice_state_dict(
    state: Mapping[str, torch.Tensor], model: MossFormer2, source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Rename official tensors onto ``model``; check the constant ones; fail listing every mismatch in one line."""
    expected = model.state_dict()
    rotary_reference = rotary_frequencies(int(model.config.rotary_dim))
    position_reference = rotary_frequencies(int(model.config.model_dim))
    converted: dict[str, torch.Tensor] = {}
    unexpected, wrong_constants = [], []
    for key, tensor in state.items():
        if key == POSITION_FREQS_KEY or ROTARY_FREQS_KEY.match(key):
            reference = position_reference if key == POSITION_FREQS_KEY else rotary_reference
            if tensor.shape != reference.shape or not torch.allclose(tensor.float(), reference, rtol=CONSTANT_RTOL):
                wrong_constants.append(key)
            continue
        target = FILTERBANK_KEYS.get(key, key if key.startswith("mask_net.") else None)
        if target is None or target not in expected:
            unexpected.append(key)
            continue
        converted[target] = tensor.detach().to(torch.float32)
    missing, _, mis_shaped = key_mismatches(converted, expected)  # converted holds only expected keys
    problems = mismatch_problems(missing, unexpected, mis_shaped)
    if POSITION_FREQS_KEY not in state:
        problems.append(f"missing tensor {POSITION_FREQS_KEY}")
    if wrong_constants:
        problems.append(
            f"{len(wrong_constants)} position-frequency tensor(s) differ from the fixed base-10000 code "
            f"(learned frequencies are not supported): {', '.join(sorted(wrong_constants)[:4])}"
        )
    if problems:
        raise CheckpointError(f"{source} does not match MossFormer2: " + "; ".join(problems))
    return converted


def convert_clearervoice_checkpoint(
    path: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    sample_rate: int = 16000,
) -> MossFormer2:
    """Build a :class:`MossFormer2` from a ClearerVoice ``last_best_checkpoint.pt``, optionally saving it as ours.

    Args:
        path: the official checkpoint (``{"model": state_dict, ...}`` or a bare state dict, keys perhaps
            prefixed ``module.``).
        out_path: if given, write a speechkit ``.safetensors`` checkpoint there with provenance.
        overwrite: replace an existing ``out_path``.
        sample_rate: the model's rate, which the file does not record (16000: ``MossFormer2_SS_16K``).

    Returns:
        The converted model, in eval mode.
    """
    source = str(path)
    state, facts = read_clearervoice_state(path)
    config = clearervoice_config(state, sample_rate, source)
    model = MossFormer2(config)
    provenance = {
        "converted_from": "clearervoice",
        "source_file": Path(path).name,
        "source_tensors": len(state),
        "ddp_prefix_stripped": facts["ddp_prefix"],
        "ignored_entries": facts["other_entries"],
    }
    return finish_conversion(model, convert_clearervoice_state_dict(state, model, source), out_path, overwrite,
                             provenance)
