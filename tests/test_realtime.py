"""Realtime engine: exactness against the offline graph and PyTorch, latency, deadlines, flush, no torch."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from realtime.clock import VirtualClock  # noqa: E402
from realtime.engine import Engine  # noqa: E402
from realtime.errors import LatencyBudgetError, RealtimeError  # noqa: E402
from realtime.latency import minimum_prefill  # noqa: E402
from realtime.model import StreamModel  # noqa: E402
from realtime.ring import RingBuffer  # noqa: E402
from speechkit.errors import SpeechkitError  # noqa: E402
from test_realtime_support import make_identity_onnx, make_tiny_model, random_signal  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """The tiny streaming model and its verified ONNX export (model, path, tolerance)."""
    pytest.importorskip("torch")
    from speechkit.export import export_onnx

    model = make_tiny_model(seed=1)
    result = export_onnx(model, tmp_path_factory.mktemp("export") / "tiny.onnx", verify_steps=8)
    return model, result.onnx_path, result.tolerance


@pytest.fixture(scope="module")
def aec_export(tmp_path_factory):
    pytest.importorskip("torch")
    from speechkit.export import export_onnx

    model = make_tiny_model(num_inputs=2, seed=2)
    return model, export_onnx(model, tmp_path_factory.mktemp("aec") / "aec.onnx", verify_steps=4).onnx_path


def _torch_stream(model, x: np.ndarray) -> np.ndarray:
    import torch

    hop = model.block_size
    hops = -(-x.shape[-1] // hop)
    padded = np.zeros((x.shape[0], hops * hop), dtype=np.float32)
    padded[:, : x.shape[-1]] = x
    state, outputs = model.initial_state(1), []
    with torch.no_grad():
        for index in range(hops):
            y, state = model.forward_step(torch.from_numpy(padded[None, :, index * hop : (index + 1) * hop]), state)
            outputs.append(y.reshape(1, hop).numpy())
    return np.concatenate(outputs, axis=-1)[:, : x.shape[-1]]


def test_no_torch_imported():
    code = ("import sys, realtime, realtime.engine, realtime.cli, realtime.model, realtime.devices, realtime.io, "
            "realtime.echo_delay; "
            "import speechkit.channels, speechkit.audio, speechkit.files; print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "False"


def test_ring_buffer_wraps_and_keeps_history():
    ring = RingBuffer(2, 10)
    data = np.arange(2 * 37, dtype=np.float32).reshape(2, 37)
    for start in range(0, 37, 7):
        ring.write(data[:, start : start + 7])
    out = np.empty((2, 6), dtype=np.float32)
    ring.read(31, out)
    np.testing.assert_array_equal(out, data[:, 31:37])
    ring.read(24, out)  # 24..26 were overwritten: zeros, then held samples
    np.testing.assert_array_equal(out[:, 3:], data[:, 27:30])
    assert not out[:, :3].any() and not ring.holds(24, 6) and ring.holds(27, 10)


@pytest.mark.parametrize("hop,block", [(8, 8), (8, 1), (8, 16), (8, 5), (16, 100), (160, 256)])
def test_minimum_prefill_gives_every_step_a_callback(hop, block):
    prefill = minimum_prefill(hop, block)
    assert prefill >= hop
    if block == hop:
        assert prefill == hop
    if block % hop == 0:
        assert prefill == block


def test_engine_stream_equals_offline_graph_and_pytorch(tiny_export):
    model, path, tolerance = tiny_export
    stream_model = StreamModel(path)
    x = random_signal(2999)
    offline = stream_model.process(x)  # the same graph, hop by hop, no engine
    reference = _torch_stream(model, x)
    assert np.max(np.abs(offline - reference)) <= tolerance
    rng = np.random.default_rng(0)
    for device_block in (8, 13, 64):
        sizes = rng.integers(1, device_block + 1, size=40)
        engine = Engine(stream_model, device_block, variable_blocks=True, clock=VirtualClock())
        streamed = engine.run_array(x, callback_sizes=sizes, compensate_latency=False)
        prefill = engine.latency.prefill
        np.testing.assert_array_equal(streamed[:, prefill:], offline[:, : x.shape[-1] - prefill])
        assert not streamed[:, :prefill].any()
        assert engine.metrics.deadline_misses == 0 and engine.metrics.ring_underflows == 0
        aligned = engine.run_array(x, callback_sizes=sizes)  # latency compensated: aligned with the offline model
        assert np.max(np.abs(aligned[:, : x.shape[-1] - model.stream_delay] - reference[:, model.stream_delay :])) <= tolerance


def test_file_source_to_file_sink_cli(tiny_export, tmp_path):
    soundfile = pytest.importorskip("soundfile")
    from speechkit.cli import main as cli_main

    _, path, _ = tiny_export
    x = random_signal(4000)
    soundfile.write(tmp_path / "in.wav", x[0], 8000, subtype="FLOAT")
    assert cli_main(["stream", "--model", str(path), "--input", str(tmp_path / "in.wav"),
                     "--output", str(tmp_path / "out.wav"), "--block", "24", "--quiet"]) == 0
    y, rate = soundfile.read(tmp_path / "out.wav", dtype="float32")
    offline = StreamModel(path).process(x)[0]
    assert rate == 8000 and y.shape == (4000,)
    np.testing.assert_array_equal(y[: 4000 - 8], offline[8:])  # compensated by stream_delay + buffering, exactly
    code = cli_main(["stream", "--model", str(path), "--input", str(tmp_path / "in.wav"),
                     "--output", str(tmp_path / "out.wav"), "--latency-ms", "1", "--quiet", "--force"])
    assert code == 2  # 2 ms algorithmic latency cannot meet a 1 ms budget


@pytest.mark.parametrize("hop,delay,block", [(8, 0, 8), (8, 3, 8), (8, 3, 5), (16, 7, 40), (4, 2, 1)])
def test_identity_output_delay_equals_declared_latency(tmp_path, hop, delay, block):
    model = StreamModel(make_identity_onnx(tmp_path / "identity.onnx", hop, delay))
    engine = Engine(model, block, clock=VirtualClock())
    x = random_signal(1500)
    y = engine.run_array(x, compensate_latency=False)
    declared = engine.latency.algorithmic + engine.latency.buffering
    assert declared == engine.latency.total  # file streaming: no device terms
    assert engine.latency.algorithmic == hop + delay
    np.testing.assert_array_equal(y[:, declared:], x[:, :-declared])
    assert not y[:, :declared].any()
    # measured by cross-correlation too: the peak is at the declared lag
    lag = int(np.argmax(np.correlate(y[0], x[0], mode="full"))) - (x.shape[-1] - 1)
    assert lag == declared


@pytest.mark.parametrize("fallback", ["passthrough", "silence"])
def test_virtual_clock_counts_injected_misses_and_latency_recovers(tmp_path, fallback):
    hop = 8
    model = StreamModel(make_identity_onnx(tmp_path / "identity.onnx", hop, 0))
    clock = VirtualClock()
    injected = {10, 57, 200}
    hop_seconds = hop / model.sample_rate

    def slow_step(hop_index: int) -> None:
        if hop_index in injected:
            clock.advance(1.5 * hop_seconds)  # longer than the step's slack of one hop

    engine = Engine(model, hop, clock=clock, fallback=fallback, step_hook=slow_step)
    x = random_signal(3200)
    y = engine.run_array(x, paced=True, compensate_latency=False)
    metrics = engine.metrics
    assert metrics.deadline_misses == len(injected)
    assert metrics.ring_underflows == 0 and metrics.skipped_steps == 0
    delay = engine.signal_delay
    wrong = np.nonzero(y[0, delay:] != x[0, :-delay])[0]
    wrong_hops = sorted(set(((wrong + delay - engine.latency.prefill) // hop).tolist()))
    if fallback == "passthrough":
        assert wrong_hops == []  # the delayed input is the identity's output: timeline intact
    else:
        assert wrong_hops == sorted(injected)  # silence exactly where the steps were late, nowhere else
    assert metrics.backlog_samples < hop  # no backlog left: latency back to the configured value
    np.testing.assert_array_equal(y[0, -1000:], x[0, -1000 - delay : -delay])
    assert clock.now() == pytest.approx((x.shape[-1] + delay) / model.sample_rate, abs=2 * hop_seconds)


def test_very_slow_step_skips_steps_without_growing_latency(tmp_path):
    model = StreamModel(make_identity_onnx(tmp_path / "identity.onnx", 8, 0))
    clock = VirtualClock()
    engine = Engine(model, 8, clock=clock, fallback="silence",
                    step_hook=lambda index: clock.advance(0.02) if index == 30 else None)  # 20 hops long
    x = random_signal(2000)
    y = engine.run_array(x, paced=True, compensate_latency=False)
    assert engine.metrics.deadline_misses > 1 and engine.metrics.skipped_steps == engine.metrics.deadline_misses - 1
    delay = engine.signal_delay
    np.testing.assert_array_equal(y[0, -800:], x[0, -800 - delay : -delay])


def test_reset_and_flush_lengths(tiny_export):
    _, path, _ = tiny_export
    engine = Engine(StreamModel(path), 24, clock=VirtualClock())
    for length in (1, 7, 8, 999):
        x = random_signal(length, seed=length)
        first = engine.run_array(x)
        again = engine.run_array(x)  # run_array resets: same result
        raw = engine.run_array(x, compensate_latency=False)
        assert first.shape == raw.shape == (1, length)
        np.testing.assert_array_equal(first, again)
    engine.reset()
    assert engine.metrics.steps == 0 and engine.metrics.deadline_misses == 0


def test_echo_cancellation_mode_with_far_end(aec_export, tmp_path):
    soundfile = pytest.importorskip("soundfile")
    from realtime.io import file_input

    model, path = aec_export
    near, far = random_signal(1200, seed=1), random_signal(1000, seed=2)
    soundfile.write(tmp_path / "near.wav", near[0], 8000, subtype="FLOAT")
    soundfile.write(tmp_path / "far.wav", far[0], 8000, subtype="FLOAT")
    stream_model = StreamModel(path)
    x = file_input(tmp_path / "near.wav", 8000, tmp_path / "far.wav", stream_model.input_layout)
    assert x.shape == (2, 1000)
    engine = Engine(stream_model, 16, clock=VirtualClock())
    y = engine.run_array(x, compensate_latency=False)
    prefill = engine.latency.prefill
    np.testing.assert_array_equal(y[:, prefill:], stream_model.process(x)[:, :-prefill])
    with pytest.raises(RealtimeError, match="far-end"):
        file_input(tmp_path / "near.wav", 8000, None, stream_model.input_layout)


def test_budget_refusal_and_compute_check(tmp_path):
    model = StreamModel(make_identity_onnx(tmp_path / "identity.onnx", 80, 0))  # 10 ms hop at 8 kHz
    with pytest.raises(LatencyBudgetError, match="budget"):
        Engine(model, 160, latency_budget_ms=15.0, clock=VirtualClock())
    engine = Engine(model, 80, latency_budget_ms=10.0, device_output=0, clock=VirtualClock())
    assert engine.latency.milliseconds(engine.latency.total) == 10.0
    with pytest.raises(RealtimeError, match="real time"):
        engine.check_compute([0.02] * 10)  # 20 ms per 10 ms hop
    assert engine.slack_seconds() == pytest.approx(0.01)
    with pytest.raises(RealtimeError, match="extra-buffer"):
        engine.check_compute([0.001] * 95 + [0.05] * 5)  # fast on average (3.45 ms), 5 % of steps take 50 ms
    engine.check_compute([0.001] * 100)


def test_rejects_chunk_graph_and_missing_file(tmp_path, tiny_export):
    from speechkit.export import export_onnx

    with pytest.raises(RealtimeError, match="does not exist"):
        StreamModel(tmp_path / "missing.onnx")
    chunk = export_onnx(tiny_export[0], tmp_path / "chunk.onnx", streaming=False, chunk_lengths=(400,))
    with pytest.raises(RealtimeError, match="streaming export"):
        StreamModel(chunk.onnx_path)


def test_portaudio_smoke_with_null_sink(tmp_path, tiny_export):
    """Real clock through PortAudio, where a PulseAudio null sink can be started."""
    if shutil.which("pulseaudio") is None or shutil.which("pactl") is None:
        pytest.skip("no PulseAudio on this machine (pulseaudio/pactl not found), so no null sink to stream to")
    try:
        import sounddevice
    except (ImportError, OSError) as error:
        pytest.skip(f"sounddevice/PortAudio unavailable: {error}")
    started = subprocess.run(["pulseaudio", "--start", "--exit-idle-time=30"], capture_output=True)
    loaded = subprocess.run(["pactl", "load-module", "module-null-sink", "sink_name=speechkit_test"], capture_output=True)
    if started.returncode != 0 or loaded.returncode != 0:
        pytest.skip("a PulseAudio null sink could not be started here")
    # PortAudio lists devices when it initialises: re-scan now that the sound server runs
    sounddevice._terminate()
    sounddevice._initialize()
    if not any(device["max_output_channels"] > 0 for device in sounddevice.query_devices()):
        pytest.skip("PortAudio sees no output device even with a PulseAudio null sink (no ALSA pulse plugin?)")
    os.environ["PULSE_SINK"] = "speechkit_test"
    try:
        from realtime.devices import run_device

        _, path, _ = tiny_export
        engine = Engine(StreamModel(path), 256)  # the real clock, with the real device
        x = random_signal(4000)
        run_device(engine, file_input=x, speaker=True)
        assert engine.metrics.steps > 0
    finally:
        subprocess.run(["pactl", "unload-module", loaded.stdout.decode().strip()], capture_output=True)
        os.environ.pop("PULSE_SINK", None)


class _WorkerRunByTheFake:
    """Stands in for :func:`realtime.devices.run_device`'s worker thread: the fake device runs the
    worker's job (``engine.run_pending()``) itself, right after every callback."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def start(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass


class _FakeSoundDevice:
    """Stands in for sounddevice: entering a stream runs all its callbacks at once, in the caller's
    thread (the signal, then the engine's delay and a few blocks more), so the driver finds its
    stream finished as soon as it looks.

    :meth:`install` also replaces the driver's worker thread: after every callback the fake runs
    the worker's job (``engine.run_pending()``), so every hop that has arrived is computed before the
    next callback, as by a worker that is never late. No thread, no wait, no clock: the exact
    comparisons hold on any machine, however loaded. (The real worker thread and the real clock are
    exercised by the PortAudio smoke test where a sound server runs.)
    """

    class PortAudioError(Exception):
        pass

    def __init__(self, signal: np.ndarray, rate: int, engine: Engine) -> None:
        self.signal = np.atleast_2d(signal)  # [C, T]: what each microphone hears
        self.rate = rate
        self.engine = engine
        self.played: list[np.ndarray] = []
        self.input_channels: list[int] = []  # capture channels of every stream opened

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make :func:`realtime.devices.run_device` open this device and leave its steps to it."""
        import threading
        import types

        import realtime.devices as devices

        monkeypatch.setattr(devices, "import_sounddevice", lambda: self)
        monkeypatch.setattr(devices, "threading", types.SimpleNamespace(Event=threading.Event,
                                                                        Thread=_WorkerRunByTheFake))

    def _stream(self, kind: str):
        fake = self

        class Stream:
            latency = (0.004, 0.006) if kind == "duplex" else 0.005

            def __init__(self, callback=None, blocksize=0, channels=1, **_):
                self.callback, self.blocksize = callback, blocksize
                self.capture = (channels[0] if isinstance(channels, tuple) else channels) if kind != "output" else 0
                fake.input_channels.append(self.capture)

            def close(self):
                pass

            def __enter__(self):
                # every callback of the stream, here and now: the signal, then the engine's delay and
                # a few blocks of silence, more than any test asks the driver to wait for
                position = 0
                end = fake.signal.shape[-1] + fake.engine.signal_delay + 4 * self.blocksize
                while position < end:
                    frames = self.blocksize
                    indata = np.zeros((frames, max(1, self.capture)), dtype=np.float32)
                    chunk = fake.signal[: indata.shape[1], position : position + frames].T  # [frames, C]
                    indata[: chunk.shape[0], : chunk.shape[1]] = chunk
                    outdata = np.zeros((frames, 1), dtype=np.float32)
                    if kind == "input":
                        self.callback(indata, frames, None, None)
                    elif kind == "output":
                        self.callback(outdata, frames, None, None)
                    else:
                        self.callback(indata, outdata, frames, None, None)
                    fake.played.append(outdata[:, 0].copy())
                    position += frames
                    fake.engine.run_pending()  # the worker's job, before the next callback
                return self

            def __exit__(self, *exc):
                pass

        return Stream

    @property
    def Stream(self):  # noqa: N802 - sounddevice's names
        return self._stream("duplex")

    @property
    def InputStream(self):  # noqa: N802
        return self._stream("input")

    @property
    def OutputStream(self):  # noqa: N802
        return self._stream("output")


def test_device_driver_with_fake_portaudio(tiny_export, monkeypatch):
    import realtime.devices as devices

    _, path, _ = tiny_export
    x = random_signal(4000)
    stream_model = StreamModel(path)
    engine = Engine(stream_model, 64, device_input=32, device_output=48, clock=VirtualClock())
    fake = _FakeSoundDevice(x[0], 8000, engine)
    fake.install(monkeypatch)
    assert devices.device_latency(8000, 64, None, None, True, True) == (32, 48)
    captured = devices.run_device(engine, speaker=False, duration=0.5)  # microphone -> capture
    assert captured.shape[0] == 1 and captured.shape[-1] >= 4000
    prefill = engine.latency.prefill
    offline = stream_model.process(x)
    assert engine.metrics.deadline_misses == 0 and engine.metrics.ring_underflows == 0
    np.testing.assert_array_equal(captured[:, prefill:4000], offline[:, : 4000 - prefill])
    fake.played.clear()
    engine.reset()
    devices.run_device(engine, file_input=x, speaker=True)  # file -> speaker
    played = np.concatenate(fake.played)
    assert played.shape[0] >= 4000 + engine.signal_delay - 64
    assert engine.metrics.deadline_misses == 0
    np.testing.assert_array_equal(played[prefill:4000], offline[0, : 4000 - prefill])


def test_microphone_array_model_from_file_and_device(tmp_path, monkeypatch):
    """A 3-microphone model streams a 3-channel file (first 3 channels of a 4-channel one) and a
    3-channel capture exactly as its offline graph; a file with too few channels is refused."""
    soundfile = pytest.importorskip("soundfile")
    import realtime.devices as devices
    from realtime.io import file_input
    from speechkit.cli import main as cli_main
    from speechkit.export import export_onnx

    path = export_onnx(make_tiny_model(num_inputs=3, seed=3), tmp_path / "array.onnx", verify_steps=4).onnx_path
    stream_model = StreamModel(path)
    assert stream_model.num_microphones == 3 and stream_model.num_far_end_channels == 0
    x = np.concatenate([random_signal(2000, seed=seed) for seed in range(4)])  # [4, T]
    soundfile.write(tmp_path / "four.wav", x.T, 8000, subtype="FLOAT")
    np.testing.assert_array_equal(file_input(tmp_path / "four.wav", 8000, None, stream_model.input_layout), x[:3])
    np.testing.assert_array_equal(
        file_input(tmp_path / "four.wav", 8000, None, stream_model.input_layout, [3, 1, 0]), x[[3, 1, 0]]
    )
    assert cli_main(["stream", "--model", str(path), "--input", str(tmp_path / "four.wav"),
                     "--output", str(tmp_path / "out.wav"), "--block", "16", "--quiet"]) == 0
    y, _ = soundfile.read(tmp_path / "out.wav", dtype="float32")
    offline = stream_model.process(x[:3])[0]  # [T]
    delay = stream_model.stream_delay
    np.testing.assert_array_equal(y[: 2000 - delay], offline[delay:])
    soundfile.write(tmp_path / "two.wav", x[:2].T, 8000, subtype="FLOAT")
    with pytest.raises(RealtimeError, match="expects 3 microphones but the input has 2 channel"):
        file_input(tmp_path / "two.wav", 8000, None, stream_model.input_layout)
    with pytest.raises(RealtimeError, match="pass 3 channel number"):
        file_input(tmp_path / "four.wav", 8000, None, stream_model.input_layout, [0, 1])
    assert cli_main(["stream", "--model", str(path), "--input", str(tmp_path / "two.wav"),
                     "--output", str(tmp_path / "out2.wav"), "--quiet"]) != 0
    engine = Engine(stream_model, 64, clock=VirtualClock())
    fake = _FakeSoundDevice(x[:3], 8000, engine)
    fake.install(monkeypatch)
    captured = devices.run_device(engine, speaker=False, duration=0.25)  # 3-channel microphone -> capture
    assert fake.input_channels == [3]
    assert engine.metrics.deadline_misses == 0
    prefill = engine.latency.prefill
    np.testing.assert_array_equal(captured[:, prefill:2000], stream_model.process(x[:3])[:, : 2000 - prefill])
    # --mics on the device: channels 3, 1, 0 of a 4-channel capture, in that order
    engine = Engine(stream_model, 64, clock=VirtualClock())
    fake = _FakeSoundDevice(x, 8000, engine)
    fake.install(monkeypatch)
    captured = devices.run_device(engine, speaker=False, duration=0.25, mics=[3, 1, 0])
    assert fake.input_channels == [4]
    assert engine.metrics.deadline_misses == 0
    prefill = engine.latency.prefill
    np.testing.assert_array_equal(captured[:, prefill:2000], stream_model.process(x[[3, 1, 0]])[:, : 2000 - prefill])


def test_one_microphone_model_takes_one_channel_of_a_multichannel_file(tmp_path, capsys):
    """The realtime engine runs one stream: a stereo file needs --mics N (the offline policy would run
    each channel on its own), and --mics picks that channel."""
    soundfile = pytest.importorskip("soundfile")
    from realtime.io import file_input
    from speechkit.cli import main as cli_main
    from speechkit.tasks import InputLayout

    path = make_identity_onnx(tmp_path / "identity.onnx", 8, 0)
    x = np.concatenate([random_signal(800, seed=seed) for seed in range(2)])  # [2, T]
    soundfile.write(tmp_path / "stereo.wav", x.T, 8000, subtype="FLOAT")
    with pytest.raises(RealtimeError, match="has 2 channels .* one stream; choose the channel with --mics"):
        file_input(tmp_path / "stereo.wav", 8000, None, InputLayout(1))
    np.testing.assert_array_equal(file_input(tmp_path / "stereo.wav", 8000, None, InputLayout(1), [1]), x[1:])
    assert cli_main(["stream", "--model", str(path), "--input", str(tmp_path / "stereo.wav"),
                     "--output", str(tmp_path / "out.wav"), "--quiet"]) != 0
    assert "--mics" in capsys.readouterr().err
    assert cli_main(["stream", "--model", str(path), "--input", str(tmp_path / "stereo.wav"),
                     "--output", str(tmp_path / "out.wav"), "--mics", "1", "--quiet"]) == 0
    y, _ = soundfile.read(tmp_path / "out.wav", dtype="float32")
    np.testing.assert_array_equal(y, x[1])
    # an echo canceller: its microphone from the file, the far end from --ref, refused without it
    with pytest.raises(RealtimeError, match="1 microphone \\+ far end; pass the far-end signal with --ref"):
        file_input(tmp_path / "stereo.wav", 8000, None, InputLayout(1, far_end_channel=1))
    both = file_input(tmp_path / "stereo.wav", 8000, tmp_path / "stereo.wav", InputLayout(1, far_end_channel=1), [1])
    np.testing.assert_array_equal(both, x[[1, 0]])
    with pytest.raises(RealtimeError, match="--ref is only for echo-cancellation models"):
        file_input(tmp_path / "stereo.wav", 8000, tmp_path / "stereo.wav", InputLayout(1), [0])


def test_file_output_over_full_scale_is_soft_limited_with_one_warning(tmp_path, capsys):
    """speechkit stream --output FILE writes like the offline writers: overs soft-limited, one warning line."""
    soundfile = pytest.importorskip("soundfile")
    from realtime.io import write_audio
    from speechkit.audio import LIMITER_CEILING, soft_limit
    from speechkit.cli import main as cli_main
    from speechkit.files import AudioWarning

    x = 1.6 * random_signal(800, seed=4) / np.abs(random_signal(800, seed=4)).max()  # peak 1.6
    with pytest.warns(AudioWarning, match="exceeded full scale") as record:
        write_audio(tmp_path / "direct.wav", x, 8000)
    assert len(record) == 1
    written, _ = soundfile.read(tmp_path / "direct.wav", dtype="float32")
    assert np.abs(written).max() <= LIMITER_CEILING
    np.testing.assert_array_equal(written, soft_limit(x[0])[0])
    soundfile.write(tmp_path / "loud.wav", x.T, 8000, subtype="FLOAT")
    path = make_identity_onnx(tmp_path / "identity.onnx", 8, 0)
    assert cli_main(["stream", "--model", str(path), "--input", str(tmp_path / "loud.wav"),
                     "--output", str(tmp_path / "out.wav"), "--quiet", "--json"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(lines) == 1 and "exceeded full scale" in lines[0] and "soft-limited" in lines[0]
    y, _ = soundfile.read(tmp_path / "out.wav", dtype="float32")
    assert np.abs(y).max() <= LIMITER_CEILING


def test_graph_optimization_level_comes_from_the_export(tiny_export):
    """The export stores the architecture's fastest ONNX Runtime level; an explicit choice overrides it."""
    model, path, tolerance = tiny_export
    stored = StreamModel(path)
    assert stored.graph_optimization == type(model).onnx_graph_optimization == stored.metadata["ort_graph_optimization"]
    signal = random_signal(1600)
    for level in ("all", "disabled"):
        other = StreamModel(path, graph_optimization=level)
        assert other.graph_optimization == level
        np.testing.assert_allclose(other.process(signal[None]), stored.process(signal[None]), atol=tolerance)
    with pytest.raises(RealtimeError, match="optimisation level"):
        StreamModel(path, graph_optimization="fastest")


