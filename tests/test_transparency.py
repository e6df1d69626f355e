"""Issue 15: the default enhancer leaves clean speech alone at its level, and no output is ever clipped silently."""
from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
import soundfile

from conftest import GainConfig, GainModel, speech_like, write_audio_file
from speechkit.api import AudioWarning, Processor
from speechkit.pretrained import DEFAULT_MODEL, EXAMPLES_DIR, MODELS_DIR

#: THE SWITCH: bundled default (name, sha256 prefix) known to fail transparency and level (issue 15).
#: When the default is replaced (new name or new file), these tests become hard assertions.
KNOWN_NOT_TRANSPARENT = ("conv_tasnet_enhance_16k", "3fcdd2b73f0b0194")


def _default_is_known_not_transparent() -> bool:
    name, digest = KNOWN_NOT_TRANSPARENT
    path = MODELS_DIR / f"{DEFAULT_MODEL}.safetensors"
    return DEFAULT_MODEL == name and path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest().startswith(digest)


old_default_fails = pytest.mark.xfail(
    _default_is_known_not_transparent(), strict=False,
    reason=f"issue 15: the old bundled default {KNOWN_NOT_TRANSPARENT[0]} damages clean speech and changes its level",
)


@pytest.fixture(scope="module")
def default_processor():
    import speechkit

    return speechkit.load()


@pytest.fixture(scope="module")
def clean_second() -> np.ndarray:
    """The first second of the bundled clean reference (the demo's ``clean_speech.flac``), ``[T]`` at 16 kHz.

    Its onset, word boundary and quieter frames are where the old default damaged clean speech.
    """
    audio, rate = soundfile.read(str(EXAMPLES_DIR / "clean_speech.flac"), dtype="float32")
    assert rate == 16000
    return audio[:rate]


@old_default_fails
def test_default_model_returns_clean_speech_unchanged(default_processor, clean_second):
    pytest.importorskip("pystoi")
    from bench.transparency import LEVELS_DBFS, MIN_SI_SDR_DB, MIN_STOI, transparency_row

    rows = {level: transparency_row(default_processor, clean_second, 16000, level) for level in LEVELS_DBFS}
    assert all(row["si_sdr"] >= MIN_SI_SDR_DB and row["stoi"] >= MIN_STOI for row in rows.values()), rows


@old_default_fails
def test_default_model_output_level_follows_input_level(default_processor, clean_second):
    pytest.importorskip("pystoi")
    from bench.transparency import LEVELS_DBFS, MAX_LEVEL_CHANGE_DB, transparency_row

    changes = {level: transparency_row(default_processor, clean_second, 16000, level)["level_change_db"]
               for level in LEVELS_DBFS}
    assert all(abs(change) <= MAX_LEVEL_CHANGE_DB for change in changes.values()), changes


@pytest.mark.parametrize("extension", [".wav", ".flac"])
def test_output_beyond_full_scale_is_soft_limited_with_one_warning(tmp_path, extension):
    audio = speech_like(0.5, 16000, level=0.9)  # peaks near 0.8: doubled, part of it passes full scale
    source = write_audio_file(tmp_path / "in.wav", audio, 16000, "FLOAT")
    doubler = Processor(GainModel(GainConfig(gain=2.0)), chunk_seconds=0.2, overlap_seconds=0.05)
    over = int((np.abs(2 * audio) > 1.0).sum())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = doubler.enhance_file(source, tmp_path / f"out{extension}")
    messages = [str(warning.message) for warning in caught if issubclass(warning.category, AudioWarning)]
    assert over > 0 and len(messages) == 1 and result.warnings == messages
    assert f"{over} sample(s)" in messages[0] and "soft-limited" in messages[0] and "none clipped" in messages[0]
    written, _ = soundfile.read(str(result.outputs[0]), dtype="float32", always_2d=True)
    written = written[:, 0]
    assert np.abs(written).max() <= 32767 / 32768  # a later 16-bit conversion clips nothing
    quiet = np.abs(2 * audio[0]) < 0.85  # below the -1 dBFS knee the doubled signal passes unchanged
    np.testing.assert_allclose(written[quiet], 2 * audio[0][quiet], atol=1e-4 if extension == ".flac" else 1e-6)
    loud = np.abs(2 * audio[0]) > 1.0
    assert np.all(np.sign(written[loud]) == np.sign(audio[0][loud])) and np.abs(written[loud]).min() > 0.95


def test_output_within_full_scale_is_written_unchanged_without_warning(tmp_path):
    audio = speech_like(0.5, 16000, level=0.3)
    source = write_audio_file(tmp_path / "in.wav", audio, 16000, "FLOAT")
    doubler = Processor(GainModel(GainConfig(gain=2.0)), chunk_seconds=0.2, overlap_seconds=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AudioWarning)
        result = doubler.enhance_file(source, tmp_path / "out.wav")
    written, _ = soundfile.read(str(result.outputs[0]), dtype="float32")
    assert result.warnings == []
    np.testing.assert_allclose(written, 2 * audio[0], atol=1e-6)  # the chunks' cross-fades round a little
    # arrays from the Python API stay as the model made them (documented in speechkit.audio)
    assert np.abs(doubler.enhance(3 * audio, 16000)).max() > 1.0


def test_transparency_of_a_separator_scores_the_output_holding_the_talker(clean_second):
    from types import SimpleNamespace

    from bench.transparency import transparency_row

    class SplittingSeparator:
        """Puts 80 % of its input in the second output and 20 % in the first: ``[S=2, C=1, T]``."""

        model = SimpleNamespace(task="separation")

        def separate(self, audio, sample_rate):
            return np.stack([0.2 * audio, 0.8 * audio])[:, None]

    row = transparency_row(SplittingSeparator(), clean_second, 16000, -25.0)
    assert row["si_sdr"] > 60.0  # the louder output is a scaled copy of the input
    assert row["level_change_db"] == pytest.approx(20 * np.log10(0.8), abs=1e-3)
    assert row["residue_db"] == pytest.approx(20 * np.log10(0.2), abs=1e-3)


def test_transparency_of_an_echo_canceller_also_feeds_an_unrelated_far_end(clean_second):
    from types import SimpleNamespace

    from bench.transparency import transparency_row

    class LeakyCanceller:
        """Returns the microphone plus 10 % of the far end: transparent only while the far end is silent."""

        model = SimpleNamespace(task="aec")

        def cancel_echo(self, mic, far_end, sample_rate):
            return mic + 0.1 * far_end

    unrelated = np.roll(clean_second, 4000)
    row = transparency_row(LeakyCanceller(), clean_second, 16000, -25.0, unrelated)
    assert row["si_sdr"] > 60.0 and row["level_change_db"] == pytest.approx(0.0, abs=1e-3)
    # the far end (at -20 dBFS, 10 % of it) lands 15 dB under -25 dBFS speech, give or take the overlap
    assert 10.0 < row["unrelated_si_sdr"] < 20.0 and row["unrelated_level_change_db"] > 0.0
    assert np.isnan(transparency_row(LeakyCanceller(), clean_second, 16000, -25.0)["unrelated_si_sdr"])
