"""Live far-end delay alignment for echo models in the realtime engine (no torch, no ONNX for most tests)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from realtime.clock import VirtualClock
from realtime.echo_delay import DelayAlignedModel, DelayTracker, TrackerOptions
from realtime.errors import RealtimeError
from speechkit.errors import AudioError
from speechkit.tasks import InputLayout

RATE = 8000
HOP = 80
#: the tracker's minimum history and analysis period, as sample counts of the signal
HISTORY_SAMPLES = 4000
ANALYSIS_SAMPLES = 2000
#: samples of a device capture (the fake device runs every arrived hop before its next callback; no clock)
CAPTURE_SAMPLES = 2000
OPTIONS = TrackerOptions(min_history_seconds=HISTORY_SAMPLES / RATE, update_seconds=ANALYSIS_SAMPLES / RATE)


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """Coloured noise in 200 ms bursts with pauses: a far end with silences, as speech has."""
    rng = np.random.default_rng(seed)
    length = int(seconds * RATE)
    noise = np.convolve(rng.standard_normal(length), [1.0, 0.6, 0.3], mode="same")
    bursts = np.repeat(rng.random(length // 1600 + 1) < 0.7, 1600)[:length]
    return (0.1 * noise * bursts).astype(np.float32)


def echo_of(far: np.ndarray, delay: int, seed: int) -> np.ndarray:
    """A decaying 20 ms echo path ``delay`` samples late, plus a little microphone noise."""
    rng = np.random.default_rng(seed)
    path = 0.3 * rng.standard_normal(160) * np.exp(-np.arange(160) / 30.0)
    path[0] = 0.8  # the direct path is the strongest tap: the delay GCC-PHAT finds
    echo = np.convolve(np.concatenate([np.zeros(delay), far]), path)[: far.shape[-1]]
    return (echo + 1e-3 * rng.standard_normal(far.shape[-1])).astype(np.float32)


def track(tracker: DelayTracker, mic: np.ndarray, far: np.ndarray) -> list[int]:
    """Feed hop by hop; the adopted delay after every hop."""
    delays = []
    for start in range(0, mic.shape[-1] - HOP + 1, HOP):
        tracker.push(mic[start : start + HOP], far[start : start + HOP])
        delays.append(tracker.delay)
    return delays


def test_tracker_finds_the_bulk_delay_and_follows_a_changed_echo_path() -> None:
    far = speech_like(8.0, seed=2)
    mic = np.concatenate([echo_of(far, 400, seed=3)[: 4 * RATE], echo_of(far, 1600, seed=3)[4 * RATE :]])
    tracker = DelayTracker(RATE, OPTIONS)
    delays = track(tracker, mic, far)
    assert abs(delays[4 * RATE // HOP - 1] - 400) <= 2  # the first echo path, found before the change
    assert abs(delays[-1] - 1600) <= 2 and tracker.changes == 2


def analyse(monkeypatch: pytest.MonkeyPatch, estimates: list[tuple[int, float]],
            initial_delay: int | None = None) -> tuple[list[int], int]:
    """Run the tracker's adoption rule over scripted analyses ``(delay, confidence)``: the adopted
    delay after each analysis, and the analyses the tracker asked for."""
    import speechkit.delay as delay_module

    script = iter(estimates)
    calls = []

    def scripted(*args, **kwargs):
        calls.append(1)
        samples, confidence = next(script)
        return delay_module.DelayEstimate(samples, RATE, confidence)

    monkeypatch.setattr(delay_module, "estimate_delay", scripted)
    tracker = DelayTracker(RATE, OPTIONS, initial_delay=initial_delay)
    silence = np.zeros(ANALYSIS_SAMPLES, dtype=np.float32)
    tracker.push(silence, silence)  # half the minimum history: no analysis yet
    assert not calls
    adopted = []
    for _ in estimates:
        tracker.push(silence, silence)  # one analysis period more
        adopted.append(tracker.delay)
    return adopted, len(calls)


def test_tracker_adopts_a_delay_only_as_its_rules_say(monkeypatch: pytest.MonkeyPatch) -> None:
    # the first delay: one analysis suffices when it is very confident, else two must agree
    assert analyse(monkeypatch, [(400, 12.0), (400, 12.0)]) == ([400, 400], 2)
    assert analyse(monkeypatch, [(400, 6.0), (402, 6.0)]) == ([0, 402], 2)
    # a change needs two consecutive reliable analyses that agree within the tolerance (32 samples at 8 kHz)
    estimates = [(400, 12.0), (1600, 6.0), (400, 6.0), (1600, 6.0), (1000, 2.0), (1600, 6.0), (1640, 6.0),
                 (1610, 6.0)]
    adopted, calls = analyse(monkeypatch, estimates)
    assert adopted == [400, 400, 400, 400, 400, 400, 400, 1610] and calls == len(estimates)
    # a known delay is kept until two analyses agree on another one
    assert analyse(monkeypatch, [(960, 20.0), (960, 20.0)], initial_delay=400) == ([400, 960], 2)


@pytest.mark.parametrize("case", ["uncorrelated", "silent far end", "near end alone"])
def test_tracker_keeps_the_delay_without_a_reliable_echo(case: str) -> None:
    far = speech_like(3.0, seed=4)
    if case == "uncorrelated":  # a headset: the far end never reaches the microphone
        mic = speech_like(3.0, seed=5)
    elif case == "silent far end":
        mic, far = speech_like(3.0, seed=5), np.zeros_like(far)
    else:
        mic, far = far, np.zeros_like(far)
    tracker = DelayTracker(RATE)
    delays = track(tracker, mic, far)
    assert set(delays) == {0} and tracker.changes == 0
    if case != "uncorrelated":
        assert tracker.confidence == 0.0


def test_tracker_refuses_a_search_range_longer_than_its_window() -> None:
    with pytest.raises(AudioError, match="max_delay_seconds < window_seconds"):
        DelayTracker(RATE, TrackerOptions(max_delay_seconds=2.0, window_seconds=2.0))


class EchoThrough:
    """A fake step model (microphone + far end in, one channel out) that outputs its far-end channel."""

    def __init__(self, lead: int = 0) -> None:
        self.sample_rate, self.hop_length, self.stream_delay = RATE, HOP, 0
        self.num_input_channels, self.num_output_channels = 2, 1
        self.input_layout = InputLayout(1, far_end_channel=1)
        self.metadata = {"reference_lead": lead}
        self.input_block = np.zeros((2, HOP), dtype=np.float32)
        self.output_block = np.zeros((1, HOP), dtype=np.float32)
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def step(self) -> np.ndarray:
        self.output_block[0] = self.input_block[1]
        return self.output_block


def run_hops(model: DelayAlignedModel, x: np.ndarray) -> np.ndarray:
    output = []
    for start in range(0, x.shape[-1], HOP):
        model.input_block[...] = x[:, start : start + HOP]
        output.append(model.step().copy())
    return np.concatenate(output, axis=-1)


def test_an_imposed_delay_shifts_the_far_end_by_the_delay_minus_the_models_lead_exactly() -> None:
    far = np.arange(1, 4 * HOP + 1, dtype=np.float32)
    x = np.stack([np.zeros_like(far), far])  # [mic, far]
    inner = EchoThrough(lead=20)
    aligned = DelayAlignedModel(inner, delay_seconds=150 / RATE)
    assert aligned.shift == 130 and aligned.hop_length == HOP and aligned.num_input_channels == 2
    y = run_hops(aligned, x)[0]
    np.testing.assert_array_equal(y[:130], 0.0)
    np.testing.assert_array_equal(y[130:], far[:-130])
    summary = aligned.summary()
    assert summary["tracked"] is False and summary["delay_ms"] == pytest.approx(18.75)
    assert "imposed" in aligned.describe()
    # a delay shorter than the lead does not move the far end earlier than it arrived
    assert DelayAlignedModel(EchoThrough(lead=20), delay_seconds=10 / RATE).shift == 0


def test_a_tracked_delay_aligns_the_far_end_and_restarts_the_model_once() -> None:
    far = speech_like(2.0, seed=6)
    x = np.stack([echo_of(far, 480, seed=7), far])  # echo 60 ms late
    inner = EchoThrough()
    aligned = DelayAlignedModel(inner)
    y = run_hops(aligned, x)[0]
    assert abs(aligned.delay - 480) <= 2 and aligned.tracker.changes == 1
    assert inner.resets == 2  # the wrapper's own reset, then one restart at the adoption
    np.testing.assert_array_equal(y[-RATE // 2 :], far[-RATE // 2 - aligned.shift : -aligned.shift])
    described = json.loads(json.dumps(aligned.summary()))
    assert described["tracked"] is True and described["changes"] == 1


def test_the_wrapper_refuses_a_model_without_a_far_end() -> None:
    plain = SimpleNamespace(input_layout=InputLayout(1))
    with pytest.raises(RealtimeError, match="only for echo-cancellation models"):
        DelayAlignedModel(plain)


def test_stream_cli_imposes_or_tracks_the_delay_and_refuses_it_for_other_models(tmp_path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    soundfile = pytest.importorskip("soundfile")
    from speechkit.cli import main as cli_main
    from speechkit.export import export_onnx
    from test_realtime_support import make_tiny_model

    echo_model = export_onnx(make_tiny_model(num_inputs=2, seed=2), tmp_path / "aec.onnx", verify_steps=2).onnx_path
    plain_model = export_onnx(make_tiny_model(seed=1), tmp_path / "plain.onnx", verify_steps=2).onnx_path
    far = speech_like(1.0, seed=8)
    soundfile.write(tmp_path / "far.wav", far, RATE, subtype="FLOAT")
    soundfile.write(tmp_path / "mic.wav", echo_of(far, 240, seed=9), RATE, subtype="FLOAT")
    common = ["--input", str(tmp_path / "mic.wav"), "--ref", str(tmp_path / "far.wav"), "--quiet", "--force"]
    assert cli_main(["stream", "--model", str(echo_model), "--output", str(tmp_path / "a.wav"), "--delay-ms", "30",
                     "--json", *common]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["far_end_delay"] == {"delay_ms": 30.0, "tracked": False, "changes": 0, "confidence": None}
    assert cli_main(["stream", "--model", str(echo_model), "--output", str(tmp_path / "b.wav"), *common]) == 0
    assert "far-end delay 30.0 ms (tracked live; 1 change(s)" in capsys.readouterr().out
    code = cli_main(["stream", "--model", str(plain_model), "--input", str(tmp_path / "mic.wav"), "--output",
                     str(tmp_path / "c.wav"), "--delay-ms", "30", "--quiet"])
    assert code == 2 and "--delay-ms is only for echo-cancellation models" in capsys.readouterr().err


@pytest.fixture(scope="module")
def echo_export(tmp_path_factory):
    """A tiny two-input (microphone, far end) streaming export."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    from speechkit.export import export_onnx
    from test_realtime_support import make_tiny_model

    return export_onnx(make_tiny_model(num_inputs=2, seed=2), tmp_path_factory.mktemp("echo") / "aec.onnx",
                       verify_steps=2).onnx_path


