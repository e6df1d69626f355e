"""Export a training-state file (``last.pt``, ``step_*.pt``) as a speechkit checkpoint.

    python -m recipes.export_state runs/NAME/step_0001000.pt -o NAME_1000.safetensors [--raw] [--half]

The EMA weights are exported when the run keeps them (``--raw``: the optimised weights instead),
with a provenance naming the recipe, the step and the training time, so a snapshot of a running job
can be evaluated (e.g. to compare two runs at equal CPU time) without stopping it.

A run that continued from released weights (``init.checkpoint``) keeps their history in the
provenance (``recipes.training.lineage``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from speechkit.checkpoint import save_checkpoint
from speechkit.models import build_model

from recipes._cli import report
from recipes.training.lineage import training_lineage, with_lineage
from recipes.training.state import load_train_state


def export_state(state_path: Path, output: Path, raw: bool = False, storage_dtype: str | None = None) -> Path:
    """Write the weights of ``state_path`` to ``output`` (a ``.safetensors`` checkpoint).

    ``storage_dtype="float16"`` halves the file (release artifacts); loading restores float32.
    """
    state = load_train_state(state_path)
    config = state["config"]
    if isinstance(config, str):  # stored as JSON text
        config = json.loads(config)
    model_spec = config["model"]
    model = build_model(model_spec["name"], model_spec["preset"], **dict(model_spec.get("overrides") or {}))
    weights = state["model"] if raw or not state.get("ema") else state["ema"]
    model.load_state_dict(weights)
    data = config.get("data") or {}
    provenance = {
        "recipe": config.get("name"),
        "task": config.get("task"),
        "data": {"description": data.get("description", ""), "licenses": dict(data.get("licenses") or {}),
                 "train": data.get("train"), "valid": data.get("valid")},
        "model_preset": model_spec["preset"],
        "initial_weights": (config.get("init") or {}).get("checkpoint"),
        "steps_trained": int(state["step"]),
        "train_hours": round(float(state.get("train_seconds", 0.0)) / 3600.0, 4),
        "weights": "optimised" if raw or not state.get("ema") else "ema",
        "exported_from": state_path.name,
    }
    provenance = with_lineage(provenance, training_lineage(provenance["initial_weights"]))
    return save_checkpoint(model, output, provenance=provenance, overwrite=True, storage_dtype=storage_dtype)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("state", type=Path, help="a trainer state file (last.pt or step_*.pt)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the .safetensors checkpoint to write")
    parser.add_argument("--raw", action="store_true", help="export the optimised weights, not the EMA")
    parser.add_argument("--half", action="store_true", help="store the weights as float16 (half the file size)")
    args = parser.parse_args(argv)
    storage_dtype = "float16" if args.half else None
    return report("export_state", lambda: f"wrote {export_state(args.state, args.output, args.raw, storage_dtype)}")


if __name__ == "__main__":
    sys.exit(main())
