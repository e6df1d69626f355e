"""Recipe configs: defaults, YAML/JSON reading with ``base`` inheritance, ``key.sub=value`` overrides."""
from __future__ import annotations

import copy
import importlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from speechkit.errors import ConfigError
from speechkit.tasks import Task

#: every config key with its default; nested dicts are merged key by key
DEFAULT_CONFIG: Mapping[str, Any] = {
    "name": "run",
    "task": "enhancement",  # enhancement | dereverberation | multichannel_enhancement | separation | aec
    "run_dir": None,  # default runs/<name>
    "seed": 0,
    "num_threads": 2,  # torch.set_num_threads per process
    "device": "auto",  # auto | cpu | cuda
    "model": {"name": None, "preset": "tiny", "overrides": {}},
    "data": {
        "train": None,  # {"factory": "module:callable", "kwargs": {...}} -> map-style Dataset
        "valid": None,  # same; a fixed set (batch size 1, any length)
        "num_workers": 0,
        "description": "",  # free text stored in the exported provenance
        "licenses": {},  # corpus -> licence of the training data, stored in the provenance (speechkit info shows it)
    },
    # the training objective by name with its keyword arguments, e.g. {name: si_sdr} or
    # {name: combination, terms: [{name: snr}, {name: multi_resolution_stft, weight: 2.0}]}
    # (see recipes/training/objectives.py); null: derived from the task and the `loss` keys below
    "objective": None,
    # legacy objective keys (used when `objective` is null): enhancement -SI-SDR + snr_weight * -SNR
    # + stft_weight * multi-resolution STFT; separation PIT -SI-SDR; aec echo_aware_loss
    "loss": {"snr_weight": 0.0, "echo_weight": 0.0, "aec_floor_db": 50.0, "stft_weight": 0.0},
    # start from the weights of a speechkit checkpoint (path or bundled name); --resume wins
    "init": {"checkpoint": None},
    # name: adam | adamw
    "optim": {"name": "adam", "lr": 1e-3, "betas": [0.9, 0.999], "weight_decay": 0.0, "clip_grad_norm": 5.0},
    "schedule": {
        "name": "plateau",  # plateau (warm-up, optional cosine, plateau halving) | cosine | constant
        "warmup_steps": 0,  # linear warm-up from 0
        "cosine": False,  # cosine decay from the end of warm-up to max_steps (always on for name: cosine)
        "min_lr_ratio": 0.0,  # cosine floor as a fraction of lr
        "plateau_factor": 0.5,  # multiply the lr by this when validation stalls (1.0 disables)
        "plateau_patience": 3,  # validations without improvement before reducing
        "plateau_threshold": 0.0,  # an improvement must beat the best by more than this (score units, e.g. dB)
        "min_lr": 1e-6,
    },
    # decay: e.g. 0.999; validation and export then use the EMA weights. warmup: ramp the decay as
    # min(decay, (1 + step) / (10 + step)) so that early validations do not score the initialisation
    "ema": {"decay": None, "warmup": False},
    # end training once validation has flattened: `patience` validations in a row that do not raise the
    # best model-selection score by more than `min_delta` (dB for SI-SDR-type scores); null: max_steps only
    "early_stop": {"patience": None, "min_delta": 0.0},
    "batch_size": 4,  # global batch over all processes, per optimiser step
    "accumulate_steps": 1,  # micro-batches per optimiser step (each process splits its share of the batch)
    "precision": "fp32",  # fp32 | bf16 (autocast, CPU or CUDA) | fp16 (CUDA autocast + GradScaler)
    "activation_checkpointing": False,  # recompute model.checkpoint_modules() (or top-level children) in backward
    "max_steps": 1000,
    "max_epochs": None,
    "valid_every": 200,  # steps between validations (also run at the end)
    # metrics: list (null: the task's default); select: the model-selection metric (null: si_sdri; loss for aec);
    # subset: validate on this many items of the set, drawn with `seed` (null: all); seed: the RNG
    # seed of every validation item, so a sampling model scores repeatably (null: 0). Nulls take the
    # model's `validation_defaults` first (see recipes/training/validation.py)
    "validation": {"metrics": None, "select": None, "subset": None, "seed": None},
    "checkpoint_every": 100,  # steps between full-state checkpoints (also at the end and on signal)
    "keep_checkpoints": 2,
    "log_every": 10,
    "ddp_find_unused_parameters": True,  # e.g. Conv-TasNet's last residual head feeds no output
    "progress": True,  # tqdm bar on rank 0
    "tensorboard": False,  # also log to TensorBoard when the package is installed
    "export": {"path": "best.safetensors"},
}

#: values of the ``precision`` key
PRECISIONS = ("fp32", "bf16", "fp16")