def test_device_far_end_from_a_loopback_channel_or_played_on_the_loudspeaker(echo_export, monkeypatch) -> None:
    import realtime.devices as devices
    from realtime.engine import Engine
    from realtime.model import StreamModel
    from test_realtime import _FakeSoundDevice
    from test_realtime_support import random_signal

    mic, far = random_signal(CAPTURE_SAMPLES, seed=3), random_signal(CAPTURE_SAMPLES, seed=4)
    stream_model = StreamModel(echo_export)
    offline = stream_model.process(np.concatenate([mic, far]))  # [1, T]
    # a two-channel capture: the loopback (far end) on channel 0, the microphone on channel 1
    engine = Engine(stream_model, 64, clock=VirtualClock())
    fake = _FakeSoundDevice(np.concatenate([far, mic]), 8000, engine)
    fake.install(monkeypatch)
    captured = devices.run_device(engine, speaker=False, duration=CAPTURE_SAMPLES / RATE, mics=[1],
                                   far_end_channel=0)
    assert fake.input_channels == [2]  # exact output below: the fake computes every hop before its next callback
    prefill = engine.latency.prefill
    np.testing.assert_array_equal(captured[:, prefill:CAPTURE_SAMPLES], offline[:, : CAPTURE_SAMPLES - prefill])
    # a far-end file: played on the loudspeaker while the microphone is captured; ends with the file
    engine = Engine(stream_model, 64, clock=VirtualClock())
    fake = _FakeSoundDevice(mic, 8000, engine)
    fake.install(monkeypatch)
    captured = devices.run_device(engine, far_end=far, speaker=False, play_far_end=True)
    played = np.concatenate(fake.played)
    np.testing.assert_array_equal(played[:CAPTURE_SAMPLES], far[0])
    assert captured.shape[-1] >= CAPTURE_SAMPLES + engine.signal_delay
    np.testing.assert_array_equal(captured[:, prefill:CAPTURE_SAMPLES], offline[:, : CAPTURE_SAMPLES - prefill])
    with pytest.raises(RealtimeError, match="playing the far end needs"):
        devices.run_device(engine, far_end=far, speaker=True, play_far_end=True)


