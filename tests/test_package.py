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


def test_atomic_outputs_get_normal_file_permissions(tmp_path) -> None:
    import os
    import stat

    import numpy as np

    from speechkit._files import publish, temporary_sibling
    from speechkit.audio import write_audio

    previous = os.umask(0o022)
    try:
        name = temporary_sibling(tmp_path / "out.wav")
        publish(name, tmp_path / "out.wav")
        assert stat.S_IMODE(os.stat(tmp_path / "out.wav").st_mode) == 0o644
        import importlib.util

        if importlib.util.find_spec("matplotlib") is not None:  # the plot extra (in dev)
            from speechkit.plot import write_spectrogram_figure

            png = write_spectrogram_figure(tmp_path / "spec.png", [np.zeros(1600, np.float32)], 16000, ["noisy"])
            assert stat.S_IMODE(os.stat(png).st_mode) == 0o644
        wav = tmp_path / "audio.wav"
        write_audio(wav, np.zeros((1, 160), np.float32), 16000)
        assert stat.S_IMODE(os.stat(wav).st_mode) == 0o644
        from speechkit.checkpoint import save_checkpoint
        from speechkit.models import build_model

        checkpoint = save_checkpoint(build_model("conv_tasnet", "tiny"), tmp_path / "tiny.safetensors")
        assert stat.S_IMODE(os.stat(checkpoint).st_mode) == 0o644  # safetensors itself writes 0o600
    finally:
        os.umask(previous)


def test_python_dash_m_speechkit_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "speechkit", "--version"], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.strip().startswith("speechkit ")
    bad = subprocess.run([sys.executable, "-m", "speechkit", "no-such-command"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2
    code = "import sys, speechkit; print('speechkit.cli' in sys.modules, 'speechkit.__main__' in sys.modules)"
    light = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert light.stdout.split() == ["False", "False"]
