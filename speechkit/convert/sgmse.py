"""Import official SGMSE+ Lightning checkpoints (``.ckpt``) as :class:`~speechkit.models.sgmse.SGMSE`.

A released file is a PyTorch Lightning checkpoint: a dict with ``state_dict`` (the score model:
the NCSN++ backbone under ``dnn.``: ``dnn.output_layer.*`` and its modules in one flat list
``dnn.all_modules.{i}.*``), ``ema`` (the exponential-moving-average state: ``decay``,
``num_updates``, ``shadow_params`` as a **positional list** in the backbone's parameter order, and
``collected_params``), ``hyper_parameters`` (backbone and SDE names, STFT, compression, SDE
constants, training settings, and ``data_module_cls``: a reference to the data-module class) and
Lightning's training state (optimiser, loops, callbacks, ...), which is not needed.

Safety: the file is read with ``torch.load(weights_only=True)``. The one non-primitive object a
real file holds is the class reference ``sgmse.data_module.SpecsDataModule``; exactly that name is
allow-listed, bound to an inert stand-in class (a reference is never instantiated and no code of
the file runs). Any other class is refused with its name.

Weights: the EMA weights by default (what the reference uses for inference; ``weights="raw"``
takes the non-EMA ``state_dict``). The EMA list must have one tensor per backbone parameter in
order (with or without the fixed Fourier frequencies ``all_modules.0.W``), each of the expected
shape. That order is the registration order of the reference ``NCSNpp``: its ``output_layer`` is
created before ``all_modules``, so the list opens with the output layer's weight and bias
(torch_ema keeps one shadow tensor per parameter of ``ScoreModel.parameters()``, i.e. of ``dnn``).
Every ``dnn.*`` key must land on the model; missing, unexpected or mis-shaped keys are listed in a
one-line :class:`~speechkit.errors.CheckpointError`. The attention projections are stored as
``[in, out]`` matrices (``NIN_k.W``) and become 1x1 convolutions.

Hyper-parameters carried into :class:`~speechkit.models.sgmse.SGMSEConfig`: ``n_fft``,
``hop_length``, ``spec_factor``, ``spec_abs_exponent``, ``theta``, ``sigma_min``, ``sigma_max``,
``t_eps``, ``ch_mult``, ``num_res_blocks``, ``attn_resolutions``, ``nf``, ``centered`` (older
files lack it; then it is assumed True unless ``centered=`` is given), ``N`` (the default
number of steps), ``progressive`` / ``progressive_input`` (written by ``ncsnpp_48k`` runs, default
``"none"``; ``ncsnpp`` fixes ``"output_skip"`` / ``"input_skip"``). The backbone sets the rest as the reference's ``enhancement.py`` does: ``ncsnpp``
runs at 16 kHz with zero frame padding, ``ncsnpp_48k`` at 48 kHz with reflection padding and its
``t`` scaling after the output layer; ``sr`` (the rate of the training-time metrics, 16000 by
default even for 48 kHz runs) is only noted when it differs. Refused: another backbone than
``ncsnpp`` / ``ncsnpp_48k``, ``"residual"`` progressive paths, another SDE than ``ouve``, a window
other than ``hann``, a transform other than ``exponent``, a normalisation other than ``noisy``,
network scalings (``ncsnpp_v2``-style ``c_in``/``c_out``). Training-only keys are recorded in
the provenance and otherwise ignored.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from ..checkpoint import mismatch_problems, preview_keys
from ..errors import CheckpointError, ConfigError
from ..models.sgmse import SGMSE, SGMSEConfig
from ..nn.ncsnpp import BigGANResBlock, GaussianFourierEmbedding, PositionAttention, PyramidCombine
from .common import finish_conversion, load_error_cause

#: the one class reference a real checkpoint holds (in ``hyper_parameters["data_module_cls"]``)
DATA_MODULE_REFERENCE = ("sgmse.data_module", "SpecsDataModule")
#: keys of the ``ema`` entry
EMA_KEYS = ("decay", "num_updates", "shadow_params", "collected_params")
#: supported backbones
BACKBONES = ("ncsnpp", "ncsnpp_48k")
#: hyper-parameters that only concern training or logging (recorded, not used)
TRAINING_KEYS = frozenset({
    "lr", "ema_decay", "num_eval_files", "loss_type", "loss_weighting", "sigma_data", "l1_weight", "pesq_weight",
    "num_frames", "num_workers", "dummy", "batch_size", "base_dir", "format", "data_module_cls", "gpu", "gpus",
    "no_wandb", "nolog", "log_dir", "wandb_name", "ckpt", "max_epochs", "return_time", "pad_mode", "sampler_type",
})
#: submodule names of our blocks -> the reference's, per block type
_NAMES: Mapping[type, Mapping[str, str]] = MappingProxyType({
    BigGANResBlock: {"norm_in": "GroupNorm_0", "conv_in": "Conv_0", "embedding_proj": "Dense_0",
                     "norm_out": "GroupNorm_1", "conv_out": "Conv_1", "skip": "Conv_2"},
    PositionAttention: {"norm": "GroupNorm_0", "query": "NIN_0", "key": "NIN_1", "value": "NIN_2", "output": "NIN_3"},
    PyramidCombine: {"proj": "Conv_0"},
})
_NIN: Mapping[str, str] = MappingProxyType({"weight": "W", "bias": "b"})


class SpecsDataModuleReference:
    """Inert stand-in for the data-module class reference of a checkpoint's hyper-parameters."""


