"""The Python API: speechkit.load, Processor.enhance/separate, enhance_file, separate_file."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

import speechkit
from conftest import sha256, speech_like, write_audio_file
from speechkit.api import Processor
from speechkit.errors import CheckpointError, ConfigError
from speechkit.pretrained import DEFAULT_MODEL, bundled_model_names, resolve_model


def test_load_returns_a_processor(enhance_checkpoint):
    processor = speechkit.load(enhance_checkpoint)
    assert isinstance(processor, Processor)
    assert processor.sample_rate == 16000 and processor.num_sources == 1
    assert processor.describe()["provenance"] == {"note": "random weights for tests"}


@pytest.mark.parametrize("rate", [8000, 16000, 44100])
def test_enhance_numpy_any_rate(enhance_checkpoint, rate):
    processor = speechkit.load(enhance_checkpoint)
    mono = speech_like(0.3, rate)[0]
    out = processor.enhance(mono, rate)
    assert isinstance(out, np.ndarray) and out.shape == (1, mono.shape[0]) and np.isfinite(out).all()
    stereo = speech_like(0.3, rate, channels=2)
    assert processor.enhance(stereo, rate).shape == stereo.shape
    assert processor.enhance(stereo, rate, channels="mix").shape == (1, stereo.shape[1])


def test_enhance_tensor_in_tensor_out(enhance_checkpoint):
    processor = speechkit.load(enhance_checkpoint)
    audio = torch.from_numpy(speech_like(0.2, 22050, channels=2))
    out = processor.enhance(audio, 22050)
    assert isinstance(out, torch.Tensor) and out.shape == audio.shape


def test_chunking_changes_little_for_a_causal_model(enhance_checkpoint):
    whole = speechkit.load(enhance_checkpoint, chunk_seconds=10)
    chunked = speechkit.load(enhance_checkpoint, chunk_seconds=0.25, overlap_seconds=0.05)
    audio = speech_like(1.0, 16000)
    reference = whole.enhance(audio, 16000)
    # a causal model with cumulative norm: chunks restart its statistics, so allow a small difference
    difference = chunked.enhance(audio, 16000) - reference
    assert np.sqrt(np.mean(difference**2)) < 0.5 * np.sqrt(np.mean(reference**2)) + 1e-6


def test_separate_shapes(separation_checkpoint):
    processor = speechkit.load(separation_checkpoint)
    audio = speech_like(0.4, 16000, channels=2)
    out = processor.separate(audio, 16000)
    assert out.shape == (2, 2, audio.shape[1])


def test_wrong_task_is_refused(enhance_checkpoint, separation_checkpoint):
    with pytest.raises(ConfigError, match="use enhance"):
        speechkit.load(enhance_checkpoint).separate(speech_like(0.1, 16000), 16000)
    with pytest.raises(ConfigError, match="use separate"):
        speechkit.load(separation_checkpoint).enhance(speech_like(0.1, 8000), 8000)


def test_architecture_name_without_weights_is_refused():
    with pytest.raises(CheckpointError, match="without trained weights"):
        speechkit.load("conv_tasnet")


def test_missing_default_model_message():
    if DEFAULT_MODEL in bundled_model_names():
        assert resolve_model(None).is_file()
    else:
        with pytest.raises(CheckpointError, match="not installed"):
            speechkit.load()


def test_bad_model_paths(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        speechkit.load(tmp_path / "nope.safetensors")
    (tmp_path / "official.pth").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="converted"):
        speechkit.load(tmp_path / "official.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError):
        speechkit.load(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="unknown model"):
        speechkit.load("no_such_model")


def test_cuda_request_without_cuda(enhance_checkpoint):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match="CUDA"):
        speechkit.load(enhance_checkpoint, device="cuda")


def test_enhance_file(enhance_checkpoint, noisy_wav, tmp_path):
    before = sha256(noisy_wav)
    result = speechkit.enhance_file(noisy_wav, tmp_path / "out" / "clean.flac", model=enhance_checkpoint)
    info = soundfile.info(str(result.outputs[0]))
    assert (info.samplerate, info.channels, info.frames) == (22050, 2, 11025)
    assert sha256(noisy_wav) == before
    assert result.warnings == []
    # an existing directory as output receives a file of the same name
    result = speechkit.enhance_file(noisy_wav, tmp_path / "out", model=enhance_checkpoint)
    assert result.outputs[0] == tmp_path / "out" / "noisy.wav"


def test_file_equals_array_processing(enhance_checkpoint, noisy_wav, tmp_path):
    processor = speechkit.load(enhance_checkpoint, chunk_seconds=0.2, overlap_seconds=0.05)
    processor.enhance_file(noisy_wav, tmp_path / "a.wav")
    from_file, _ = soundfile.read(str(tmp_path / "a.wav"), dtype="float32", always_2d=True)
    audio, _ = soundfile.read(str(noisy_wav), dtype="float32", always_2d=True)
    from_array = processor.enhance(audio.T, 22050)
    np.testing.assert_allclose(from_file.T, from_array, atol=1e-6)


def test_separate_file_directory_and_pattern(separation_checkpoint, noisy_wav, tmp_path):
    result = speechkit.separate_file(noisy_wav, tmp_path / "sep", model=separation_checkpoint)
    assert [path.name for path in result.outputs] == ["noisy_s1.wav", "noisy_s2.wav"]
    assert all(soundfile.info(str(path)).frames == 11025 for path in result.outputs)
    result = speechkit.separate_file(noisy_wav, str(tmp_path / "{name}-speaker{source}.flac"),
                                     model=separation_checkpoint)
    assert [path.name for path in result.outputs] == ["noisy-speaker1.flac", "noisy-speaker2.flac"]
    with pytest.raises(ConfigError, match="source"):
        speechkit.separate_file(noisy_wav, str(tmp_path / "{name}.wav"), model=separation_checkpoint)


def test_processor_reused_across_files(enhance_checkpoint, tmp_path):
    processor = speechkit.load(enhance_checkpoint)
    for index in range(2):
        source = write_audio_file(tmp_path / f"in{index}.wav", speech_like(0.2, 16000, seed=index), 16000)
        speechkit.enhance_file(source, tmp_path / f"out{index}.wav", model=processor)
    assert (tmp_path / "out1.wav").is_file()
