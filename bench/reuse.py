"""Rows of an earlier benchmark report that can be copied instead of scored again (``--reuse``).

A row is copied only when everything its scores depend on is unchanged: the benchmark says what
that is (its *fingerprint*: the test sets' item lists, limits, metrics, options), and for a model
the SHA-256 of its weights file is part of it, so a continued training run that writes new weights
to the same path is always scored again. A copied row keeps the date of the report it first came
from (``reused_from``) and that run's timing figures.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_file(model: str) -> Path:
    """The weights file of a bundled name or checkpoint path (``NAME#options`` allowed)."""
    from speechkit.pretrained import resolve_model

    return Path(resolve_model(model.partition("#")[0]))


def model_facts(model: str) -> dict[str, Any]:
    """What a model row depends on besides the benchmark's inputs: its weights file's SHA-256 and options."""
    return {"weights_sha256": file_sha256(weights_file(model)), "options": model.partition("#")[2]}


def provenance_of(model: str) -> dict[str, Any]:
    """The training provenance stored in a model's weights file."""
    from speechkit.checkpoint import read_metadata

    return read_metadata(weights_file(model)).get("provenance") or {}


def reused_or_scored_model(model: str, facts: dict[str, Any], earlier: Sequence[dict[str, Any]],
                           score: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """:func:`reused_or_scored` for a model row: a copied row's training facts (steps, hours) are read
    again from its weights file, as this version reads them (the weights are the same, by the SHA-256)."""
    from bench.peers.report import training_facts

    system = reused_or_scored(model, facts, earlier, score)
    if "reused_from" in system:
        system = {**system, **training_facts(provenance_of(model))}
    return system


def reusable_systems(previous: Path | Sequence[Path] | None) -> list[dict[str, Any]]:
    """The systems of earlier reports (one path or several), each tagged with its report's date; none without one."""
    if previous is None:
        return []
    systems = []
    for path in [previous] if isinstance(previous, Path) else previous:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
        systems += [{**system, "reused_from": system.get("reused_from", report["date"])} for system in report["systems"]]
    return systems


def reused_or_scored(name: str, facts: dict[str, Any], earlier: Sequence[dict[str, Any]],
                     score: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The earlier system called ``name`` with the same ``facts`` (its ``fingerprint``), else
    ``score()`` tagged with ``facts``."""
    for system in earlier:
        if system["model"] == name and system.get("fingerprint") == facts:
            return system
    return {**score(), "fingerprint": facts}


def reuse_note(system: dict[str, Any], inputs: str) -> str:
    """The report note of a copied row (``inputs``: what was checked unchanged, e.g. "test set and weights")."""
    return (f"{system['model']}: copied from the report of {system['reused_from']} (same {inputs}); "
            "its RTF and CPU figures are that run's.")
