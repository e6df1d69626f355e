"""``speechkit enhance/separate/info/demo`` run in-process through ``speechkit.cli.main``."""
from __future__ import annotations

import json
import re

import pytest
import soundfile

from conftest import speech_like, write_audio_file
from speechkit.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from speechkit.pretrained import (
    DEFAULT_MODEL,
    DEFAULT_SEPARATOR,
    EXAMPLES_DIR,
    bundled_echo_canceller,
    bundled_model_names,
)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_enhance_single_file(capsys, enhance_checkpoint, noisy_wav, tmp_path):
    out = tmp_path / "clean.wav"
    code, _, err = run_cli(capsys, "enhance", noisy_wav, "-o", out, "--model", enhance_checkpoint)
    assert code == EXIT_OK, err
    assert soundfile.info(str(out)).frames == 11025
    assert "1 file(s) done, 0 failed" in err


def test_enhance_folder_and_glob(capsys, enhance_checkpoint, tmp_path):
    source = tmp_path / "corpus"
    write_audio_file(source / "a.wav", speech_like(0.2, 16000), 16000)
    write_audio_file(source / "sub" / "b.flac", speech_like(0.2, 8000), 8000)
    (source / "notes.txt").write_text("not audio")
    code, _, err = run_cli(capsys, "enhance", source, "-o", tmp_path / "out", "--model", enhance_checkpoint,
                           "--no-progress")
    assert code == EXIT_OK, err
    assert (tmp_path / "out" / "a.wav").is_file() and (tmp_path / "out" / "sub" / "b.flac").is_file()
    code, _, err = run_cli(capsys, "enhance", str(source / "**" / "*.flac"), "-o", tmp_path / "globbed",
                           "--model", enhance_checkpoint)
    assert code == EXIT_OK, err
    assert [p.name for p in (tmp_path / "globbed").iterdir()] == ["b.flac"]


def test_batch_continues_after_a_failure(capsys, enhance_checkpoint, tmp_path):
    good = write_audio_file(tmp_path / "in" / "good.wav", speech_like(0.2, 16000), 16000)
    bad = tmp_path / "in" / "bad.wav"
    bad.write_bytes(b"RIFF garbage")
    code, _, err = run_cli(capsys, "enhance", bad, good, tmp_path / "missing.wav", "-o", tmp_path / "out",
                           "--model", enhance_checkpoint, "--no-progress")
    assert code == EXIT_FAILED
    assert (tmp_path / "out" / "good.wav").is_file()
    assert "Traceback" not in err
    failures = [line for line in err.splitlines() if "FAILED" in line]
    assert len(failures) == 2
    assert "1 file(s) done, 2 failed" in err


def test_separate_command(capsys, separation_checkpoint, noisy_wav, tmp_path):
    code, _, err = run_cli(capsys, "separate", noisy_wav, "-o", tmp_path / "sep", "--model", separation_checkpoint)
    assert code == EXIT_OK, err
    assert sorted(p.name for p in (tmp_path / "sep").iterdir()) == ["noisy_s1.wav", "noisy_s2.wav"]
    assert soundfile.info(str(tmp_path / "sep" / "noisy_s1.wav")).channels == 1  # mixed to mono by default
    pattern = str(tmp_path / "pat" / "{name}-spk{source}.flac")
    code, _, err = run_cli(capsys, "separate", noisy_wav, "-o", pattern, "--model", separation_checkpoint)
    assert code == EXIT_OK, err
    assert sorted(p.name for p in (tmp_path / "pat").iterdir()) == ["noisy-spk1.flac", "noisy-spk2.flac"]
    code, _, err = run_cli(capsys, "separate", noisy_wav, "-o", tmp_path / "x.wav", "--model", separation_checkpoint)
    assert code == EXIT_USAGE and "output folder" in err


def test_bad_model_is_one_line(capsys, noisy_wav, tmp_path):
    code, _, err = run_cli(capsys, "enhance", noisy_wav, "-o", tmp_path / "o.wav", "--model", "conv_tasnet")
    assert code == EXIT_USAGE
    assert len(err.strip().splitlines()) == 1 and "without trained weights" in err


