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


def test_chunk_length_does_not_change_a_causal_model():
    """A causal model streams with its state carried across chunks: any chunk length gives one offline pass."""
    model = _causal_model()
    audio = speech_like(1.0, 16000)
    with torch.no_grad():
        offline = model(torch.from_numpy(audio)[None]).numpy()[0, 0]  # [1, 1, T] -> [S=1, C=1, T] -> [1, T]
    assert np.abs(offline).max() > 1e-3  # a real signal to compare
    for chunk_seconds, overlap_seconds in ((10.0, 1.0), (0.25, 0.05), (0.05, 0.0)):
        processor = Processor(model, chunk_seconds=chunk_seconds, overlap_seconds=overlap_seconds)
        np.testing.assert_allclose(processor.enhance(audio, 16000), offline, atol=1e-5, rtol=0)


def test_separate_shapes(separation_checkpoint):
    processor = speechkit.load(separation_checkpoint)
    audio = speech_like(0.4, 16000, channels=2)
    out = processor.separate(audio, 16000)  # default: channels averaged first, as the CLI
    assert out.shape == (2, 1, audio.shape[1])
    np.testing.assert_allclose(out, processor.separate(audio.mean(axis=0), 16000), atol=1e-6)
    assert processor.separate(audio, 16000, channels="separate").shape == (2, 2, audio.shape[1])


def test_separate_channels_default_is_the_same_in_the_api_and_the_cli(separation_checkpoint, noisy_wav, tmp_path):
    from speechkit.cli import EXIT_OK, main

    api = speechkit.separate_file(noisy_wav, tmp_path / "api", model=separation_checkpoint)
    assert main(["separate", str(noisy_wav), "-o", str(tmp_path / "cli"), "--model", str(separation_checkpoint),
                 "--no-progress"]) == EXIT_OK
    for path in api.outputs:  # the stereo input is averaged to mono by both
        from_api, _ = soundfile.read(str(path), always_2d=True)
        from_cli, _ = soundfile.read(str(tmp_path / "cli" / path.name), always_2d=True)
        assert from_api.shape[1] == 1
        np.testing.assert_array_equal(from_api, from_cli)


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


# ---------------------------------------------------------------------- streaming models: exact files
from speechkit.delay import align_reference  # noqa: E402
from speechkit.errors import AudioError  # noqa: E402
from speechkit.inference import ChunkedRunner, StreamingRunner, max_step_blocks, torch_threads  # noqa: E402
from speechkit.models import build_model  # noqa: E402


def _causal_model(n_src: int = 1, rate: int = 16000) -> torch.nn.Module:
    torch.manual_seed(1)
    return build_model("conv_tasnet", "tiny", n_src=n_src, causal=True, norm_type="cLN", sample_rate=rate).eval()


def _aec_model() -> torch.nn.Module:
    torch.manual_seed(2)
    return build_model("complex_d3net_aec", "tiny").eval()


def _offline(model, audio: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(audio))[None])[0].numpy()  # [C, T] -> [S, C_out, T]


@pytest.mark.parametrize("n_src, channels", [(1, 1), (2, 2)])
def test_streaming_file_equals_one_offline_pass(tmp_path, n_src, channels):
    """A file many steps long gives model(x) on the whole file: the cumulative norm never restarts."""
    model = _causal_model(n_src)
    audio = speech_like(0.9, 16000, channels=channels, seed=3) + 0.05  # a DC offset the cLN must carry
    source = write_audio_file(tmp_path / "long.wav", audio, 16000, subtype="FLOAT")
    processor = Processor(model, chunk_seconds=0.05, overlap_seconds=0.01)  # 18 steps of 800 samples
    if n_src == 1:
        result = processor.enhance_file(source, tmp_path / "out.wav")
    else:
        result = processor.separate_file(source, tmp_path / "sep", channels="separate")  # each channel on its own
    outputs = np.stack([soundfile.read(str(path), dtype="float32", always_2d=True)[0].T for path in result.outputs])
    expected = _offline(model, audio)  # [S, C, T]
    assert outputs.shape == expected.shape
    np.testing.assert_allclose(outputs, expected, atol=1e-5)