SpecsDataModuleReference.__module__, SpecsDataModuleReference.__qualname__ = DATA_MODULE_REFERENCE
SpecsDataModuleReference.__name__ = DATA_MODULE_REFERENCE[1]


def read_lightning_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load an SGMSE+ ``.ckpt`` with ``weights_only=True``, allow-listing only the data-module reference."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"SGMSE+ checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals([SpecsDataModuleReference]):
            package = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler raises several types; every one is reported in one line
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found:
            raise CheckpointError(
                f"{path} refers to the class {found.group(1)}, which an SGMSE+ checkpoint does not hold "
                f"(only {'.'.join(DATA_MODULE_REFERENCE)} is accepted); refusing to unpickle it"
            ) from error
        cause = load_error_cause(error)
        raise CheckpointError(f"{path} is not a checkpoint loadable with weights_only=True ({cause})") from error
    if not isinstance(package, dict) or not isinstance(package.get("state_dict"), Mapping) or not isinstance(
        package.get("hyper_parameters"), Mapping
    ):
        raise CheckpointError(f"{path} is not an SGMSE+ Lightning checkpoint (expected 'state_dict' and 'hyper_parameters')")
    return package


def config_from_hyper_parameters(
    hparams: Mapping[str, Any], centered: bool | None = None
) -> tuple[SGMSEConfig, dict[str, Any]]:
    """The model config of a checkpoint's ``hyper_parameters`` and notes (assumptions, ignored keys)."""
    def refuse(key: str, allowed: tuple[Any, ...], default: Any) -> None:
        value = hparams.get(key, default)
        if value not in allowed:
            accepted = ", ".join(map(repr, allowed))
            raise CheckpointError(f"SGMSE+ checkpoint has {key}={value!r}; only {accepted} is implemented")

    refuse("backbone", BACKBONES, "ncsnpp")
    wide = hparams.get("backbone") == "ncsnpp_48k"
    # the progressive paths: ncsnpp fixes them (output_skip / input_skip), ncsnpp_48k trains with "none"
    refuse("progressive", ("output_skip", "none"), "none" if wide else "output_skip")
    refuse("progressive_input", ("input_skip", "none"), "none" if wide else "input_skip")
    refuse("sde", ("ouve", "ouvesde"), "ouve")
    refuse("window", ("hann",), "hann")
    refuse("transform_type", ("exponent",), "exponent")
    refuse("normalize", ("noisy",), "noisy")
    refuse("network_scaling", (None,), None)
    for key, neutral in (("c_in", "1"), ("c_out", "1"), ("c_skip", "0")):
        refuse(key, (neutral, None), neutral)
    notes: dict[str, Any] = {}
    base = SGMSE.presets["ears_48k" if wide else "paper"]
    if centered is None and "centered" not in hparams:
        notes["centered"] = "absent from the file; assumed True"
    if "sr" in hparams and hparams["sr"] != base.sample_rate:
        notes["sr"] = (f"{hparams['sr']} in the file (a training-metric setting); the reference's enhancement.py runs "
                       f"the {hparams.get('backbone', 'ncsnpp')} backbone at {base.sample_rate} Hz")
    values = {
        "sample_rate": base.sample_rate,
        "n_fft": hparams.get("n_fft", base.n_fft),
        "hop_length": hparams.get("hop_length", base.hop_length),
        "compression_beta": hparams.get("spec_factor", base.compression_beta),
        "compression_alpha": hparams.get("spec_abs_exponent", base.compression_alpha),
        "theta": hparams.get("theta", base.theta),
        "sigma_min": hparams.get("sigma_min", base.sigma_min),
        "sigma_max": hparams.get("sigma_max", base.sigma_max),
        "t_eps": hparams.get("t_eps", base.t_eps),
        "steps": hparams.get("N", base.steps),
        "channel_multipliers": tuple(hparams.get("ch_mult", base.channel_multipliers)),
        "num_res_blocks": hparams.get("num_res_blocks", base.num_res_blocks),
        "attention_resolutions": tuple(hparams.get("attn_resolutions", base.attention_resolutions)),
        "base_channels": hparams.get("nf", base.base_channels),
        "centered": bool(hparams.get("centered", True) if centered is None else centered),
        "input_skip": hparams.get("progressive_input", "none" if wide else "input_skip") == "input_skip",
        "output_skip": hparams.get("progressive", "none" if wide else "output_skip") == "output_skip",
        "scale_after_output_layer": wide,
    }
    used = {"backbone", "sde", "window", "transform_type", "normalize", "network_scaling", "c_in", "c_out", "c_skip",
            "progressive", "progressive_input", "sr", "n_fft", "hop_length", "spec_factor", "spec_abs_exponent",
            "theta", "sigma_min", "sigma_max", "t_eps", "N", "ch_mult", "num_res_blocks", "attn_resolutions", "nf",
            "centered"}
    ignored = sorted(str(key) for key in hparams if key not in used)
    notes["ignored_hyper_parameters"] = ignored
    notes["unrecognised_hyper_parameters"] = [key for key in ignored if key not in TRAINING_KEYS]
    try:
        config = SGMSEConfig(**{**_field_values(base), **values})
    except (ConfigError, TypeError, ValueError) as error:
        raise CheckpointError(f"SGMSE+ checkpoint hyper-parameters are not supported: {error}") from error
    return config, notes