def merge_config(defaults: Mapping[str, Any], values: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """``values`` on top of ``defaults``, recursively; unknown keys raise :class:`ConfigError`.

    Keys whose default is ``None`` or a dict named ``kwargs``/``overrides`` accept any content.
    """
    merged = copy.deepcopy(dict(defaults))
    for key, value in values.items():
        if key not in defaults:
            raise ConfigError(f"unknown config key {where + key!r} (known: {', '.join(sorted(defaults))})")
        default = defaults[key]
        if isinstance(default, Mapping) and default and isinstance(value, Mapping) and key not in (
            "overrides",
            "kwargs",
        ):
            merged[key] = merge_config(default, value, where=f"{where}{key}.")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=5e-4"`` -> ``(["optim", "lr"], 0.0005)``; the value is parsed as JSON, else YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)  # numbers like 5e-4 (a string in YAML 1.1), true, null, [1, 2]
    except json.JSONDecodeError:
        try:
            import yaml

            value = yaml.safe_load(raw)
        except ImportError:
            value = raw
    return key.strip().split("."), value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``key.sub=value`` of ``overrides`` in a copy of ``values``."""
    result = copy.deepcopy(values)
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r} goes through a non-mapping key {part!r}")
        node[path[-1]] = value
    return result


def _same_name(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """False only when both mappings carry a ``name`` and the names differ."""
    return "name" not in old or "name" not in new or old["name"] == new["name"]


def update_nested(base: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` on top of ``base``, merging mappings at every depth (lists and scalars are replaced).

    A mapping whose ``name`` differs from the base mapping's replaces it whole: another objective,
    model or optimiser takes none of the old one's keywords.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in values.items():
        old = merged.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping) and _same_name(old, value):
            merged[key] = update_nested(old, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_config_values(path: str | os.PathLike, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a YAML or JSON config; ``base: other.yaml`` (relative to the file) is read
    first and the file's own keys are merged on top of it, at every depth."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.resolve() in _chain:
        raise ConfigError(f"config {path} inherits from itself through 'base'")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        from speechkit._optional import require

        yaml = require("yaml", "train", "YAML recipe configs")
        values = yaml.safe_load(text) or {}
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    base = values.pop("base", None)
    if base is not None:
        base_values = read_config_values(path.parent / str(base), _chain + (path.resolve(),))
        values = update_nested(base_values, values)
    return values


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a YAML or JSON recipe config (with its ``base`` chain), apply ``key.sub=value`` overrides,
    fill the defaults."""
    values = apply_overrides(read_config_values(path), overrides or [])
    config = merge_config(DEFAULT_CONFIG, values)
    if config["run_dir"] is None:
        config["run_dir"] = str(Path("runs") / config["name"])
    validate_config(config)
    return config


def validate_config(config: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` for a config that cannot train."""
    from recipes.training.objectives import objective_from_config
    from recipes.training.schedule import OPTIMIZERS, SCHEDULES

    if not config["model"]["name"]:
        raise ConfigError("the config must name a model (model.name)")
    Task.parse(config["task"])  # one vocabulary: speechkit.tasks.Task (strings compare equal to it)
    for split in ("train", "valid"):
        spec = config["data"][split]
        if not isinstance(spec, Mapping) or "factory" not in spec:
            raise ConfigError(f"data.{split} must be a mapping with a 'factory' (module:callable)")
    if int(config["batch_size"]) < 1 or int(config["max_steps"]) < 1:
        raise ConfigError("batch_size and max_steps must be positive")
    if int(config["accumulate_steps"]) < 1:
        raise ConfigError("accumulate_steps must be positive")
    if float(config["schedule"]["plateau_threshold"]) < 0.0:
        raise ConfigError(f"schedule.plateau_threshold must be >= 0, not {config['schedule']['plateau_threshold']}")
    patience = config["early_stop"]["patience"]
    if patience is not None and int(patience) < 1:
        raise ConfigError(f"early_stop.patience must be a positive number of validations or null, not {patience}")
    if float(config["early_stop"]["min_delta"]) < 0.0:
        raise ConfigError(f"early_stop.min_delta must be >= 0, not {config['early_stop']['min_delta']}")
    if config["ema"]["decay"] is not None and not 0.0 < float(config["ema"]["decay"]) < 1.0:
        raise ConfigError("ema.decay must be between 0 and 1 (or null)")
    if config["precision"] not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, not {config['precision']!r}")
    if str(config["optim"]["name"]).lower() not in OPTIMIZERS:
        raise ConfigError(f"optim.name must be one of {', '.join(OPTIMIZERS)}, not {config['optim']['name']!r}")
    if config["schedule"]["name"] not in SCHEDULES:
        raise ConfigError(f"schedule.name must be one of {', '.join(SCHEDULES)}, not {config['schedule']['name']!r}")
    objective_from_config(config)  # an unknown objective or keyword fails here, before any data is read


def resolve_factory(spec: Mapping[str, Any]) -> Any:
    """Call ``spec["factory"]`` (``"package.module:callable"``) with ``spec["kwargs"]``."""
    target = str(spec["factory"])
    if ":" not in target:
        raise ConfigError(f"factory {target!r} must look like 'package.module:callable'")
    module_name, attribute = target.split(":", 1)
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"cannot import factory {target!r} ({error})") from error
    return factory(**dict(spec.get("kwargs") or {}))
