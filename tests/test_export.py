"""ONNX export: metadata, verification against PyTorch (and failing above tolerance), golden files, CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from speechkit.cli import main as cli_main  # noqa: E402
from speechkit.models import build_model  # noqa: E402
from speechkit.export import ExportError, ExportVerificationError, export_onnx, read_onnx_metadata  # noqa: E402
from test_realtime_support import make_tiny_model  # noqa: E402


def _causal_conv_tasnet():
    """A causal single-output tiny Conv-TasNet (a failure to build it fails the test; only onnx may skip)."""
    return build_model("conv_tasnet", "tiny", causal=True, norm_type="cLN", n_src=1).eval()


def test_streaming_export_metadata_and_golden(tmp_path):
    model = make_tiny_model()
    result = export_onnx(model, tmp_path / "tiny.onnx")
    assert result.streaming and result.onnx_path.is_file() and result.golden_path.is_file()
    assert result.max_abs_error <= result.tolerance
    meta = read_onnx_metadata(result.onnx_path)
    assert meta["graph_kind"] == "streaming"
    assert meta["sample_rate"] == 8000
    assert meta["block_size"] == meta["hop_length"] == 8
    assert meta["stream_delay"] == 8 and meta["lookahead"] == 8
    assert meta["algorithmic_latency"] == model.algorithmic_latency == 16
    assert meta["state_names"] == ["analysis_buffer", "frame_conv_cache", "overlap_tail"]
    assert meta["state_shapes"] == [[1, 8], [1, 12, 2], [1, 8]]
    assert meta["input_names"] == ["x", *meta["state_names"]]
    assert meta["output_names"] == ["y", *[name + "_out" for name in meta["state_names"]]]
    assert meta["frontend"]["win_length"] == 16 and meta["frontend"]["hop_length"] == 8
    assert meta["input_layout"] == {"num_microphones": 1, "far_end_channel": None, "reference_microphone": 0,
                                    "geometry": None}
    assert meta["inference"]["mode"] == "stream"
    assert meta["model_name"] == "tiny_streamer" and meta["speechkit_version"]
    assert meta["config"]["features"] == 12
    golden = np.load(result.golden_path)
    assert golden["x"].shape == (16, 1, 1, 8) and golden["y"].shape == (16, 1, 1, 1, 8)


def test_golden_matches_pytorch_stream(tmp_path):
    model = make_tiny_model(seed=3)
    result = export_onnx(model, tmp_path / "tiny.onnx", verify_steps=5)
    golden = np.load(result.golden_path)
    state = model.initial_state(1)
    with torch.no_grad():
        for step in range(5):
            y, state = model.forward_step(torch.from_numpy(golden["x"][step]), state)
            np.testing.assert_array_equal(y.numpy(), golden["y"][step])


def test_chunk_export_dynamic_length(tmp_path):
    model = make_tiny_model()
    result = export_onnx(model, tmp_path / "chunk.onnx", streaming=False, chunk_lengths=(800, 333))
    meta = read_onnx_metadata(result.onnx_path)
    assert meta["graph_kind"] == "chunk" and meta["state_names"] == []
    import onnxruntime

    session = onnxruntime.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((1, 1, 517)).astype(np.float32)
    (y,) = session.run(None, {"x": x})
    with torch.no_grad():
        np.testing.assert_allclose(y, model(torch.from_numpy(x)).numpy(), atol=1e-5)


def test_verification_failure_raises_and_writes_nothing(tmp_path):
    model = make_tiny_model()
    original_step = model.forward_step

    def noisy_step(x_block, state):  # random noise: ONNX Runtime cannot reproduce PyTorch's draw
        y, new_state = original_step(x_block, state)
        return y + torch.rand_like(y), new_state

    model.forward_step = noisy_step
    with pytest.raises(ExportVerificationError, match="tolerance"):
        export_onnx(model, tmp_path / "bad.onnx", verify_steps=3)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_and_non_streaming(tmp_path):
    model = make_tiny_model()
    export_onnx(model, tmp_path / "m.onnx", verify_steps=2)
    with pytest.raises(Exception, match="exists"):
        export_onnx(model, tmp_path / "m.onnx", verify_steps=2)
    with pytest.raises(ExportError):
        export_onnx(model, tmp_path / "m2.onnx", hops_per_step=0)


def _assert_onnx_stream_equals_offline(model, onnx_path, channels: int = 1) -> np.ndarray:
    """ONNX Runtime block by block on 800 random samples == PyTorch offline, delayed by stream_delay."""
    from realtime.model import StreamModel

    x = np.random.default_rng(0).standard_normal((channels, 800)).astype(np.float32)
    streamed = StreamModel(onnx_path).process(x)  # [1, 800]
    with torch.no_grad():
        offline = model(torch.from_numpy(x)[None]).numpy().reshape(1, -1)  # [1, T]
    delay = model.stream_delay
    np.testing.assert_allclose(streamed[:, delay:], offline[:, :-delay], atol=1e-4)
    return streamed


def test_conv_tasnet_streaming_export_and_hops_per_step(tmp_path):
    model = _causal_conv_tasnet()
    one = export_onnx(model, tmp_path / "ct1.onnx", verify_steps=6)
    two = export_onnx(model, tmp_path / "ct2.onnx", hops_per_step=2, verify_steps=6)
    meta_one, meta_two = read_onnx_metadata(one.onnx_path), read_onnx_metadata(two.onnx_path)
    assert meta_one["algorithmic_latency"] == model.algorithmic_latency
    assert meta_two["block_size"] == 2 * model.block_size
    assert meta_two["algorithmic_latency"] == 2 * model.block_size + model.stream_delay
    streamed_one = _assert_onnx_stream_equals_offline(model, one.onnx_path)
    np.testing.assert_allclose(streamed_one, _assert_onnx_stream_equals_offline(model, two.onnx_path), atol=1e-5)


def test_conv_tasnet_lookahead_export(tmp_path):
    """Mask lookahead: one more state buffer and a longer delay; ONNX Runtime equals PyTorch offline."""
    torch.manual_seed(0)
    model = build_model("conv_tasnet", "tiny", n_src=1, causal=True, norm_type="cLN", lookahead_frames=3).eval()
    result = export_onnx(model, tmp_path / "la.onnx", hops_per_step=2, verify_steps=6)
    assert read_onnx_metadata(result.onnx_path)["algorithmic_latency"] == 2 * 8 + 8 + 3 * 8
    _assert_onnx_stream_equals_offline(model, result.onnx_path)


def test_multichannel_conv_tasnet_export(tmp_path):
    """A 3-microphone encoder exports with [1, 3, block] input; ONNX Runtime equals PyTorch offline."""
    torch.manual_seed(0)
    model = build_model("conv_tasnet", "tiny", n_src=1, input_channels=3, causal=True, norm_type="cLN").eval()
    result = export_onnx(model, tmp_path / "mc.onnx", verify_steps=6)
    assert read_onnx_metadata(result.onnx_path)["num_input_channels"] == 3
    _assert_onnx_stream_equals_offline(model, result.onnx_path, channels=3)


def test_cli_export(tmp_path, capsys):
    _causal_conv_tasnet()
    target = tmp_path / "tiny.onnx"
    assert cli_main(["export", "conv_tasnet:tiny", "-o", str(target)]) == 0
    assert target.is_file() and (tmp_path / "tiny.golden.npz").is_file()
    assert read_onnx_metadata(target)["graph_kind"] == "chunk"  # the tiny preset is not causal
    assert "ONNX Runtime vs PyTorch" in capsys.readouterr().out
    assert cli_main(["export", "conv_tasnet:tiny", "-o", str(target)]) == 2  # exists, no --force
    assert cli_main(["export", "no_such_arch:tiny", "-o", str(tmp_path / "x.onnx")]) == 2
    assert cli_main(["export", "conv_tasnet", "--preset", "tiny", "-o", str(target), "--force", "--chunk"]) == 0
    assert cli_main(["export", "conv_tasnet", "--preset", "tiny", "-o", str(target), "--force", "--streaming"]) == 2


def test_cli_export_checkpoint_path(tmp_path):
    from speechkit.checkpoint import save_checkpoint

    model = _causal_conv_tasnet()
    checkpoint = save_checkpoint(model, tmp_path / "causal.safetensors")
    target = tmp_path / "causal.onnx"
    assert cli_main(["export", str(checkpoint), "-o", str(target), "--streaming", "--hops-per-step", "2"]) == 0
    meta = read_onnx_metadata(target)
    assert meta["graph_kind"] == "streaming" and meta["block_size"] == 2 * model.block_size
    assert meta["config"]["causal"] is True