@pytest.mark.parametrize("hop,delay,block", [(8, 3, 5), (16, 7, 40)])
def test_attenuation_limit_adds_the_aligned_input_back(tmp_path, hop, delay, block):
    model = StreamModel(make_identity_onnx(tmp_path / "identity.onnx", hop, delay))
    x = random_signal(1500)
    plain = Engine(model, block, clock=VirtualClock()).run_array(x)
    model.reset()
    limited = Engine(model, block, attenuation_limit_db=20.0, clock=VirtualClock()).run_array(x)
    np.testing.assert_allclose(plain, x, atol=1e-6)  # the identity model, latency compensated
    np.testing.assert_allclose(limited, 1.1 * x, atol=1e-6)  # + the input 20 dB down, sample-aligned
    with pytest.raises(SpeechkitError, match="attenuation limit"):
        Engine(model, block, attenuation_limit_db=-1.0, clock=VirtualClock())


def test_file_at_another_rate_is_resampled_like_enhance(tiny_export, tmp_path):
    """``stream --input`` accepts any rate: resampled to the model's (soxr) and written back at the file's rate."""
    soundfile = pytest.importorskip("soundfile")
    import soxr

    from speechkit.cli import main as cli_main

    _, path, _ = tiny_export
    x = random_signal(5512)  # 0.25 s at 22.05 kHz; the model runs at 8 kHz
    soundfile.write(tmp_path / "in.wav", x[0], 22050, subtype="FLOAT")
    assert cli_main(["stream", "--model", str(path), "--input", str(tmp_path / "in.wav"),
                     "--output", str(tmp_path / "out.wav"), "--block", "24", "--quiet"]) == 0
    y, rate = soundfile.read(tmp_path / "out.wav", dtype="float32")
    assert rate == 22050 and y.shape == (5512,)
    at_model_rate = soxr.resample(x[0], 22050, 8000, quality="HQ").astype(np.float32)
    offline = StreamModel(path).process(at_model_rate[None])[0]
    expected = soxr.resample(np.concatenate([offline[8:], np.zeros(8, np.float32)]), 8000, 22050, quality="HQ")
    # the last 8 model-rate samples (after the latency compensation) differ; soxr's filter spreads them
    np.testing.assert_allclose(y[:5000], expected[:5000], atol=1e-5)
