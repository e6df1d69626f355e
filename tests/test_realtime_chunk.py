"""Realtime chunk mode: a whole-chunk graph on a sliding window, speaker order, latency; the sampler loop."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from realtime.chunk import ChunkModel  # noqa: E402
from realtime.engine import Engine  # noqa: E402
from realtime.model import load_model  # noqa: E402
from realtime.sampler import OnnxScore, Schedule, draw_noise, pc_sample  # noqa: E402
from speechkit.export import export_onnx, read_onnx_metadata, write_onnx_metadata  # noqa: E402
from speechkit.inference import ChunkedRunner  # noqa: E402
from speechkit.models import build_model  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy torch.onnx exporter, on purpose

RATE = 8000
#: ONNX Runtime vs PyTorch, relative to max(1, max |reference|), as the export's own check
TOLERANCE = 1e-4


def _offline_chunked(model, x: np.ndarray, window: int, overlap: int) -> np.ndarray:
    """PyTorch chunked inference (ChunkedRunner) on the windows the engine sees: O zeros in front."""
    padded = np.concatenate([np.zeros((1, overlap), np.float32), x, np.zeros((1, 2 * window), np.float32)], axis=-1)
    runner = ChunkedRunner(model, [[0]], window, overlap)
    output = np.concatenate([runner.push(padded), runner.flush()], axis=-1)  # [S, 1, O + T + 2N]
    return output[:, 0, overlap : overlap + x.shape[-1]]  # [S, T]


def test_non_causal_conv_tasnet_chunk_graph_in_engine_equals_offline_pytorch(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    from speechkit.cli import main as cli_main

    torch.manual_seed(0)
    model = build_model("conv_tasnet", "tiny").eval()  # non-causal (gLN over the window), two sources
    assert not model.supports_streaming
    result = export_onnx(model, tmp_path / "tasnet.onnx", chunk_seconds=0.25, overlap_seconds=0.0625)
    meta = read_onnx_metadata(result.onnx_path)
    window, overlap = 2000, 500
    assert (meta["mode"], meta["chunk_length"], meta["overlap_length"]) == ("chunk", window, overlap)
    assert (meta["hop_length"], meta["lookahead"], meta["algorithmic_latency"]) == (window - overlap, overlap, window)

    x = (0.3 * np.random.default_rng(3).standard_normal((1, 7000))).astype(np.float32)
    soundfile.write(tmp_path / "in.wav", x[0], RATE, subtype="FLOAT")
    assert cli_main(["stream", "--model", str(result.onnx_path), "--input", str(tmp_path / "in.wav"),
                     "--output", str(tmp_path / "out.wav"), "--quiet"]) == 0
    streamed, rate = soundfile.read(tmp_path / "out.wav", dtype="float32", always_2d=True)
    reference = _offline_chunked(model, x, window, overlap)  # [S, T]
    assert rate == RATE and streamed.shape == (7000, 2)
    scale = max(1.0, float(np.abs(reference).max()))
    assert np.max(np.abs(streamed.T - reference)) / scale <= TOLERANCE

    chunk_model = load_model(result.onnx_path)
    assert isinstance(chunk_model, ChunkModel) and chunk_model.hop_length == window - overlap
    engine = Engine(chunk_model, 500)
    assert engine.latency.algorithmic == window  # the latency the window really costs
    metrics = engine.summary()["metrics"]
    assert metrics["algorithmic_latency_samples"] == window
    assert metrics["latency_samples"] == engine.latency.total == window + engine.latency.buffering
    assert "chunk window 250.00" in engine.latency.describe()


def test_cli_export_chunk_window_and_refusals(tmp_path, capsys):
    from speechkit.cli import main as cli_main

    target = tmp_path / "tasnet.onnx"
    assert cli_main(["export", "conv_tasnet:tiny", "-o", str(target), "--chunk", "0.5", "--overlap", "0.1"]) == 0
    meta = read_onnx_metadata(target)
    assert (meta["mode"], meta["chunk_length"], meta["overlap_length"], meta["algorithmic_latency"]) == (
        "chunk", 4000, 800, 4000)
    assert "algorithmic latency 4000 samples (500.00 ms, the window)" in capsys.readouterr().out
    code = cli_main(["export", "conv_tasnet:tiny", "-o", str(tmp_path / "bad.onnx"), "--chunk", "0.5", "--overlap", "0.3"])
    assert code != 0 and "half" in capsys.readouterr().err
    assert not (tmp_path / "bad.onnx").exists()


class _LoudestFirst(torch.nn.Module):
    """Two "talkers" split by fixed low-/high-pass filters, returned loudest first (order flips with dominance)."""

    def __init__(self) -> None:
        super().__init__()
        taps = torch.arange(-50, 51, dtype=torch.float32)
        lowpass = torch.special.sinc(2 * 1000 / RATE * taps) * 2 * 1000 / RATE * torch.hann_window(103)[1:-1]
        self.register_buffer("lowpass", (lowpass / lowpass.sum()).reshape(1, 1, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = torch.nn.functional.conv1d(x, self.lowpass, padding=50)  # [1, 1, T]
        high = x - low
        low_first = (low * low).sum() >= (high * high).sum()
        first = torch.where(low_first, low, high)
        second = torch.where(low_first, high, low)
        return torch.stack([first, second], dim=1)  # [1, 2, 1, T]


def _stamp(path, window: int, overlap: int, **extra) -> None:
    metadata = {
        "speechkit_format": "speechkit-onnx/1", "task": "separation", "graph_kind": "chunk", "mode": "chunk",
        "sample_rate": RATE, "chunk_length": window, "overlap_length": overlap, "num_input_channels": 1,
        "num_sources": 2, "num_output_channels": 1, "input_names": ["x"], "output_names": ["y"],
    }
    metadata.update(extra)
    write_onnx_metadata(path, metadata)


def _talkers() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two tones whose loudness alternates every 0.3 s (A dominant first), and their sum."""
    time = np.arange(RATE) / RATE
    a_dominant = (time // 0.3) % 2 == 0
    talker_a = np.where(a_dominant, 1.0, 0.3) * np.sin(2 * np.pi * 300 * time)
    talker_b = np.where(a_dominant, 0.3, 1.0) * np.sin(2 * np.pi * 2000 * time)
    return talker_a.astype(np.float32), talker_b.astype(np.float32), (talker_a + talker_b).astype(np.float32)[None]


def test_speaker_order_kept_across_chunks(tmp_path):
    path = tmp_path / "loudest_first.onnx"
    torch.onnx.export(_LoudestFirst(), (torch.zeros(1, 1, 1600),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {2: "time"}, "y": {3: "time"}})
    window, overlap = 1600, 400
    _stamp(path, window, overlap)
    talker_a, talker_b, mixture = _talkers()

    def follows_a(align: bool) -> list[bool]:
        """Per hop after the first window: does output channel 0 correlate more with talker A than B?"""
        model = ChunkModel(path, align_sources=align)
        output = model.process(mixture)[:, overlap:]  # [2, T - O], aligned with the input
        hop = model.hop_length
        verdicts = []
        for start in range(hop, output.shape[-1] - hop, hop):
            segment = output[0, start : start + hop]
            verdicts.append(abs(segment @ talker_a[start : start + hop]) > abs(segment @ talker_b[start : start + hop]))
        return verdicts

    assert all(follows_a(align=True))  # talker A stays on channel 0 across every window
    assert not all(follows_a(align=False))  # the model alone swaps them when B gets louder


class _TinyScore(torch.nn.Module):
    """A small score network s(x, condition, t) with the time as an explicit input."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv1d(2, 1, 5, padding=2)

    def forward(self, x: torch.Tensor, condition: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        features = self.conv(torch.cat([x, condition], dim=1))  # [1, 2, T] -> [1, 1, T]
        return torch.tanh(features) * (1.0 + t) - (x - condition) / (0.1 + t)  # [1, 1, T]


def _torch_pc_sample(network, condition: torch.Tensor, schedule: Schedule, noise: torch.Tensor) -> torch.Tensor:
    """The predictor-corrector loop of realtime.sampler, written in torch (the reference)."""
    times = torch.linspace(1.0, schedule.t_eps, schedule.num_steps, dtype=torch.float64)

    def sigma(time: float) -> float:
        return schedule.sigma_min * (schedule.sigma_max / schedule.sigma_min) ** time

    def score(x: torch.Tensor, time: float) -> torch.Tensor:
        return network(x[None], condition[None], torch.tensor([time], dtype=torch.float32))[0]

    x = condition + sigma(float(times[0])) * noise[0]
    x_mean, draw = x, 1
    for index in range(schedule.num_steps):
        time = float(times[index])
        for _ in range(schedule.corrector_steps):
            gradient = score(x, time)
            step = 2.0 * (schedule.snr * float(noise[draw].norm()) / float(gradient.norm())) ** 2
            x = x + step * gradient + (2.0 * step) ** 0.5 * noise[draw]
            draw += 1
        following = sigma(float(times[index + 1])) if index + 1 < schedule.num_steps else 0.0
        variance = sigma(time) ** 2 - following**2
        x_mean = x + variance * score(x, time)
        x = x_mean + variance**0.5 * noise[draw]
        draw += 1
    return x_mean


def test_sampler_loop_over_onnx_equals_torch_loop_with_the_same_noise(tmp_path):
    import onnxruntime

    network = _TinyScore().eval()
    path = tmp_path / "score.onnx"
    example = (torch.zeros(1, 1, 256), torch.zeros(1, 1, 256), torch.zeros(1))
    torch.onnx.export(network, example, str(path), dynamo=False, opset_version=17,
                      input_names=["x", "condition", "t"], output_names=["score"],
                      dynamic_axes={"x": {2: "time"}, "condition": {2: "time"}, "score": {2: "time"}})
    schedule_values = {"sde": "ve", "sigma_min": 0.05, "sigma_max": 0.5, "num_steps": 4, "corrector_steps": 1,
                       "snr": 0.3, "t_eps": 0.03, "start": "condition", "seed": 7}
    _stamp(path, 256, 64, mode="sampler", graph_kind="sampler", task="enhancement", num_sources=1,
           input_names=["x", "condition", "t"], output_names=["score"], schedule=schedule_values)
    schedule = Schedule.from_metadata(read_onnx_metadata(path)["schedule"])
    condition = (0.5 * np.random.default_rng(1).standard_normal((1, 256))).astype(np.float32)
    noise = draw_noise(schedule, condition.shape, np.random.default_rng(schedule.seed))  # [9, 1, 256]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    sample = pc_sample(OnnxScore(session, ["x", "condition", "t"]), condition, schedule, noise)
    with torch.no_grad():
        reference = _torch_pc_sample(network, torch.from_numpy(condition), schedule, torch.from_numpy(noise)).numpy()
    assert sample.shape == condition.shape
    assert np.max(np.abs(sample - reference)) / max(1.0, float(np.abs(reference).max())) <= TOLERANCE
    assert np.abs(sample - condition).max() > 1e-3  # the loop did change the input

    # the engine runs the sampler per window, reproducibly: the first window is the loop above on it
    model = load_model(path)
    assert (model.mode, model.hop_length, model.algorithmic_latency) == ("sampler", 192, 256)
    signal = (0.5 * np.random.default_rng(2).standard_normal((1, 700))).astype(np.float32)
    first = model.process(signal)
    np.testing.assert_array_equal(first, model.process(signal))
    window = np.concatenate([np.zeros((1, 64), np.float32), signal[:, :192]], axis=-1)  # [-O, H)
    with torch.no_grad():
        expected = _torch_pc_sample(network, torch.from_numpy(window), schedule, torch.from_numpy(
            draw_noise(schedule, window.shape, np.random.default_rng(schedule.seed)))).numpy()
    assert np.max(np.abs(first[:, :192] - expected[:, :192])) <= TOLERANCE


def test_chunk_mode_imports_no_torch():
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys, realtime.chunk, realtime.sampler, speechkit.crossfade; print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    assert result.stdout.strip() == "False"
