"""``speechkit aec``: files and paired folders, delay alignment, rate/length reconciliation errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from speechkit.checkpoint import save_checkpoint
from speechkit.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from speechkit.delay import align_reference
from speechkit.models import build_model

RATE = 16000


@pytest.fixture(scope="module")
def aec_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("complex_d3net_aec", "tiny").eval()
    return save_checkpoint(model, tmp_path_factory.mktemp("models") / "aec_tiny.safetensors")


def _pair(folder: Path, name: str, delay: int = 800, seconds: float = 0.5, rate: int = RATE,
          ref_rate: int | None = None, ref_seconds: float | None = None, seed: int = 0) -> tuple[Path, Path]:
    """Write a microphone file (delayed echo of the reference + near end) and its reference."""
    rng = np.random.default_rng(seed)
    length = int(seconds * rate)
    reference = (0.2 * rng.standard_normal(int((ref_seconds or seconds) * (ref_rate or rate)))).astype(np.float32)
    echo = align_reference(np.tanh(reference[: length]) * 0.5, delay, length)
    mic = (echo + 0.05 * rng.standard_normal(length)).astype(np.float32)
    mic_path, ref_path = folder / "mic" / name, folder / "ref" / name
    for path, audio, audio_rate in ((mic_path, mic, rate), (ref_path, reference, ref_rate or rate)):
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(str(path), audio, audio_rate)
    return mic_path, ref_path


def test_file_pair_with_estimated_delay(tmp_path: Path, aec_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    mic, ref = _pair(tmp_path, "call.wav", delay=800)
    out = tmp_path / "clean.wav"
    code = main(["aec", "--mic", str(mic), "--ref", str(ref), "-o", str(out), "--model", str(aec_checkpoint)])
    assert code == EXIT_OK
    audio, rate = soundfile.read(str(out))
    assert rate == RATE and audio.shape == (int(0.5 * RATE),) and np.isfinite(audio).all()
    assert "(delay 50.0 ms)" in capsys.readouterr().err  # 800 samples at 16 kHz
    # the output exists now: refused without --force, accepted with it
    assert main(["aec", "--mic", str(mic), "--ref", str(ref), "-o", str(out), "--model", str(aec_checkpoint)]) == EXIT_FAILED
    assert main(["aec", "--mic", str(mic), "--ref", str(ref), "-o", str(out), "--model", str(aec_checkpoint),
                 "--force", "--delay-ms", "10"]) == EXIT_OK
    assert "(delay 10.0 ms)" in capsys.readouterr().err


def test_paired_folders(tmp_path: Path, aec_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    _pair(tmp_path, "a.wav", seed=1)
    _pair(tmp_path, "sub/b.flac", seed=2)
    lonely = tmp_path / "mic" / "c.wav"
    soundfile.write(str(lonely), np.zeros(800, dtype=np.float32), RATE)
    out = tmp_path / "out"
    code = main(["aec", "--mic", str(tmp_path / "mic"), "--ref", str(tmp_path / "ref"), "-o", str(out),
                 "--model", str(aec_checkpoint)])
    assert code == EXIT_FAILED  # c.wav has no reference
    assert (out / "a_aec.wav").is_file() and (out / "sub" / "b_aec.flac").is_file()
    err = capsys.readouterr().err
    assert "no reference" in err and "2 pair(s) done, 1 failed" in err


def test_rates_must_match_unless_resampling(tmp_path: Path, aec_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    mic, ref = _pair(tmp_path, "x.wav", rate=RATE, ref_rate=8000)
    out = tmp_path / "out.wav"
    args = ["aec", "--mic", str(mic), "--ref", str(ref), "-o", str(out), "--model", str(aec_checkpoint)]
    assert main(args) == EXIT_FAILED
    assert "--resample" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--resample"]) == EXIT_OK
    # a 48 kHz pair is resampled to the model rate and written back at 48 kHz
    mic48, ref48 = _pair(tmp_path / "hi", "y.wav", rate=48000, delay=2400)
    out48 = tmp_path / "out48.wav"
    assert main(["aec", "--mic", str(mic48), "--ref", str(ref48), "-o", str(out48), "--model", str(aec_checkpoint)]) == EXIT_OK
    audio, rate = soundfile.read(str(out48))
    assert rate == 48000 and audio.shape == (24000,)


def test_lengths_that_cannot_be_reconciled(tmp_path: Path, aec_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    mic, ref = _pair(tmp_path, "x.wav", seconds=0.5, ref_seconds=0.1)
    args = ["aec", "--mic", str(mic), "--ref", str(ref), "-o", str(tmp_path / "o.wav"), "--model", str(aec_checkpoint)]
    assert main([*args, "--max-length-difference", "0.2"]) == EXIT_FAILED
    assert "differ by 0.40 s" in capsys.readouterr().err
    assert main(args) == EXIT_OK  # within the default 1 s: the reference is zero-padded


def test_stereo_input_is_refused(tmp_path: Path, aec_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    mic, ref = _pair(tmp_path, "x.wav")
    soundfile.write(str(mic), np.zeros((800, 2), dtype=np.float32), RATE)
    assert main(["aec", "--mic", str(mic), "--ref", str(ref), "-o", str(tmp_path / "o.wav"),
                 "--model", str(aec_checkpoint)]) == EXIT_FAILED
    assert "needs mono" in capsys.readouterr().err


def test_usage_errors(tmp_path: Path, aec_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    mic, ref = _pair(tmp_path, "x.wav")
    # a file paired with a folder
    assert main(["aec", "--mic", str(mic), "--ref", str(ref.parent), "-o", str(tmp_path / "o.wav"),
                 "--model", str(aec_checkpoint)]) == EXIT_USAGE
    assert "both be files or both be folders" in capsys.readouterr().err
    # a model that is not an echo canceller
    enhancer = save_checkpoint(build_model("conv_tasnet", "tiny"), tmp_path / "enhancer.safetensors")
    assert main(["aec", "--mic", str(mic), "--ref", str(ref), "-o", str(tmp_path / "o.wav"),
                 "--model", str(enhancer)]) == EXIT_USAGE
    assert "not an echo canceller" in capsys.readouterr().err


def test_missing_default_model_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    import speechkit.pretrained

    monkeypatch.setattr(speechkit.pretrained, "MODELS_DIR", tmp_path / "no_models")
    mic, ref = _pair(tmp_path, "x.wav")
    assert main(["aec", "--mic", str(mic), "--ref", str(ref), "-o", str(tmp_path / "o.wav")]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "no echo canceller is installed in this copy of speechkit; pass --model FILE.safetensors" in err
    assert "recipes/echo_cancellation" in err and "complex_d3net_aec_16k" not in err
    with pytest.raises(SystemExit):
        main(["aec", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "no echo canceller is installed" in help_text and "default: complex_d3net_aec_16k" not in help_text


def test_a_bundled_echo_canceller_becomes_the_default(tmp_path: Path, aec_checkpoint: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    import speechkit.pretrained

    models = tmp_path / "models"
    models.mkdir()
    (models / f"{speechkit.pretrained.DEFAULT_ECHO_CANCELLER}.safetensors").write_bytes(aec_checkpoint.read_bytes())
    monkeypatch.setattr(speechkit.pretrained, "MODELS_DIR", models)
    mic, ref = _pair(tmp_path, "x.wav")
    assert main(["aec", "--mic", str(mic), "--ref", str(ref), "-o", str(tmp_path / "o.wav")]) == EXIT_OK
    assert (tmp_path / "o.wav").is_file()
    with pytest.raises(SystemExit):
        main(["aec", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "default: complex_d3net_aec_16k" in help_text and "no echo canceller is installed" not in help_text


def test_cli_output_equals_the_api(tmp_path: Path, aec_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    """The command is a thin layer over Processor.cancel_echo_file (same streaming machinery)."""
    import speechkit

    mic, ref = _pair(tmp_path, "x.wav", delay=160, seconds=0.6, seed=4)
    out = tmp_path / "cli.wav"
    assert main(["aec", "--mic", str(mic), "--ref", str(ref), "-o", str(out), "--model", str(aec_checkpoint),
                 "--delay-ms", "-5"]) == EXIT_OK
    assert "(delay -5.0 ms)" in capsys.readouterr().err
    processor = speechkit.load_echo_canceller(aec_checkpoint)
    mic_audio, _ = soundfile.read(str(mic), dtype="float32")
    ref_audio, _ = soundfile.read(str(ref), dtype="float32")
    expected = processor.cancel_echo(mic_audio, ref_audio, RATE, delay_seconds=-0.005)
    written, _ = soundfile.read(str(out), dtype="float32")
    np.testing.assert_allclose(written, expected, atol=1e-4)  # the file is 16-bit PCM
    result = speechkit.cancel_echo_file(mic, ref, tmp_path / "api.wav", model=processor, max_delay_seconds=0)
    assert result.delay.samples == 0 and result.far_end == ref


def test_plot_draws_microphone_far_end_and_output_and_never_overwrites(
    tmp_path: Path, aec_checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("matplotlib")
    mic, ref = _pair(tmp_path, "call.wav", ref_rate=8000, ref_seconds=0.5)  # the reference at another rate
    out = tmp_path / "clean.wav"
    args = ["aec", "--mic", str(mic), "--ref", str(ref), "-o", str(out), "--model", str(aec_checkpoint), "--resample",
            "--plot"]
    assert main(args) == EXIT_OK
    figure = tmp_path / "clean.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(figure) in capsys.readouterr().err
    out.unlink()  # the figure alone exists: the pair is refused before anything is written
    drawn = figure.read_bytes()
    assert main(args) == EXIT_FAILED
    assert "clean.png exists; pass --force" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--force"]) == EXIT_OK and figure.read_bytes() == drawn  # byte-identical redraw
