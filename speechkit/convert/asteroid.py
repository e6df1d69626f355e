"""Import asteroid Conv-TasNet checkpoints (Zenodo ``.pth`` or Hugging Face ``pytorch_model.bin``).

An asteroid checkpoint is a ``torch.save``-d dict ``{"model_name": "ConvTasNet", "state_dict":
{...}, "model_args": {...}, "infos": {...}}``. It is read with ``torch.load(weights_only=True)``
(no arbitrary unpickling), its ``model_args`` become a :class:`ConvTasNetConfig` and its tensors
are renamed onto :class:`ConvTasNet`, whose keys mirror asteroid's. Every source tensor must be
consumed; leftovers are an error.

Norm names differ: asteroid ``"gLN"`` -> ``"gLN"``; asteroid ``"cLN"`` (a per-frame channel norm)
-> ``"chanLN"``; asteroid ``"cgLN"`` (the paper's cumulative norm) -> ``"cLN"``.

Framing: asteroid frames the raw signal with no padding (``Conv1d(1, N, L, stride, bias=False)``)
and pads or crops the decoder output to the input length (``pad_x_to_y``); speechkit's own
framing pads ``L - stride`` zeros on the left and covers the tail (see
:mod:`speechkit.frontend.framing`), which adds a frame at each edge. Those frames change more than
the edge samples: every cumulative or global norm statistic and every TCN receptive field that
reaches them differs, so with the causal framing the outputs differ from asteroid's for about
0.1-0.4 s at both ends. Converted models therefore use ``framing="asteroid"`` (the default here),
which reproduces asteroid's output to float precision but runs offline only (in chunks);
``framing="causal"`` keeps speechkit's framing so a causal model streams, at the cost of those
edge differences.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from ..checkpoint import key_mismatches, mismatch_problems
from ..errors import CheckpointError, ConfigError
from ..frontend.framing import check_framing
from ..models.conv_tasnet import MASK_ACTIVATIONS, ConvTasNet, ConvTasNetConfig
from .common import finish_conversion, load_weights_only

#: asteroid norm_type -> speechkit norm_type
ASTEROID_NORMS: Mapping[str, str] = MappingProxyType({"gLN": "gLN", "cLN": "chanLN", "cgLN": "cLN"})

#: asteroid fb_name values (case-insensitive) meaning the free learned filterbank
FREE_FILTERBANK_NAMES = ("free", "freefb")


def _weights_only_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` that also accepts :class:`torch.torch_version.TorchVersion`.

    asteroid's ``serialize()`` stores ``torch.__version__`` in ``infos["software_versions"]``; since
    torch 1.10 that is a ``TorchVersion`` (a ``str`` subclass), which the weights-only unpickler
    refuses by default. Exactly that class is allowed, only for this load (torch >= 2.5 has the
    scoped ``safe_globals``; older versions load without it).
    """
    from torch.torch_version import TorchVersion

    allow = getattr(torch.serialization, "safe_globals", None)
    if allow is None:
        return torch.load(path, map_location="cpu", weights_only=True)
    with allow([TorchVersion]):
        return torch.load(path, map_location="cpu", weights_only=True)


def read_asteroid_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load an asteroid checkpoint dict safely (``weights_only=True``) and check its layout."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"asteroid checkpoint {path} does not exist")
    package = load_weights_only(path, _weights_only_load)
    if not isinstance(package, dict) or "state_dict" not in package or "model_args" not in package:
        raise CheckpointError(
            f"{path} is not an asteroid model file (expected a dict with 'state_dict' and 'model_args')"
        )
    model_name = package.get("model_name", "ConvTasNet")
    if model_name != "ConvTasNet":
        raise CheckpointError(f"{path} holds an asteroid {model_name!r}, only 'ConvTasNet' converts to conv_tasnet")
    if not isinstance(package["state_dict"], dict) or not isinstance(package["model_args"], dict):
        raise CheckpointError(f"{path}: 'state_dict' and 'model_args' must both be dicts")
    return package


