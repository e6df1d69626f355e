"""bench/run_all.py (``make bench``): every listed benchmark exists, takes its quick arguments, and runs."""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

from bench import run_all

ROOT = Path(__file__).resolve().parents[1]


def test_make_bench_calls_an_existing_module() -> None:
    target = re.search(r"^bench:.*\n\t(.+)$", (ROOT / "Makefile").read_text(encoding="utf-8"), re.MULTILINE)
    assert target is not None and "-m bench.run_all" in target.group(1)
    result = subprocess.run([sys.executable, "-m", "bench.run_all", "--help"], capture_output=True, text=True,
                            cwd=ROOT, check=True)
    assert "--full" in result.stdout and "--only" in result.stdout


def test_every_benchmark_module_exists_and_accepts_its_quick_arguments(tmp_path: Path) -> None:
    for benchmark in run_all.BENCHMARKS:
        module = f"bench.{benchmark.name}"
        assert importlib.util.find_spec(module) is not None, module
        source = (ROOT / "bench" / f"{benchmark.name}.py").read_text(encoding="utf-8")
        for option in (argument for argument in benchmark.quick if argument.startswith("--")):
            assert f'"{option}"' in source, f"{module} has no option {option}"
        line = " ".join(run_all.command(benchmark, False, tmp_path))
        assert "{out}" not in line and "bench/results" not in line  # quick runs never overwrite committed results
        assert f"{tmp_path}/" in line


def test_quick_run_writes_under_the_quick_folder(tmp_path: Path, capsys) -> None:
    assert run_all.main(["--only", "aec_train_step", "--out-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "aec_train_step.json").read_text(encoding="utf-8"))
    assert report["preset"] == "tiny" and report["median_step_seconds"] > 0
    assert "| aec_train_step | ok |" in capsys.readouterr().out
