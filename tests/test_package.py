"""Package-level rules: light imports and one-way dependencies."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY_OPTIONAL = ("onnxruntime", "onnx", "pesq", "pystoi", "matplotlib", "sounddevice", "librosa", "speechmos")


def test_import_speechkit_is_light() -> None:
    code = (
        "import sys, speechkit, speechkit.api, speechkit.models, speechkit.checkpoint; "
        f"print(','.join(m for m in {HEAVY_OPTIONAL!r} + ('realtime', 'recipes', 'bench') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == ""


def test_speechkit_never_imports_recipes_realtime_or_bench() -> None:
    pattern = re.compile(r"^\s*(from|import)\s+(recipes|realtime|bench)\b", re.MULTILINE)
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "speechkit").rglob("*.py")
        if pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_library_code_does_not_print_or_exit() -> None:
    pattern = re.compile(r"^\s*(print\(|exit\(|sys\.exit\()", re.MULTILINE)
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "speechkit").rglob("*.py")
        if "cli" not in path.parts and pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