def test_far_end_channel_of_an_input_file(tmp_path) -> None:
    soundfile = pytest.importorskip("soundfile")
    from realtime.io import file_input

    x = np.stack([speech_like(0.5, seed=seed) for seed in range(3)])  # [3, T]
    soundfile.write(tmp_path / "two.wav", x[:2].T, RATE, subtype="FLOAT")
    soundfile.write(tmp_path / "three.wav", x.T, RATE, subtype="FLOAT")
    layout = InputLayout(1, far_end_channel=1)
    np.testing.assert_array_equal(file_input(tmp_path / "two.wav", RATE, None, layout, far_end_channel=0), x[[1, 0]])
    np.testing.assert_array_equal(file_input(tmp_path / "three.wav", RATE, None, layout, [2], 0), x[[2, 0]])
    with pytest.raises(RealtimeError, match="no channel 2 for the far end"):
        file_input(tmp_path / "two.wav", RATE, None, layout, far_end_channel=2)
    with pytest.raises(RealtimeError, match="name the microphone channel"):
        file_input(tmp_path / "three.wav", RATE, None, layout, far_end_channel=0)
    with pytest.raises(RealtimeError, match="both a microphone and the far end"):
        file_input(tmp_path / "two.wav", RATE, None, layout, [0], 0)
    with pytest.raises(RealtimeError, match="only for echo-cancellation models"):
        file_input(tmp_path / "two.wav", RATE, None, InputLayout(1), far_end_channel=0)


