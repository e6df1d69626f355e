"""speechkit.plot (matplotlib spectrogram figures) and the --plot option of enhance/separate."""
from __future__ import annotations

import struct
import sys

import numpy as np
import pytest

from conftest import speech_like
from speechkit.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from speechkit.errors import AudioError, MissingDependencyError, OutputExistsError

pytest.importorskip("matplotlib")

from speechkit.plot import ENHANCEMENT_TITLES, separation_titles, spectrogram_db, write_spectrogram_figure  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    return struct.unpack(">II", data[16:24])  # IHDR width, height


def test_full_scale_sine_reads_zero_dbfs() -> None:
    rate, n_fft = 16000, 512
    sine = np.sin(2 * np.pi * 1000.0 * np.arange(rate) / rate)  # on bin 32 exactly
    levels = spectrogram_db(sine, n_fft, 128)
    assert levels.shape == (257, (rate - n_fft) // 128 + 1)
    assert abs(levels[32].mean()) < 0.1 and levels[100].max() < -60


def test_figure_is_a_deterministic_png_with_one_panel_per_signal(tmp_path) -> None:
    signals = [speech_like(0.5, 16000), speech_like(0.5, 16000, seed=1)[0], speech_like(0.4, 16000, seed=2)]
    first = write_spectrogram_figure(tmp_path / "a.png", signals, 16000, ENHANCEMENT_TITLES, heading="x.wav")
    second = write_spectrogram_figure(tmp_path / "b.png", signals, 16000, ENHANCEMENT_TITLES, heading="x.wav")
    assert first.read_bytes() == second.read_bytes()
    width, height = _png_size(first)
    two_panels = write_spectrogram_figure(tmp_path / "c.png", signals[:2], 16000, ENHANCEMENT_TITLES[:2])
    assert width == 1000 and height > _png_size(two_panels)[1] + 150  # a taller figure for a third panel
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.png", "b.png", "c.png"]  # no temporary left
    with pytest.raises(OutputExistsError, match="exists"):
        write_spectrogram_figure(first, signals, 16000, ENHANCEMENT_TITLES)
    with pytest.raises(AudioError, match="one title per signal"):
        write_spectrogram_figure(tmp_path / "d.png", signals, 16000, ["noisy"])
    assert separation_titles(2) == ["mixture", "speaker 1", "speaker 2"]


def test_missing_matplotlib_is_one_clear_line(tmp_path, monkeypatch, capsys, enhance_checkpoint, noisy_wav) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'speechkit\[plot\]'"):
        write_spectrogram_figure(tmp_path / "a.png", [np.zeros(1600)], 16000, ["noisy"])
    code = main(["enhance", str(noisy_wav), "-o", str(tmp_path / "out.wav"), "--model", str(enhance_checkpoint),
                 "--plot", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USAGE and len(err.splitlines()) == 1 and "speechkit[plot]" in err
    assert not (tmp_path / "out.wav").exists()  # refused before any file was processed
    from speechkit.cli.demo import _draw

    assert not _draw(tmp_path / "spectrogram.png", [np.zeros(1600)], 16000, ["noisy"], "x")
    assert "spectrogram.png not drawn" in capsys.readouterr().err and not (tmp_path / "spectrogram.png").exists()


def test_enhance_plot_writes_a_figure_beside_the_output(tmp_path, capsys, enhance_checkpoint, noisy_wav) -> None:
    out = tmp_path / "clean.wav"
    args = ["enhance", str(noisy_wav), "-o", str(out), "--model", str(enhance_checkpoint), "--plot", "--no-progress"]
    assert main(args) == EXIT_OK
    assert "clean.png" in capsys.readouterr().err and _png_size(tmp_path / "clean.png")[0] == 1000
    before = (tmp_path / "clean.png").read_bytes()
    out.unlink()  # only the figure exists now: without --force the file fails, untouched
    assert main(args) == EXIT_FAILED
    assert "clean.png exists; pass --force" in capsys.readouterr().err
    assert not out.exists() and (tmp_path / "clean.png").read_bytes() == before
    assert main([*args, "--force"]) == EXIT_OK and out.exists()
    assert (tmp_path / "clean.png").read_bytes() == before  # the same input draws the same figure


def test_separate_plot(tmp_path, capsys, separation_checkpoint, noisy_wav) -> None:
    assert main(["separate", str(noisy_wav), "-o", str(tmp_path / "sep"), "--model", str(separation_checkpoint),
                 "--plot", "--no-progress"]) == EXIT_OK
    assert sorted(path.name for path in (tmp_path / "sep").iterdir()) == [
        "noisy_s1.wav", "noisy_s2.wav", "noisy_separated.png"]
    width, height = _png_size(tmp_path / "sep" / "noisy_separated.png")
    assert width == 1000 and height > 600  # mixture and two speakers
