"""Bad input never gives a traceback, never loses data, never modifies the input.

Every case runs through the CLI (one line per failed file, exit code) and, where the behaviour is
a result rather than a refusal, checks the output too.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import soundfile

import speechkit
from conftest import sha256, speech_like, write_audio_file
from speechkit.api import AudioWarning
from speechkit.cli import EXIT_FAILED, EXIT_OK, main
from speechkit.errors import AudioError, OutputExistsError


def enhance_cli(capsys, checkpoint, *argv) -> tuple[int, str]:
    code = main(["enhance", *[str(arg) for arg in argv], "--model", str(checkpoint), "--no-progress"])
    return code, capsys.readouterr().err


def assert_one_failure(err: str, *needles: str) -> None:
    assert "Traceback" not in err
    failures = [line for line in err.splitlines() if "FAILED" in line]
    assert len(failures) == 1, err
    for needle in needles:
        assert needle in failures[0], failures[0]


def no_leftovers(directory) -> bool:
    """No temporary ``.partial`` files next to the outputs."""
    return not any(".partial" in path.name for path in directory.rglob("*")) if directory.exists() else True


def _corrupt(path):
    path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(64))


def _empty(path):
    path.write_bytes(b"")


def _zero_length(path):
    soundfile.write(str(path), np.zeros((0, 1), dtype=np.float32), 16000)


def _text(path):
    path.write_text("hello, this is not audio\n")


def _mp4(path):
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(200))


@pytest.mark.parametrize(
    "name,make,reason",
    [
        ("corrupt.wav", _corrupt, "not a readable audio file"),
        ("empty.wav", _empty, "empty (0 bytes)"),
        ("zero.wav", _zero_length, "no audio samples"),
        ("notes.txt", _text, "unsupported"),
        ("movie.mp4", _mp4, "unsupported"),
    ],
)
def test_unreadable_inputs_fail_with_one_line(capsys, enhance_checkpoint, tmp_path, name, make, reason):
    source = tmp_path / name
    make(source)
    before = sha256(source)
    code, err = enhance_cli(capsys, enhance_checkpoint, source, "-o", tmp_path / "out")
    assert code == EXIT_FAILED
    assert_one_failure(err, reason)
    assert sha256(source) == before
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_nonfinite_input_is_refused_or_repaired(capsys, enhance_checkpoint, tmp_path, bad_value):
    audio = speech_like(0.3, 16000)
    audio[0, 1000] = bad_value
    source = write_audio_file(tmp_path / "nan.wav", audio, 16000, "FLOAT")
    code, err = enhance_cli(capsys, enhance_checkpoint, source, "-o", tmp_path / "out.wav")
    assert code == EXIT_FAILED
    assert_one_failure(err, "NaN or infinite", "0.062 s", "--repair-nonfinite")
    assert not (tmp_path / "out.wav").exists() and no_leftovers(tmp_path)
    code, err = enhance_cli(capsys, enhance_checkpoint, source, "-o", tmp_path / "out.wav", "--repair-nonfinite")
    assert code == EXIT_OK, err
    assert "replaced 1 NaN/infinite sample(s)" in err
    output, _ = soundfile.read(str(tmp_path / "out.wav"))
    assert np.isfinite(output).all()


def test_nonfinite_array_is_refused(enhance_checkpoint):
    processor = speechkit.load(enhance_checkpoint)
    audio = speech_like(0.1, 16000)
    audio[0, 5] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        processor.enhance(audio, 16000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert np.isfinite(processor.enhance(audio, 16000, repair_nonfinite=True)).all()
    assert any(issubclass(w.category, AudioWarning) for w in caught)


def test_clipped_input_is_processed_with_a_warning(capsys, enhance_checkpoint, tmp_path):
    audio = np.clip(speech_like(0.3, 16000, level=3.0), -1, 1)
    source = write_audio_file(tmp_path / "loud.wav", audio, 16000, "PCM_16")
    code, err = enhance_cli(capsys, enhance_checkpoint, source, "-o", tmp_path / "out.wav")
    assert code == EXIT_OK
    assert "looks clipped" in err and (tmp_path / "out.wav").is_file()


@pytest.mark.parametrize(
    "rate,channels,frames",
    [(16000, 1, 1), (8000, 1, 1), (16000, 8, 4000), (192000, 1, 48000), (192000, 2, 1)],
)
def test_odd_shapes_and_rates(capsys, enhance_checkpoint, tmp_path, rate, channels, frames):
    audio = speech_like(frames / rate, rate, channels)[:, :frames]
    source = write_audio_file(tmp_path / "odd.wav", audio, rate, "FLOAT")
    code, err = enhance_cli(capsys, enhance_checkpoint, source, "-o", tmp_path / "out.wav")
    assert code == EXIT_OK, err
    output, out_rate = soundfile.read(str(tmp_path / "out.wav"), always_2d=True)
    assert out_rate == rate and output.shape == (frames, channels)
    assert np.isfinite(output).all()


def test_silent_input_gives_silence_not_nan(enhance_checkpoint, tmp_path):
    source = write_audio_file(tmp_path / "silent.wav", np.zeros((2, 8000), dtype=np.float32), 16000)
    result = speechkit.enhance_file(source, tmp_path / "out.wav", model=enhance_checkpoint)
    output, _ = soundfile.read(str(result.outputs[0]))
    assert np.isfinite(output).all() and np.abs(output).max() == 0.0
    processor = speechkit.load(enhance_checkpoint)
    near_silent = np.full((1, 4000), 1e-9, dtype=np.float32)
    assert np.isfinite(processor.enhance(near_silent, 16000)).all()


def test_output_equal_to_input_is_refused(capsys, enhance_checkpoint, noisy_wav):
    before = sha256(noisy_wav)
    code, err = enhance_cli(capsys, enhance_checkpoint, noisy_wav, "-o", noisy_wav, "--force")
    assert code == EXIT_FAILED
    assert_one_failure(err, "it is the input file")
    assert sha256(noisy_wav) == before
    link = noisy_wav.parent / "alias.wav"
    link.symlink_to(noisy_wav)
    with pytest.raises(AudioError, match="input file"):
        speechkit.enhance_file(noisy_wav, link, model=enhance_checkpoint, force=True)
    assert sha256(noisy_wav) == before


def test_existing_output_is_kept_unless_force(capsys, enhance_checkpoint, noisy_wav, tmp_path):
    target = tmp_path / "existing.wav"
    target.write_bytes(b"precious")
    code, err = enhance_cli(capsys, enhance_checkpoint, noisy_wav, "-o", target)
    assert code == EXIT_FAILED
    assert_one_failure(err, "--force")
    assert target.read_bytes() == b"precious"
    with pytest.raises(OutputExistsError):
        speechkit.enhance_file(noisy_wav, target, model=enhance_checkpoint)
    code, err = enhance_cli(capsys, enhance_checkpoint, noisy_wav, "-o", target, "--force")
    assert code == EXIT_OK, err
    assert soundfile.info(str(target)).frames == 11025


def test_unwritable_output_directory(capsys, enhance_checkpoint, noisy_wav, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")  # a file where a directory is needed: cannot be written even as root
    code, err = enhance_cli(capsys, enhance_checkpoint, noisy_wav, "-o", blocker / "out.wav")
    assert code == EXIT_FAILED
    assert_one_failure(err, "cannot write")
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            code, err = enhance_cli(capsys, enhance_checkpoint, noisy_wav, "-o", locked / "out.wav")
            assert code == EXIT_FAILED
            assert_one_failure(err, "cannot write")
        finally:
            locked.chmod(0o700)


def test_unsupported_output_extension(capsys, enhance_checkpoint, noisy_wav, tmp_path):
    code, err = main(["enhance", str(noisy_wav), "-o", str(tmp_path / "out.mp3"), "--model", str(enhance_checkpoint),
                      "--no-progress"]), capsys.readouterr().err
    assert code == EXIT_FAILED
    assert_one_failure(err, "not supported")
    assert not (tmp_path / "out.mp3").exists()


def test_inputs_never_modified_by_a_batch(capsys, enhance_checkpoint, separation_checkpoint, tmp_path):
    sources = [
        write_audio_file(tmp_path / "in" / "a.flac", speech_like(0.2, 16000), 16000),
        write_audio_file(tmp_path / "in" / "b.wav", speech_like(0.2, 44100, 2), 44100, "PCM_16"),
    ]
    hashes = [sha256(path) for path in sources]
    code, err = enhance_cli(capsys, enhance_checkpoint, tmp_path / "in", "-o", tmp_path / "in")
    assert code == EXIT_FAILED  # outputs would overwrite the inputs: refused, file by file
    assert "Traceback" not in err
    main(["separate", str(tmp_path / "in"), "-o", str(tmp_path / "sep"), "--model", str(separation_checkpoint),
          "--no-progress"])
    assert [sha256(path) for path in sources] == hashes
    assert no_leftovers(tmp_path)
