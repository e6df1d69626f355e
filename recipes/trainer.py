"""The one shared training loop of every speechkit recipe (re-exported from :mod:`recipes.training`).

A recipe is a config file (YAML or JSON) naming the model, the data factories, the optimiser and the
schedule (``base: other.yaml`` inherits another config and changes only what differs, merged at every
depth); :func:`run_training` does the rest, single-process or under ``torchrun`` with
DistributedDataParallel (gloo on CPU, NCCL on CUDA)::

    python -m recipes.train recipes/configs/enhance_causal_16k.yaml           # one process
    torchrun --nproc_per_node 2 -m recipes.train recipes/configs/...yaml      # DDP
    python -m recipes.train CONFIG --resume                                   # continue a run

Batches are ``{"mixture": [B, C, T], "targets": [B, S, C, T], ...}``. ``batch_size`` is the
GLOBAL batch: each of the ``world_size`` processes takes ``batch_size / world_size`` items of the
same deterministic shuffle, so a DDP run follows the same trajectory as one process with the same
global batch (up to floating-point summation order).

Run directory (``run_dir``, gitignored under ``runs/``)::

    config.json          resolved config
    last.pt              full training state (model, optimiser, LR controller, EMA, step, RNG, best)
    step_000100.pt ...   the last ``keep_checkpoints`` periodic states
    best_model.pt        weights (EMA if enabled) of the best validation score (validation.select)
    best.safetensors     the best model in speechkit's checkpoint format, with provenance
    train_log.csv        step, epoch, loss, grad norm, lr, seconds
    valid_log.csv        step, validation metrics (default SI-SDR, SI-SDRi, mixture SI-SDR), loss, lr
    earlier/<UTC time>/  an earlier run's files, moved there when a run starts at step 0 (no ``--resume``,
                         e.g. a new stage from ``init.checkpoint``) in a folder that holds them

All ``.pt`` files hold only tensors and plain Python values and are loaded with
``torch.load(weights_only=True)``.

The objective (``objective: {name, ...}`` or the legacy ``loss:`` keys), optimiser and schedule by
name, ``accumulate_steps``, ``precision``, ``activation_checkpointing`` and ``validation`` are
described in :mod:`recipes.training` and DEVELOPING.md ("Training").
"""
from recipes.training import *  # noqa: F403 (the public API of the package, unchanged names)
from recipes.training import __all__  # noqa: F401