def test_stream_cli_far_end_options_refuse_what_cannot_work(echo_export, tmp_path, capsys) -> None:
    soundfile = pytest.importorskip("soundfile")
    from speechkit.cli import main as cli_main

    far = speech_like(0.5, seed=10)
    mic = echo_of(far, 80, seed=11)
    soundfile.write(tmp_path / "far.wav", far, RATE, subtype="FLOAT")
    soundfile.write(tmp_path / "both.wav", np.stack([mic, far]).T, RATE, subtype="FLOAT")
    model = ["stream", "--model", str(echo_export), "--quiet"]
    cases = {
        ("--input", "mic", "--ref", str(tmp_path / "far.wav")): "the loudspeaker plays the far end",
        ("--input", "mic"): "pass --ref FILE or --ref-channel N",
        ("--input", str(tmp_path / "both.wav"), "--ref", str(tmp_path / "far.wav"), "--ref-channel", "1"):
            "either as a file (--ref) or as an input channel",
        ("--input", str(tmp_path / "both.wav"), "--ref-channel", "0", "--mics", "0"): "not named in --mics",
    }
    for arguments, message in cases.items():
        assert cli_main([*model, *arguments, "--output", "speaker"]) == 2, arguments
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    # a two-channel file (microphone, loopback): the far end from channel 1, delay tracked
    assert cli_main([*model, "--input", str(tmp_path / "both.wav"), "--ref-channel", "1", "--output",
                     str(tmp_path / "out.wav")]) == 0
    assert soundfile.info(str(tmp_path / "out.wav")).frames == mic.size