def test_wrong_task_is_a_usage_error(capsys, separation_checkpoint, noisy_wav, tmp_path):
    code, _, err = run_cli(capsys, "enhance", noisy_wav, "-o", tmp_path / "o.wav", "--model", separation_checkpoint)
    assert code == EXIT_USAGE and len(err.strip().splitlines()) == 1 and "use separate" in err


def test_several_inputs_need_a_folder(capsys, enhance_checkpoint, noisy_wav, tmp_path):
    other = write_audio_file(tmp_path / "b.wav", speech_like(0.1, 16000), 16000)
    code, _, err = run_cli(capsys, "enhance", noisy_wav, other, "-o", tmp_path / "o.wav", "--model", enhance_checkpoint)
    assert code == EXIT_USAGE and "output folder" in err


def test_info_installation(capsys):
    code, out, _ = run_cli(capsys, "info")
    assert code == EXIT_OK and "speechkit" in out and "torch" in out and "devices: cpu" in out
    code, out, _ = run_cli(capsys, "info", "--json")
    assert json.loads(out)["default_model"] == DEFAULT_MODEL


def test_info_files(capsys, enhance_checkpoint, noisy_wav, tmp_path):
    code, out, _ = run_cli(capsys, "info", noisy_wav, enhance_checkpoint)
    assert code == EXIT_OK
    assert "22050 Hz, 2 channel(s), 11025 frames" in out and "checkpoint: conv_tasnet" in out
    (tmp_path / "x.txt").write_text("hello")
    code, _, err = run_cli(capsys, "info", tmp_path / "x.txt")
    assert code == EXIT_FAILED and "unsupported" in err


def test_demo(capsys, enhance_checkpoint, tmp_path):
    if DEFAULT_MODEL not in bundled_model_names():
        code, _, err = run_cli(capsys, "demo", "-o", tmp_path / "demo")
        assert code == EXIT_USAGE and len(err.strip().splitlines()) == 1 and "not installed" in err
    if not (EXAMPLES_DIR / "noisy_speech.flac").is_file():
        pytest.skip("bundled example missing")
    code, _, err = run_cli(capsys, "demo", "-o", tmp_path / "demo", "--model", enhance_checkpoint)
    assert code == EXIT_OK, err
    names = sorted(p.name for p in (tmp_path / "demo").iterdir())
    expected = ["clean_speech.wav", "enhanced_speech.wav", "noisy_speech.wav", "spectrogram.png"]
    if DEFAULT_SEPARATOR in bundled_model_names():  # the demo also separates the two-speaker example
        expected += ["separation_spectrogram.png", "two_speakers_mix.wav", "two_speakers_s1.wav", "two_speakers_s2.wav"]
    echo_example = bundled_echo_canceller() is not None and (EXAMPLES_DIR / "echo_mic.flac").is_file()
    if echo_example:  # and cancels the echo of the echo example
        expected += ["echo_cancelled.wav", "echo_far_end.wav", "echo_mic.wav", "echo_spectrogram.png"]
    assert names == sorted(expected)
    if echo_example:
        # the bundled canceller removes the echo of a far end talking alone and keeps the near-end talker
        line = next(line for line in err.splitlines() if "cancelled the echo" in line)
        removed, before, after = (float(value) for value in re.findall(r"(-?\d+\.\d) (?:dB|->)", line)[:3])
        assert removed > 20.0 and after > before + 10.0, line
    assert "SI-SDR" in err or DEFAULT_SEPARATOR not in bundled_model_names()
    assert (tmp_path / "demo" / "spectrogram.png").read_bytes()[:4] == b"\x89PNG"
    code, _, err = run_cli(capsys, "demo", "-o", tmp_path / "demo", "--model", enhance_checkpoint)
    assert code == EXIT_USAGE and "--force" in err


