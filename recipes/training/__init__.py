"""The shared training loop of every speechkit recipe, split by concern.

* :mod:`~recipes.training.config` defaults, reading (``base:`` chains), overrides, validation;
* :mod:`~recipes.training.objectives` training objectives by name (and the legacy ``loss:`` keys);
* :mod:`~recipes.training.schedule` optimiser by name, LR controller, weight EMA;
* :mod:`~recipes.training.step` the loss module DDP wraps, mixed precision, micro-batches,
  activation checkpointing;
* :mod:`~recipes.training.validation` metrics, subset, seed and the selection score;
* :mod:`~recipes.training.state` atomic saves, the train-state file, RNG states;
* :mod:`~recipes.training.distributed` ``torchrun`` process group and device;
* :mod:`~recipes.training.data` synthetic smoke data, the resumable sampler;
* :mod:`~recipes.training.runlog` CSV/TensorBoard logs;
* :mod:`~recipes.training.loop` :class:`Trainer` and :func:`run_training`.

:mod:`recipes.trainer` re-exports the public names (the module documents the run directory).
"""
from recipes.training.config import (
    DEFAULT_CONFIG,
    PRECISIONS,
    apply_overrides,
    load_config,
    merge_config,
    parse_override,
    read_config_values,
    resolve_factory,
    update_nested,
    validate_config,
)
from recipes.training.data import ResumableDistributedSampler, SyntheticMixtures, ignore_interrupts
from recipes.training.distributed import DistributedContext, setup_distributed
from recipes.training.loop import Trainer, run_training
from recipes.training.objectives import (
    OBJECTIVES,
    Objective,
    build_objective,
    echo_aware_loss,
    legacy_objective_spec,
    objective_from_config,
    training_loss,
)
from recipes.training.schedule import (
    OPTIMIZERS,
    SCHEDULES,
    ExponentialMovingAverage,
    LearningRateController,
    build_optimizer,
)
from recipes.training.state import STATE_FORMAT, atomic_torch_save, load_train_state, rng_state, set_rng_state
from recipes.training.validation import ValidationSpec, validation_scores, validation_spec

__all__ = [
    "DEFAULT_CONFIG",
    "OBJECTIVES",
    "OPTIMIZERS",
    "PRECISIONS",
    "SCHEDULES",
    "STATE_FORMAT",
    "DistributedContext",
    "ExponentialMovingAverage",
    "LearningRateController",
    "Objective",
    "ResumableDistributedSampler",
    "SyntheticMixtures",
    "Trainer",
    "ValidationSpec",
    "apply_overrides",
    "atomic_torch_save",
    "build_objective",
    "build_optimizer",
    "echo_aware_loss",
    "ignore_interrupts",
    "legacy_objective_spec",
    "load_config",
    "load_train_state",
    "merge_config",
    "objective_from_config",
    "parse_override",
    "read_config_values",
    "resolve_factory",
    "rng_state",
    "run_training",
    "set_rng_state",
    "setup_distributed",
    "training_loss",
    "update_nested",
    "validate_config",
    "validation_scores",
    "validation_spec",
]