def test_microphone_array_model_on_files(tmp_path):
    """A 4-mic encoder model takes a 4-channel file to one enhanced channel (streamed == offline);
    a file with another channel count is refused with the reason."""
    torch.manual_seed(4)
    model = build_model("conv_tasnet", "tiny", n_src=1, input_channels=4, causal=True, norm_type="cLN",
                        sample_rate=16000).eval()
    audio = speech_like(0.5, 16000, channels=4, seed=5)
    source = write_audio_file(tmp_path / "array.wav", audio, 16000, subtype="FLOAT")
    processor = Processor(model, chunk_seconds=0.05, overlap_seconds=0.01)
    result = processor.enhance_file(source, tmp_path / "out.wav")
    output, rate = soundfile.read(str(result.outputs[0]), dtype="float32", always_2d=True)
    assert rate == 16000 and output.shape == (audio.shape[-1], 1)
    np.testing.assert_allclose(output.T, _offline(model, audio)[0], atol=1e-5)
    stereo = write_audio_file(tmp_path / "stereo.wav", audio[:2], 16000, subtype="FLOAT")
    with pytest.raises(speechkit.errors.ConfigError, match="expects 4 microphones but the input has 2 channel"):
        processor.enhance_file(stereo, tmp_path / "out2.wav")
    # --mics picks the array's channels (in array order) out of a wider file
    wide = write_audio_file(tmp_path / "wide.wav", np.concatenate([audio[::-1], audio[:1]]), 16000, subtype="FLOAT")
    chosen = Processor(model, chunk_seconds=0.05, overlap_seconds=0.01, mics=[3, 2, 1, 0])
    output, _ = soundfile.read(str(chosen.enhance_file(wide, tmp_path / "out3.wav").outputs[0]), dtype="float32",
                               always_2d=True)
    np.testing.assert_allclose(output.T, _offline(model, audio)[0], atol=1e-5)


def test_streaming_array_any_block_layout_and_length():
    model = _causal_model()
    audio = speech_like(0.3, 16000, seed=4)[:, :4801]  # not a whole number of 8-sample blocks
    expected = _offline(model, audio)[0]
    for chunk_seconds in (0.0005, 0.013, 10.0):  # one block per call, odd steps, one call
        processor = Processor(model, chunk_seconds=chunk_seconds, overlap_seconds=0.0)
        np.testing.assert_allclose(processor.enhance(audio, 16000), expected, atol=1e-5)
    tensor = Processor(model).enhance(torch.from_numpy(audio[0]), 16000)
    assert isinstance(tensor, torch.Tensor)
    np.testing.assert_allclose(tensor.numpy(), expected, atol=1e-5)
    tiny = Processor(model).enhance(audio[:, :3], 16000)  # shorter than the stream delay
    np.testing.assert_allclose(tiny, _offline(model, audio[:, :3])[0], atol=1e-6)


def test_streaming_memory_is_bounded():
    model = _causal_model()
    runner = StreamingRunner(model, [[0]], step_length=800)
    state_sizes = [tensor.numel() for tensor in runner._state]
    total_out = 0
    for index in range(40):  # 2 s in uneven blocks, far longer than a step
        block = np.random.default_rng(index).standard_normal((1, 777 + index)).astype(np.float32)
        total_out += runner.push(block).shape[-1]
        assert runner._buffer.shape[-1] < runner.step_length
        assert [tensor.numel() for tensor in runner._state] == state_sizes
    total_in = sum(777 + index for index in range(40))
    assert total_out + runner.flush().shape[-1] == total_in


def test_streaming_choice():
    causal, non_causal = _causal_model(), build_model("conv_tasnet", "tiny")
    assert isinstance(Processor(causal)._pipeline(16000, 1, "separate").runner, StreamingRunner)
    assert isinstance(Processor(causal, streaming=False)._pipeline(16000, 1, "separate").runner, ChunkedRunner)
    assert isinstance(Processor(non_causal)._pipeline(8000, 1, "separate").runner, ChunkedRunner)
    with pytest.raises(ConfigError, match="does not support streaming"):
        Processor(non_causal, streaming=True)
    assert max_step_blocks(causal, 1) == 2  # Conv-TasNet steps take any whole number of blocks
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