def test_enhance_causal_model_equals_one_offline_pass(capsys, tmp_path):
    """A streaming (causal) checkpoint processes a file many steps long exactly like model(x)."""
    import numpy as np
    import torch

    from speechkit.checkpoint import save_checkpoint
    from speechkit.models import build_model

    torch.manual_seed(3)
    model = build_model("conv_tasnet", "tiny", n_src=1, causal=True, norm_type="cLN", sample_rate=16000).eval()
    checkpoint = save_checkpoint(model, tmp_path / "causal.safetensors")
    audio = speech_like(0.6, 16000, seed=2)
    source = write_audio_file(tmp_path / "in.wav", audio, 16000, subtype="FLOAT")
    code = main(["enhance", str(source), "-o", str(tmp_path / "out.wav"), "--model", str(checkpoint),
                 "--chunk-seconds", "0.05", "--overlap-seconds", "0", "--no-progress"])
    assert code == EXIT_OK
    written, _ = soundfile.read(str(tmp_path / "out.wav"), dtype="float32")
    with torch.no_grad():
        expected = model(torch.from_numpy(audio)[None])[0, 0, 0].numpy()
    np.testing.assert_allclose(written, expected, atol=1e-5)


def test_default_outputs_next_to_the_input(capsys, enhance_checkpoint, separation_checkpoint, noisy_wav):
    """Without -o: <name>_enhanced.<ext> / <name>_s1.wav beside the input; the input is untouched."""
    before = noisy_wav.read_bytes()
    code, _, err = run_cli(capsys, "enhance", noisy_wav, "--model", enhance_checkpoint)
    assert code == EXIT_OK, err
    assert (noisy_wav.parent / f"{noisy_wav.stem}_enhanced{noisy_wav.suffix}").is_file()
    code, _, err = run_cli(capsys, "enhance", noisy_wav, "--model", enhance_checkpoint)
    assert code == EXIT_FAILED and "--force" in err  # an existing output is kept
    code, _, err = run_cli(capsys, "separate", noisy_wav, "--model", separation_checkpoint)
    assert code == EXIT_OK, err
    assert (noisy_wav.parent / f"{noisy_wav.stem}_s1.wav").is_file()
    assert (noisy_wav.parent / f"{noisy_wav.stem}_s2.wav").is_file()
    assert noisy_wav.read_bytes() == before


def test_enhance_attenuation_limit_option(capsys, enhance_checkpoint, noisy_wav, tmp_path):
    code, _, err = run_cli(capsys, "enhance", noisy_wav, "-o", tmp_path / "a.wav", "--model", enhance_checkpoint,
                           "--attenuation-limit", "20")
    assert code == EXIT_OK, err
    code, _, err = run_cli(capsys, "enhance", noisy_wav, "-o", tmp_path / "b.wav", "--model", enhance_checkpoint,
                           "--attenuation-limit", "-3")
    assert code == EXIT_USAGE and len(err.strip().splitlines()) == 1 and "attenuation limit" in err
    assert not (tmp_path / "b.wav").exists()


def test_export_of_a_bare_architecture_names_the_arch_preset_form(capsys, tmp_path):
    code, _, err = run_cli(capsys, "export", "conv_tasnet", "-o", tmp_path / "x.onnx")
    assert code == EXIT_USAGE and len(err.strip().splitlines()) == 1
    assert "ARCH:PRESET" in err and "conv_tasnet:tiny" in err and "paper_causal" in err
    code, _, err = run_cli(capsys, "export", "conv_tasnet:nope", "-o", tmp_path / "x.onnx")
    assert code == EXIT_USAGE and "no preset 'nope'" in err and "ARCH:PRESET" in err and "tiny" in err
    assert not (tmp_path / "x.onnx").exists()


def test_models_command_lists_every_registered_model_in_aligned_columns(capsys):
    from speechkit.models import model_names

    code, out, _ = run_cli(capsys, "models")
    assert code == EXIT_OK
    lines = out.strip().splitlines()
    assert {line.split()[0] for line in lines[2:]} == set(model_names())
    rate_column = lines[0].index("rate") + len("rate")  # right-aligned under its header
    assert all(line[:rate_column].split()[-1].isdigit() for line in lines[2:])
