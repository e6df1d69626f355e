"""Audio I/O, streaming resampling, chunked inference and the PNG writer."""
from __future__ import annotations


import numpy as np
import pytest
import soundfile
import torch

from conftest import speech_like, write_audio_file
from speechkit.audio import (
    AtomicAudioWriter,
    StreamResampler,
    audio_info,
    output_format,
    read_audio,
    soft_limit,
    write_audio,
)
from speechkit.errors import AudioError, ConfigError
from speechkit.inference import (
    ChunkedRunner,
    Pipeline,
    best_source_order,
    crossfade_windows,
    process_array,
    select_device,
)


def test_wav_is_float_and_quiet_samples_pass_unchanged(tmp_path):
    audio = np.array([[0.5, -0.8, 0.891, 1e-6, 0.0]], dtype=np.float32)
    assert write_audio(tmp_path / "a.wav", audio, 8000) == []
    back, rate = read_audio(tmp_path / "a.wav")
    assert rate == 8000 and np.array_equal(back, audio)


@pytest.mark.parametrize("extension", [".wav", ".flac"])
def test_overs_are_soft_limited_with_one_warning(tmp_path, extension):
    audio = np.array([[0.5, 1.5, -2.0, 0.95, 0.0]], dtype=np.float32)
    messages = write_audio(tmp_path / f"a{extension}", audio, 8000)
    assert len(messages) == 1 and "2 sample(s)" in messages[0] and "3 sample(s) above -1 dBFS" in messages[0]
    back, _ = read_audio(tmp_path / f"a{extension}")
    assert np.abs(back).max() < 1.0 and back[0, 0] == pytest.approx(0.5, abs=1e-6)
    assert back[0, 1] > back[0, 3] > 0.9 and back[0, 2] < -back[0, 3]  # order and sign kept, nothing flattened


def test_soft_limit_is_memoryless_and_smooth():
    signal = np.linspace(-3.0, 3.0, 6001, dtype=np.float32)
    whole, report = soft_limit(signal)
    blocks = np.concatenate([soft_limit(block)[0] for block in np.array_split(signal, 7)])
    assert np.array_equal(whole, blocks) and report.over_full_scale == int((np.abs(signal) > 1).sum())
    assert np.all(np.diff(whole) >= 0) and np.abs(whole).max() <= 32767 / 32768  # monotonic, fits 16-bit PCM
    assert np.abs(np.diff(whole)).max() <= np.abs(np.diff(signal)).max() + 1e-6  # slope never above 1


@pytest.mark.parametrize("name", ["out.mp3", "out.mp4", "out.txt", "out"])
def test_unsupported_output_extension(name):
    with pytest.raises(AudioError, match="not supported"):
        output_format(name)


def test_atomic_writer_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.wav"
    with pytest.raises(RuntimeError):
        with AtomicAudioWriter(target, 8000, 1) as writer:
            writer.write(np.zeros((1, 100), dtype=np.float32))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_audio_info(tmp_path):
    path = write_audio_file(tmp_path / "x.flac", speech_like(0.25, 16000, 3), 16000)
    info = audio_info(path)
    assert (info.sample_rate, info.channels, info.frames) == (16000, 3, 4000)
    assert info.duration == pytest.approx(0.25)


@pytest.mark.parametrize("rates", [(44100, 16000), (16000, 48000), (8000, 8000)])
def test_stream_resampler_length(rates):
    source, target = rates
    resampler = StreamResampler(source, target, 2)
    signal = speech_like(0.5, source, 2)
    pieces = [resampler.process(signal[:, start : start + 1000]) for start in range(0, signal.shape[1], 1000)]
    total = sum(piece.shape[1] for piece in pieces) + resampler.flush().shape[1]
    assert abs(total - round(signal.shape[1] * target / source)) <= 1


def test_crossfade_sums_to_one():
    fade_in, fade_out = crossfade_windows(100)
    assert np.allclose(fade_in + fade_out, 1.0)
    assert fade_in[0] < 0.01 and fade_in[-1] > 0.99


@pytest.mark.parametrize("block", [1, 333, 5000, 100000])
def test_chunked_runner_is_exact_for_a_pointwise_model(gain_model, block):
    signal = speech_like(0.9, 16000, 2)
    runner = ChunkedRunner(gain_model, [[0], [1]], chunk_length=2000, overlap_length=500)
    pieces = [runner.push(signal[:, start : start + block]) for start in range(0, signal.shape[1], block)]
    output = np.concatenate(pieces + [runner.flush()], axis=-1)
    assert output.shape == (1, 2, signal.shape[1])
    np.testing.assert_allclose(output[0], 0.5 * signal, atol=1e-6)
    assert runner.chunks_processed > 5