def _field_values(config: SGMSEConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


def reference_key_map(model: SGMSE) -> dict[str, tuple[str, bool]]:
    """Reference key (``dnn.…``) -> (our state-dict key, transpose a ``[in, out]`` matrix), in parameter order.

    The reference's parameter order (that of its state dict and of the EMA list) starts with
    ``output_layer``, registered before ``all_modules``.
    """
    paths = {id(module): name for name, module in model.named_modules()}
    mapping: dict[str, tuple[str, bool]] = {
        f"dnn.output_layer.{leaf}": (f"backbone.output_layer.{leaf}", False) for leaf in ("weight", "bias")
    }
    for index, module in enumerate(model.backbone.flat_modules()):
        prefix = paths[id(module)]
        for name in module.state_dict():
            child, _, leaf = name.rpartition(".")
            if isinstance(module, GaussianFourierEmbedding):
                reference, matrix = "W", False
            elif type(module) in _NAMES:
                matrix = isinstance(module, PositionAttention) and child != "norm" and leaf == "weight"
                nin = isinstance(module, PositionAttention) and child != "norm"
                reference = f"{_NAMES[type(module)][child]}.{_NIN[leaf] if nin else leaf}"
            else:
                reference, matrix = name, False
            mapping[f"dnn.all_modules.{index}.{reference}"] = (f"{prefix}.{name}", matrix)
    return mapping


def _to_ours(tensor: torch.Tensor, matrix: bool) -> torch.Tensor:
    return tensor.t()[:, :, None, None] if matrix else tensor  # NIN W [in, out] -> conv [out, in, 1, 1]


def _reference_shape(target: torch.Tensor, matrix: bool) -> tuple[int, ...]:
    return (target.shape[1], target.shape[0]) if matrix else tuple(target.shape)


def convert_sgmse_checkpoint(
    path: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    weights: str = "ema",
    centered: bool | None = None,
) -> SGMSE:
    """Convert the SGMSE+ Lightning checkpoint at ``path`` (and save it to ``out_path`` if given).

    Args:
        path: the official ``.ckpt`` file.
        out_path: destination ``.safetensors`` (None: only return the model).
        overwrite: replace an existing ``out_path``.
        weights: ``"ema"`` (default, the weights the reference enhances with) or ``"raw"``.
        centered: override the backbone's ``centered`` flag (None: from the file, True if absent).
    """
    if weights not in ("ema", "raw"):
        raise ConfigError(f"weights must be 'ema' or 'raw', got {weights!r}")
    package = read_lightning_checkpoint(path)
    config, notes = config_from_hyper_parameters(package["hyper_parameters"], centered)
    with torch.device("meta"):
        shapes = SGMSE(config).state_dict()
    mapping = reference_key_map_for(config)
    state = package["state_dict"]
    missing = [key for key in mapping if key not in state]
    unexpected = [str(key) for key in state if key not in mapping]
    misshaped = [key for key, (ours, matrix) in mapping.items() if key in state and isinstance(state[key], torch.Tensor)
                 and tuple(state[key].shape) != _reference_shape(shapes[ours], matrix)]
    errors = mismatch_problems(missing, unexpected, misshaped)
    if errors:
        raise CheckpointError(f"{Path(path).name} does not fit sgmse ({config.n_fft // 2 + 1} bins): " + "; ".join(errors))
    tensors = {key: state[key] for key in mapping}
    if weights == "ema":
        tensors = _ema_tensors(package, mapping, tensors)
    model = SGMSE(config)
    ours = {ours_key: _to_ours(tensors[key], matrix).to(torch.float32) for key, (ours_key, matrix) in mapping.items()}
    ema = package.get("ema") if isinstance(package.get("ema"), Mapping) else {}
    provenance = {
        "source": "sgmse", "source_file": Path(path).name, "weights": weights,
        "epoch": package.get("epoch"), "global_step": package.get("global_step"),
        "lightning_version": package.get("pytorch-lightning_version"),
        "ema_decay": ema.get("decay"), "ema_num_updates": ema.get("num_updates"), **notes,
    }
    return finish_conversion(model, ours, out_path, overwrite, _json_ready(provenance))


def reference_key_map_for(config: SGMSEConfig) -> dict[str, tuple[str, bool]]:
    """:func:`reference_key_map` of a model of ``config`` built on the meta device (no weights)."""
    with torch.device("meta"):
        return reference_key_map(SGMSE(config))


def _ema_tensors(package: Mapping[str, Any], mapping: Mapping[str, tuple[str, bool]],
                 raw: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    ema = package.get("ema")
    if not isinstance(ema, Mapping) or not isinstance(ema.get("shadow_params"), (list, tuple)):
        raise CheckpointError("the checkpoint has no EMA weights ('ema' with a 'shadow_params' list); use weights='raw'")
    unknown = sorted(str(key) for key in ema if key not in EMA_KEYS)
    if unknown:
        raise CheckpointError(f"unexpected EMA entries: {preview_keys(unknown)}")
    shadow = list(ema["shadow_params"])
    keys = list(mapping)
    if len(shadow) == len(keys) - 1:  # an EMA of the trainable parameters only: no Fourier frequencies
        keys = [key for key in keys if key != "dnn.all_modules.0.W"]
    if len(shadow) != len(keys):
        raise CheckpointError(
            f"the EMA list holds {len(shadow)} tensors, the backbone has {len(mapping)} parameters; refusing a list "
            "that does not match"
        )
    bad = [key for key, tensor in zip(keys, shadow)
           if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != tuple(raw[key].shape)]
    if bad:
        raise CheckpointError(f"the EMA list does not follow the backbone's parameter order at: {preview_keys(bad)}")
    return {**raw, **dict(zip(keys, shadow))}


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value if value is None or isinstance(value, (str, int, float, bool)) else repr(value)


__all__ = [
    "DATA_MODULE_REFERENCE",
    "SpecsDataModuleReference",
    "config_from_hyper_parameters",
    "convert_sgmse_checkpoint",
    "read_lightning_checkpoint",
    "reference_key_map",
    "reference_key_map_for",
]
