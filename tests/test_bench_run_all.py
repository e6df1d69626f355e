"""bench/run_all.py (``make bench``): every listed benchmark exists, takes its quick arguments, and runs."""
from __future__ import annotations

import importlib.util
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


def test_quick_run_writes_under_the_quick_folder_and_reports_failures(tmp_path: Path, capsys, monkeypatch) -> None:
    """The runner's own logic, with the benchmark subprocess replaced (benchmarks are not run in tests)."""
    launched: list[list[str]] = []

    def fake_run(line, cwd):  # noqa: ANN001 - subprocess.run's signature
        launched.append(list(line))
        return subprocess.CompletedProcess(line, 0 if len(launched) == 1 else 3)

    monkeypatch.setattr(run_all.subprocess, "run", fake_run)
    assert run_all.main(["--only", "aec_train_step", "long_file", "--out-dir", str(tmp_path)]) == 1
    assert [line[2] for line in launched] == ["bench.long_file", "bench.aec_train_step"]
    assert all(any(argument.startswith(str(tmp_path)) for argument in line) for line in launched)
    table = capsys.readouterr().out
    assert "| long_file | ok |" in table and "| aec_train_step | FAILED |" in table and "exit code 3" in table
