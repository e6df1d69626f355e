"""The training history of weights that continue earlier training (``init.checkpoint``).

CPU training here spans several machines: a run ends with its machine, its best weights are
released (``recipes.release``), and the next run starts from them. The provenance of every export
keeps the account: ``lineage`` lists the earlier stages (oldest first) and ``total_steps`` /
``total_train_hours`` add them to the current one.
"""
from __future__ import annotations

from typing import Any

from speechkit.checkpoint import read_metadata
from speechkit.pretrained import resolve_model


def training_lineage(initial_weights: str | None) -> list[dict[str, Any]]:
    """The training stages behind ``initial_weights`` (oldest first); empty for a run from scratch.

    Each stage is ``{"recipe", "steps_trained", "train_hours"}`` from the checkpoint's provenance,
    after the stages it recorded itself. A checkpoint without training provenance (a bundled or
    converted model) is one stage whose steps and hours are unknown (``None``).
    """
    if not initial_weights:
        return []
    provenance = read_metadata(resolve_model(initial_weights)).get("provenance") or {}
    stage = {"recipe": provenance.get("recipe", str(initial_weights)),
             "steps_trained": provenance.get("steps_trained"),
             "train_hours": provenance.get("train_hours")}
    return [*list(provenance.get("lineage") or []), stage]


def stage_total(stages: list[dict[str, Any]], key: str) -> float | None:
    """The sum of ``key`` over ``stages``, or None when a stage does not know it."""
    values = [stage.get(key) for stage in stages]
    return None if any(value is None for value in values) else sum(values)


def with_lineage(provenance: dict[str, Any], lineage: list[dict[str, Any]]) -> dict[str, Any]:
    """``provenance`` plus ``lineage`` (from :func:`training_lineage` of its initial weights),
    ``total_steps`` and ``total_train_hours`` (unchanged for a run from scratch)."""
    if not lineage:
        return provenance
    stages = [*lineage, provenance]
    hours = stage_total(stages, "train_hours")
    return {**provenance, "lineage": lineage, "total_steps": stage_total(stages, "steps_trained"),
            "total_train_hours": None if hours is None else round(hours, 4)}
