"""torchrun + DistributedDataParallel (gloo, 2 CPU processes) matches one process with the same global batch,
with and without gradient accumulation."""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recipes.trainer import load_config, load_train_state, run_training

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "configs" / "smoke_synthetic.yaml"
TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists() and shutil.which("torchrun") is None, reason="torchrun is not installed")
@pytest.mark.parametrize("accumulate_steps", [1, 2])  # 2: each rank's 2 items in 2 micro-batches (no_sync)
def test_two_process_ddp_matches_single_process(tmp_path: Path, accumulate_steps: int) -> None:
    overrides = ["max_steps=5", "valid_every=5", "checkpoint_every=5", "batch_size=4", "num_threads=1"]
    launcher = str(TORCHRUN) if TORCHRUN.exists() else "torchrun"
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [launcher, "--standalone", "--nproc_per_node", "2", "-m", "recipes.train", str(CONFIG),
               *overrides, f"accumulate_steps={accumulate_steps}", f"run_dir={tmp_path / 'ddp'}"]
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)
    if result.returncode != 0 and "terminate called without an active exception" in result.stderr:
        # seen once in 10+ runs (2026-12-01, clean clone, full suite): a rank aborted inside gloo's
        # teardown; the trainer now meets at a barrier before destroying the group. One fresh retry
        # keeps that rare teardown race from failing CI; any other failure fails at once.
        shutil.rmtree(tmp_path / "ddp", ignore_errors=True)
        result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]

    single = load_config(CONFIG, [*overrides, f"run_dir={tmp_path / 'single'}"])
    assert run_training(single) == "done"

    distributed_state = load_train_state(tmp_path / "ddp" / "last.pt")
    single_state = load_train_state(tmp_path / "single" / "last.pt")
    assert distributed_state["step"] == single_state["step"] == 5
    for key, expected in single_state["model"].items():
        torch.testing.assert_close(distributed_state["model"][key], expected, rtol=0, atol=1e-5)
    for key, expected in single_state["ema"].items():
        torch.testing.assert_close(distributed_state["ema"][key], expected, rtol=0, atol=1e-5)

    def last_validation(run: str) -> dict[str, str]:
        with (tmp_path / run / "valid_log.csv").open() as handle:
            return list(csv.DictReader(handle))[-1]

    assert float(last_validation("ddp")["si_sdri"]) == pytest.approx(float(last_validation("single")["si_sdri"]), abs=1e-3)
    from speechkit.checkpoint import read_metadata

    provenance = read_metadata(tmp_path / "ddp" / "best.safetensors")["provenance"]
    assert provenance["hardware"]["processes"] == 2
    assert provenance["command"].startswith("torchrun --nproc_per_node 2")