def asteroid_config(
    model_args: dict[str, Any], source: str = "checkpoint", framing: str = "asteroid"
) -> ConvTasNetConfig:
    """Translate asteroid ``model_args`` into a :class:`ConvTasNetConfig` (norm names mapped).

    ``framing="asteroid"`` reproduces asteroid's output exactly (offline only); ``"causal"`` lets a
    causal model stream (outputs then differ near the edges, see the module docstring).
    """
    fb_name = str(model_args.get("fb_name", "free"))
    if fb_name.lower() not in FREE_FILTERBANK_NAMES:
        raise CheckpointError(
            f"{source}: asteroid filterbank {fb_name!r} is not supported; only the free learned filterbank converts"
        )
    if model_args.get("encoder_activation") not in (None, "linear"):
        raise CheckpointError(
            f"{source}: encoder_activation {model_args['encoder_activation']!r} is not supported (only none/linear)"
        )
    if model_args.get("is_pinv"):
        raise CheckpointError(f"{source}: pseudo-inverse filterbanks are not supported")
    mask_act = str(model_args.get("mask_act", "sigmoid"))
    if mask_act not in MASK_ACTIVATIONS:
        raise CheckpointError(
            f"{source}: mask_act {mask_act!r} is not supported (supported: {', '.join(MASK_ACTIVATIONS)})"
        )
    norm_type = str(model_args.get("norm_type", "gLN"))
    if norm_type not in ASTEROID_NORMS:
        raise CheckpointError(
            f"{source}: asteroid norm_type {norm_type!r} is not supported (supported: {', '.join(ASTEROID_NORMS)})"
        )
    n_filters = int(model_args["n_filters"]) if "n_filters" in model_args else 512
    for key in ("in_chan", "out_chan"):
        if model_args.get(key) not in (None, n_filters):
            raise CheckpointError(f"{source}: {key}={model_args[key]} differs from n_filters={n_filters}")
    kernel_size = int(model_args.get("kernel_size", 16))
    stride = model_args.get("stride")
    skip_chan = model_args.get("skip_chan", 128)
    try:
        return ConvTasNetConfig(
            n_filters=n_filters,
            kernel_size=kernel_size,
            stride=int(stride) if stride else kernel_size // 2,
            bn_chan=int(model_args.get("bn_chan", 128)),
            hid_chan=int(model_args.get("hid_chan", 512)),
            skip_chan=int(skip_chan) if skip_chan else 0,
            conv_kernel_size=int(model_args.get("conv_kernel_size", 3)),
            n_blocks=int(model_args.get("n_blocks", 8)),
            n_repeats=int(model_args.get("n_repeats", 3)),
            n_src=int(model_args["n_src"]),
            mask_act=mask_act,
            norm_type=ASTEROID_NORMS[norm_type],
            causal=bool(model_args.get("causal", False)),
            sample_rate=int(round(float(model_args.get("sample_rate", 8000)))),
            framing=check_framing(framing),
        )
    except KeyError as error:
        raise CheckpointError(f"{source}: model_args lacks {error.args[0]!r}") from error
    except ConfigError as error:
        raise CheckpointError(f"{source}: unsupported asteroid configuration ({error})") from error


def asteroid_key_to_speechkit(key: str) -> str:
    """Map one asteroid state-dict key to ours (only the causal depthwise conv is renamed)."""
    parts = key.split(".")
    # masker.TCN.{i}.shared_block.3.0.{weight,bias}: the causal build wraps the conv with a chop
    if len(parts) == 7 and parts[:2] == ["masker", "TCN"] and parts[3:6] == ["shared_block", "3", "0"]:
        return ".".join([*parts[:5], parts[6]])
    return key


def convert_asteroid_state_dict(
    state_dict: dict[str, torch.Tensor], model: ConvTasNet, source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Rename asteroid tensors onto ``model``; fail listing unconsumed, missing or mis-shaped keys."""
    expected = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    leftovers = []
    for key, tensor in state_dict.items():
        target = asteroid_key_to_speechkit(key)
        if target in expected and target not in converted and isinstance(tensor, torch.Tensor):
            converted[target] = tensor.detach().to(torch.float32)
        else:
            leftovers.append(key)
    missing, _, mis_shaped = key_mismatches(converted, expected)  # converted holds only expected keys
    problems = mismatch_problems(missing, leftovers, mis_shaped, unexpected_label="unconsumed")
    if problems:
        raise CheckpointError(f"{source} does not match its model_args: " + "; ".join(problems))
    return converted


def _json_safe(value: Any) -> Any:
    """Drop what JSON cannot hold (tensors, objects) from the ``infos`` dict, keeping text and numbers."""
    return json.loads(json.dumps(value, default=lambda item: str(item)[:200]))


def convert_asteroid_checkpoint(
    path: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    framing: str = "asteroid",
) -> ConvTasNet:
    """Build a :class:`ConvTasNet` from an asteroid checkpoint, optionally saving it as ours.

    Args:
        path: asteroid ``.pth`` (Zenodo) or Hugging Face ``pytorch_model.bin`` with the same layout.
        out_path: if given, write a speechkit ``.safetensors`` checkpoint there with provenance.
        overwrite: replace an existing ``out_path``.
        framing: ``"asteroid"`` (default: asteroid's output to float precision, offline only) or
            ``"causal"`` (speechkit's framing: causal models stream; outputs differ near the edges).

    Returns:
        The converted model, in eval mode.
    """
    package = read_asteroid_checkpoint(path)
    source = str(path)
    model_args = package["model_args"]
    config = asteroid_config(model_args, source, framing)
    model = ConvTasNet(config)
    state = convert_asteroid_state_dict(package["state_dict"], model, source)
    provenance = {
        "converted_from": "asteroid",
        "source_file": Path(path).name,
        "asteroid_model_name": package.get("model_name", "ConvTasNet"),
        "asteroid_model_args": _json_safe(model_args),
        "asteroid_infos": _json_safe(package.get("infos", {})),
        "note": "framing='asteroid' reproduces asteroid's output (offline only)" if config.framing == "asteroid"
        else "causal framing: streams, but differs from asteroid for about 0.1-0.4 s at both ends",
    }
    return finish_conversion(model, state, out_path, overwrite, provenance)