def test_chunk_overlap_over_half_the_chunk_is_refused(gain_model):
    """As the realtime chunk mode: at most half the chunk, refused above with one line (offline and via the pipeline)."""
    signal = speech_like(0.5, 16000, 1)
    runner = ChunkedRunner(gain_model, [[0]], chunk_length=1000, overlap_length=500)  # exactly half: fine
    output = np.concatenate([runner.push(signal), runner.flush()], axis=-1)
    np.testing.assert_allclose(output[0], 0.5 * signal, atol=1e-6)
    with pytest.raises(ConfigError, match=r"overlap \(501 samples\) may be at most half the chunk \(1000 samples\)") as error:
        ChunkedRunner(gain_model, [[0]], chunk_length=1000, overlap_length=501)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="at most half the chunk"):
        process_array(gain_model, signal, 16000, chunk_seconds=0.1, overlap_seconds=0.06)


def test_runner_memory_is_bounded(gain_model):
    runner = ChunkedRunner(gain_model, [[0]], chunk_length=1000, overlap_length=200)
    for _ in range(200):
        runner.push(np.ones((1, 700), dtype=np.float32))
        assert runner._buffer.shape[-1] < 1000
        assert runner._tail is None or runner._tail.shape[-1] == 200


@pytest.mark.parametrize("rate,frames", [(44100, 12345), (192000, 20000), (8000, 1), (16000, 1), (22050, 7)])
def test_pipeline_output_length_is_exact(gain_model, rate, frames):
    signal = speech_like(frames / rate, rate, 1)[:, :frames]
    pipeline = Pipeline(gain_model, rate, 1, chunk_seconds=0.2, overlap_seconds=0.05)
    pieces = [pipeline.push(signal[:, start : start + 4096]) for start in range(0, frames, 4096)]
    output = np.concatenate(pieces + [pipeline.finish()], axis=-1)
    assert output.shape == (1, 1, frames)
    assert np.isfinite(output).all()


def test_pipeline_resampled_gain_is_close(gain_model):
    signal = speech_like(0.5, 44100, 1)
    output = process_array(gain_model, signal, 44100, chunk_seconds=0.1, overlap_seconds=0.02)
    import soxr

    reference = soxr.resample(soxr.resample(signal[0], 44100, 16000), 16000, 44100)[: signal.shape[1]]
    error = output[0, 0, 200:-200] - 0.5 * reference[200:-200]
    assert np.sqrt(np.mean(error**2)) < 1e-3 * np.sqrt(np.mean(signal**2))


def test_mix_mode_downmixes(gain_model):
    signal = speech_like(0.2, 16000, 3)
    output = process_array(gain_model, signal, 16000, channels="mix")
    assert output.shape == (1, 1, signal.shape[1])
    np.testing.assert_allclose(output[0, 0], 0.5 * signal.mean(axis=0), atol=1e-6)


def test_best_source_order():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((3, 2, 400))
    assert best_source_order(reference, reference[[2, 0, 1]]) == (1, 2, 0)
    assert best_source_order(reference, reference) == (0, 1, 2)


def _crossing_mixture(seconds: float, rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Low tone fading out and high tone fading in: the louder band changes half-way."""
    time = np.arange(int(seconds * rate)) / rate
    ramp = time / seconds
    low = (1.0 - ramp) * 0.5 * np.sin(2 * np.pi * 200 * time)
    high = ramp * 0.5 * np.sin(2 * np.pi * 1500 * time)
    return (low + high).astype(np.float32)[None], low, high


@pytest.mark.parametrize("align", [True, False])
def test_separation_sources_never_swap(band_split_model, align):
    mixture, low, high = _crossing_mixture(1.0, 8000)
    runner = ChunkedRunner(band_split_model, [[0]], chunk_length=1600, overlap_length=400, align_sources=align)
    output = np.concatenate([runner.push(mixture), runner.flush()], axis=-1)[:, 0]  # [2, T]
    first_half, second_half = slice(400, 3600), slice(4400, 7600)
    # source 0 is the low tone at the start (it is louder there) ...
    assert np.corrcoef(output[0, first_half], low[first_half])[0, 1] > 0.99
    late = np.corrcoef(output[0, second_half], low[second_half])[0, 1]
    if align:  # ... and stays the low tone after the high tone became louder
        assert late > 0.99
        assert runner.permutations_applied > 0
    else:  # without re-alignment the model's own order swaps the speakers
        assert late < 0.5


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            select_device("cuda")


def test_soundfile_reads_what_we_write(tmp_path):
    path = tmp_path / "x.ogg"
    write_audio(path, speech_like(0.3, 16000, 2), 16000)
    assert soundfile.info(str(path)).channels == 2