# ---------------------------------------------------------------------- echo cancellation
def _echo_pair(seconds: float = 0.5, delay: int = 320, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    length = int(seconds * 16000)
    reference = (0.2 * rng.standard_normal(length)).astype(np.float32)
    mic = align_reference(0.5 * np.tanh(reference), delay, length) + 0.05 * rng.standard_normal(length)
    return mic.astype(np.float32), reference


def test_cancel_echo_array_equals_offline_model():
    model = _aec_model()
    mic, reference = _echo_pair()
    processor = Processor(model, chunk_seconds=0.1, overlap_seconds=0.0)
    near_end = processor.cancel_echo(mic, reference, 16000, delay_seconds=0.02)
    aligned = align_reference(reference, 320, len(mic))
    expected = _offline(model, np.stack([mic, aligned]))[0, 0]
    assert near_end.shape == mic.shape
    np.testing.assert_allclose(near_end, expected, atol=1e-5)
    # the estimated delay finds the same 20 ms; tensors come back as tensors
    estimated = processor.cancel_echo(torch.from_numpy(mic), torch.from_numpy(reference), 16000)
    assert isinstance(estimated, torch.Tensor)
    np.testing.assert_allclose(estimated.numpy(), expected, atol=1e-5)
    with pytest.raises(ConfigError, match="echo canceller; use cancel_echo"):
        processor.enhance(mic, 16000)
    with pytest.raises(ConfigError, match="not an echo canceller"):
        Processor(_causal_model()).cancel_echo(mic, reference, 16000)
    with pytest.raises(AudioError, match="mono"):
        processor.cancel_echo(np.stack([mic, mic]), reference, 16000)


def test_cancel_echo_file_matches_array_and_keeps_rate(tmp_path):
    model = _aec_model()
    processor = Processor(model, chunk_seconds=0.1, overlap_seconds=0.0)
    mic, reference = _echo_pair(seconds=0.8, seed=1)
    mic_path = write_audio_file(tmp_path / "mic.wav", mic, 16000, subtype="FLOAT")
    ref_path = write_audio_file(tmp_path / "ref.wav", reference[:12000], 16000, subtype="FLOAT")  # shorter
    (tmp_path / "out").mkdir()
    result = speechkit.cancel_echo_file(mic_path, ref_path, tmp_path / "out", model=processor)
    assert result.outputs == [tmp_path / "out" / "mic_aec.wav"] and result.delay.samples == 320
    written, rate = soundfile.read(str(result.outputs[0]), dtype="float32")
    expected = processor.cancel_echo(mic, reference[:12000], 16000)
    assert rate == 16000 and written.shape == mic.shape
    np.testing.assert_allclose(written, expected, atol=1e-5)
    # a 48 kHz microphone with a 16 kHz reference: refused unless resample=True, written at 48 kHz
    mic48 = write_audio_file(tmp_path / "mic48.wav", np.repeat(mic, 3), 48000)
    with pytest.raises(AudioError, match="resample"):
        processor.cancel_echo_file(mic48, ref_path, tmp_path / "o48.wav")
    result = processor.cancel_echo_file(mic48, ref_path, tmp_path / "o48.wav", resample=True, delay_seconds=0.02)
    info = soundfile.info(str(result.outputs[0]))
    assert (info.samplerate, info.frames) == (48000, 3 * len(mic)) and result.delay.samples == 960


def test_echo_warnings_point_at_the_caller(tmp_path):
    """Processor.cancel_echo(_file) and speechkit.cancel_echo_file warn at the line that called them."""
    processor = Processor(_aec_model(), chunk_seconds=0.1, overlap_seconds=0.0)
    mic, reference = _echo_pair(seconds=0.3, seed=2)
    mic[100] = np.nan
    with pytest.warns(UserWarning) as record:
        processor.cancel_echo(mic, reference, 16000, delay_seconds=0.0, repair_nonfinite=True)
    assert {entry.filename for entry in record} == {__file__}
    mic_path = write_audio_file(tmp_path / "mic.wav", mic, 16000, subtype="FLOAT")
    ref_path = write_audio_file(tmp_path / "ref.wav", reference, 16000, subtype="FLOAT")
    def module_function(*args, **kwargs):
        return speechkit.cancel_echo_file(*args, model=processor, **kwargs)

    for run in (processor.cancel_echo_file, module_function):
        with pytest.warns(UserWarning) as record:
            run(mic_path, ref_path, tmp_path / "out.wav", force=True, delay_seconds=0.0, repair_nonfinite=True)
        assert {entry.filename for entry in record} == {__file__}


@pytest.mark.parametrize("delay, reference_length", [(-160, 8000), (0, 9000), (480, 6000)])
def test_cancel_echo_alignment_matches_align_reference(delay, reference_length):
    """Negative and positive delays, references longer and shorter than the microphone."""
    model = _aec_model()
    mic, reference = _echo_pair(seconds=0.5, seed=5)
    reference = np.resize(reference, reference_length)
    near_end = Processor(model, chunk_seconds=0.03, overlap_seconds=0.0).cancel_echo(
        mic, reference, 16000, delay_seconds=delay / 16000
    )
    expected = _offline(model, np.stack([mic, align_reference(reference, delay, len(mic))]))[0, 0]
    np.testing.assert_allclose(near_end, expected, atol=1e-5)


def test_cli_and_api_agree_on_the_default_echo_model():
    from speechkit.api import DEFAULT_AEC_MODEL
    from speechkit.cli.aec import DEFAULT_AEC_MODEL as CLI_DEFAULT

    assert CLI_DEFAULT == DEFAULT_AEC_MODEL
    assert "cancel_echo_file" in dir(speechkit) and callable(speechkit.cancel_echo_file)


@pytest.mark.parametrize("channels", ["separate", "mix"])
def test_attenuation_limit_adds_the_input_back_sample_aligned(enhance_checkpoint, channels):
    audio = speech_like(0.5, 22050, channels=2)
    options = {"chunk_seconds": 0.2, "overlap_seconds": 0.05}
    plain = speechkit.load(enhance_checkpoint, **options).enhance(audio, 22050, channels=channels)
    limited = speechkit.load(enhance_checkpoint, attenuation_limit_db=20.0, **options).enhance(
        audio, 22050, channels=channels
    )
    added_back = audio.mean(axis=0, keepdims=True) if channels == "mix" else audio
    np.testing.assert_allclose(limited, plain + 0.1 * added_back, atol=1e-5)


def test_attenuation_limit_on_files_equals_arrays_and_bad_values_are_refused(
    enhance_checkpoint, separation_checkpoint, noisy_wav, tmp_path
):
    processor = speechkit.load(enhance_checkpoint, chunk_seconds=0.2, overlap_seconds=0.05, attenuation_limit_db=12.0)
    processor.enhance_file(noisy_wav, tmp_path / "a.wav")
    from_file, _ = soundfile.read(str(tmp_path / "a.wav"), dtype="float32", always_2d=True)
    audio, _ = soundfile.read(str(noisy_wav), dtype="float32", always_2d=True)
    np.testing.assert_allclose(from_file.T, processor.enhance(audio.T, 22050), atol=1e-6)
    for bad in (0.0, -3.0, float("nan")):
        with pytest.raises(ConfigError, match="attenuation limit"):
            speechkit.load(enhance_checkpoint, attenuation_limit_db=bad)
    with pytest.raises(ConfigError, match="one output source"):
        speechkit.load(separation_checkpoint, attenuation_limit_db=20.0)


def test_processor_uses_the_chunk_the_model_declares() -> None:
    """A chunk-mode model runs in the chunks it declares unless the caller chooses others."""
    from speechkit.api import Processor
    from speechkit.inference import DEFAULT_CHUNK_SECONDS, DEFAULT_OVERLAP_SECONDS
    from speechkit.models import build_model

    declared = build_model("mossformer2", "tiny")
    spec = declared.inference_spec
    assert spec.mode == "chunk" and spec.chunk_seconds != DEFAULT_CHUNK_SECONDS
    processor = Processor(declared)
    assert (processor.chunk_seconds, processor.overlap_seconds) == (spec.chunk_seconds, spec.overlap_seconds)
    chosen = Processor(declared, chunk_seconds=20.0, overlap_seconds=2.0)
    assert (chosen.chunk_seconds, chosen.overlap_seconds) == (20.0, 2.0)
    short = Processor(declared, chunk_seconds=0.5)  # the declared overlap does not fit: half the chunk
    assert (short.chunk_seconds, short.overlap_seconds) == (0.5, 0.25)
    undeclared = Processor(build_model("conv_tasnet", "tiny"))
    assert (undeclared.chunk_seconds, undeclared.overlap_seconds) == (DEFAULT_CHUNK_SECONDS, DEFAULT_OVERLAP_SECONDS)
