"""The pseudocomplex multidilated D3Net echo canceller and its building blocks."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from speechkit.checkpoint import load_checkpoint, save_checkpoint
from speechkit.errors import ConfigError
from speechkit.models import build_model, describe_presets, get_model_class
from speechkit.models.complex_d3net_aec import ComplexD3NetAEC, ComplexD3NetAECConfig
from speechkit.nn.complex import ComplexConv2d, ComplexFrameNorm, compress_magnitude
from speechkit.nn.d3net import D2Block, D3Block, MultidilatedComplexConv2d

PAPER_PARAMETERS = 354_000


def _warm_batch_norm(model: torch.nn.Module, x: torch.Tensor) -> None:
    """A few training-mode passes so batch-norm running statistics are not the identity."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
    model.eval()


def _random_split(total: int, generator: torch.Generator) -> list[int]:
    """Split ``total`` into a random number of random positive parts."""
    count = int(torch.randint(1, min(total, 6) + 1, (1,), generator=generator))
    cuts = sorted(torch.randperm(total - 1, generator=generator)[: count - 1].add(1).tolist())
    edges = [0, *cuts, total]
    return [end - start for start, end in zip(edges[:-1], edges[1:])]


# ----------------------------------------------------------------------------- registry and size
def test_registered_with_presets() -> None:
    assert get_model_class("complex_d3net_aec") is ComplexD3NetAEC
    rows = {row["preset"]: row for row in describe_presets() if row["name"] == "complex_d3net_aec"}
    assert {"paper", "tiny"} <= set(rows)
    for row in rows.values():
        assert row["task"] == "aec" and row["input_channels"] == 2 and row["causal"] and row["streaming"]
        assert row["algorithmic_latency_ms"] <= 32.0


def test_paper_preset_has_354k_parameters_and_32ms_latency() -> None:
    with torch.device("meta"):
        model = ComplexD3NetAEC.from_preset("paper")
    count = model.num_parameters()
    assert abs(count - PAPER_PARAMETERS) / PAPER_PARAMETERS < 0.02, count
    assert model.sample_rate == 16000
    assert model.block_size == 256 and model.stream_delay == 256
    assert model.algorithmic_latency == 512  # 32 ms at 16 kHz
    assert model.num_freqs == 257


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        ComplexD3NetAECConfig(norm="layer")
    with pytest.raises(ConfigError):
        ComplexD3NetAECConfig(mask_kernel=(3, 3))
    with pytest.raises(ConfigError):
        ComplexD3NetAECConfig(channels=0)


# ----------------------------------------------------------------------------- pseudocomplex layers
def test_complex_conv_matches_complex_arithmetic() -> None:
    torch.manual_seed(0)
    conv = ComplexConv2d(3, 4, kernel_size=(3, 2), dilation=(2, 3))
    x = torch.randn(2, 3, 2, 9, 7)
    y = conv(x)  # causal along time
    assert y.shape == (2, 4, 2, 9, 7)
    padded = torch.nn.functional.pad(x, (conv.time_context, 0, conv.freq_padding, conv.freq_padding))
    x_real, x_imag = padded[:, :, 0], padded[:, :, 1]
    w_real, w_imag = conv.weight[0], conv.weight[1]

    def real_conv(signal: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(signal, weight, dilation=conv.dilation)

    expected_real = real_conv(x_real, w_real) - real_conv(x_imag, w_imag) + conv.bias[0][None, :, None, None]
    expected_imag = real_conv(x_real, w_imag) + real_conv(x_imag, w_real) + conv.bias[1][None, :, None, None]
    torch.testing.assert_close(y[:, :, 0], expected_real, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y[:, :, 1], expected_imag, atol=1e-5, rtol=1e-5)
    # a complex weight has 2 reals per tap
    assert sum(p.numel() for p in conv.parameters()) == 2 * 3 * 4 * 3 * 2 + 2 * 4


def test_frame_norm_and_compression() -> None:
    x = torch.randn(2, 3, 2, 5, 4) * 10 + 3
    normed = ComplexFrameNorm(3)(x)
    assert torch.allclose(normed.mean(dim=(1, 2, 3)), torch.zeros(2, 4), atol=1e-5)
    spec = torch.randn(2, 1, 2, 5, 4)
    compressed = compress_magnitude(spec, 0.5)
    magnitude = spec.pow(2).sum(2).sqrt()
    torch.testing.assert_close(compressed.pow(2).sum(2).sqrt(), magnitude.sqrt(), atol=1e-4, rtol=1e-4)
    # phase kept
    torch.testing.assert_close(
        torch.atan2(compressed[:, :, 1], compressed[:, :, 0]), torch.atan2(spec[:, :, 1], spec[:, :, 0]),
        atol=1e-4, rtol=1e-4,
    )


def test_multidilated_conv_group_dilations_and_causality() -> None:
    torch.manual_seed(0)
    conv = MultidilatedComplexConv2d([2, 1, 1], 2, (3, 3), [(1, 1), (2, 2), (4, 4)])
    assert conv.time_context == 8
    x = torch.randn(1, 4, 2, 6, 20)
    y = conv(x)
    changed = x.clone()
    changed[..., 12:] += 1.0
    y_changed = conv(changed)
    torch.testing.assert_close(y[..., :12], y_changed[..., :12])  # the past does not see the future
    assert not torch.allclose(y[..., 12:], y_changed[..., 12:])


@pytest.mark.parametrize("norm", ["batch", "frame"])
def test_d3_block_chunked_equals_offline(norm: str) -> None:
    torch.manual_seed(1)
    block = D3Block(3, 4, num_d2_blocks=2, growth_rate=2, num_layers=3, norm=norm)
    x = torch.randn(2, 3, 2, 7, 30)
    _warm_batch_norm(block, x)
    with torch.no_grad():
        offline = block(x)
        generator = torch.Generator().manual_seed(7)
        for _ in range(3):
            histories = [x.new_zeros(shape) for shape in block.history_shapes(2, 7)]
            pieces, start = [], 0
            for size in _random_split(30, generator):
                piece, histories = block.forward_step(x[..., start : start + size], histories)
                pieces.append(piece)
                start += size
            torch.testing.assert_close(torch.cat(pieces, dim=-1), offline, atol=1e-5, rtol=1e-5)


def test_d2_block_receptive_field_is_causal_and_dilated() -> None:
    torch.manual_seed(0)
    block = D2Block(1, 2, num_layers=3, norm="none").eval()
    assert block.history_frames == 2 * 4
    impulse = torch.zeros(1, 1, 2, 5, 40)
    impulse[..., 10] = 1.0
    with torch.no_grad():
        response = block(impulse) - block(torch.zeros_like(impulse))
    active = response.abs().amax(dim=(0, 1, 2, 3)) > 1e-7
    assert not active[:10].any()
    assert active[10]
    # three layers with dilations 1, 2, 4 (kernel 3) reach 2 * (1 + 2 + 4) = 14 frames ahead
    assert active[10 + 14] and not active[10 + 15:].any()


# ----------------------------------------------------------------------------- the model
def test_forward_shapes_and_input_check() -> None:
    torch.manual_seed(0)
    model = build_model("complex_d3net_aec", "tiny").eval()
    x = torch.randn(2, 2, 1000) * 0.1  # not a multiple of the hop
    with torch.no_grad():
        y = model(x)
        near, echo = model.forward_with_echo(x)
    assert y.shape == (2, 1, 1, 1000) and torch.isfinite(y).all()
    torch.testing.assert_close(near, y)
    assert echo.shape == (2, 1, 1, 1000)
    with pytest.raises(ConfigError):
        model(torch.randn(2, 1, 1000))


def test_silent_far_end_gives_zero_echo_estimate() -> None:
    model = build_model("complex_d3net_aec", "tiny").eval()
    x = torch.zeros(1, 2, 640)
    x[:, 0] = torch.randn(640) * 0.1
    with torch.no_grad():
        _, echo = model.forward_with_echo(x)
    assert echo.abs().max() < 1e-6


def test_offline_output_is_causal() -> None:
    torch.manual_seed(0)
    model = build_model("complex_d3net_aec", "tiny", norm="frame").eval()
    x = torch.randn(1, 2, 1280) * 0.1
    changed = x.clone()
    changed[..., 800:] = torch.randn(1, 2, 480)
    with torch.no_grad():
        y, y_changed = model(x), model(changed)
    # offline sample n depends on input up to n + algorithmic_latency - 1 (its last frame); the
    # stream, delayed by stream_delay, emits it block_size samples after that input arrived
    safe = 800 - model.algorithmic_latency + 1
    torch.testing.assert_close(y[..., :safe], y_changed[..., :safe], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(y[..., 800:], y_changed[..., 800:])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("norm", ["batch", "frame"])
def test_streaming_equals_offline(seed: int, norm: str) -> None:
    torch.manual_seed(seed)
    model = build_model("complex_d3net_aec", "tiny", norm=norm)
    hop = model.block_size
    generator = torch.Generator().manual_seed(seed)
    steps = int(torch.randint(3, 13, (1,), generator=generator))  # a random number of chunks
    x = torch.randn(2, 2, steps * hop, generator=generator) * 0.1
    _warm_batch_norm(model, x)
    with torch.no_grad():
        offline = model(x)
        state = model.initial_state(2)
        assert len(state) == len(model.state_names())
        pieces = []
        for step in range(steps):
            block, state = model.forward_step(x[..., step * hop : (step + 1) * hop], state)
            assert block.shape == (2, 1, 1, hop)
            pieces.append(block)
    streamed = torch.cat(pieces, dim=-1)
    delay = model.stream_delay
    torch.testing.assert_close(streamed[..., delay:], offline[..., : steps * hop - delay], atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # several hops per call (random counts) give the same samples
        state, pieces, start = model.initial_state(2), [], 0
        while start < steps:
            count = min(steps - start, int(torch.randint(1, 5, (1,), generator=generator)))
            block, state = model.forward_step(x[..., start * hop : (start + count) * hop], state)
            pieces.append(block)
            start += count
    torch.testing.assert_close(torch.cat(pieces, dim=-1), streamed, atol=1e-5, rtol=1e-4)
    with pytest.raises(ConfigError, match="whole number"):
        model.forward_step(x[..., : hop + 1], model.initial_state(2))


def test_chunked_forward_equals_forward() -> None:
    torch.manual_seed(0)
    model = build_model("complex_d3net_aec", "tiny").eval()
    x = torch.randn(1, 2, 3000) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(model.forward_chunked(x, chunk_frames=5), model(x), atol=1e-5, rtol=1e-4)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    model = build_model("complex_d3net_aec", "tiny")
    x = torch.randn(2, 2, 640) * 0.1
    near, echo = model.forward_with_echo(x)
    (near.pow(2).mean() + echo.pow(2).mean()).backward()
    missing = [name for name, parameter in model.named_parameters() if parameter.grad is None]
    assert not missing


def test_checkpoint_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model("complex_d3net_aec", "tiny").eval()
    path = save_checkpoint(model, tmp_path / "aec.safetensors")
    loaded = load_checkpoint(path)
    x = torch.randn(1, 2, 500) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.slow
def test_paper_preset_streams_like_offline() -> None:
    torch.manual_seed(0)
    model = ComplexD3NetAEC.from_preset("paper").eval()
    hop = model.block_size
    steps = 5
    x = torch.randn(1, 2, steps * hop) * 0.1
    with torch.no_grad():
        offline = model(x)
        state = model.initial_state(1)
        pieces = []
        for step in range(steps):
            block, state = model.forward_step(x[..., step * hop : (step + 1) * hop], state)
            pieces.append(block)
    streamed = torch.cat(pieces, dim=-1)
    delay = model.stream_delay
    assert np.isfinite(streamed.numpy()).all()
    torch.testing.assert_close(streamed[..., delay:], offline[..., : steps * hop - delay], atol=1e-5, rtol=1e-4)


def test_streaming_onnx_export_matches_pytorch(tmp_path) -> None:
    """The exported one-hop graph equals forward_step over consecutive steps (states carried).

    Regression: the export used to leave the model in training mode, so the verification compared
    ONNX (batch norm with running statistics) against batch-statistics PyTorch steps (error ~0.9).
    """
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from speechkit.export import export_onnx

    torch.manual_seed(0)
    model = build_model("complex_d3net_aec", "tiny")
    _warm_batch_norm(model, torch.randn(2, 2, 1280) * 0.1)
    buffers = {name: value.clone() for name, value in model.named_buffers()}
    result = export_onnx(model, tmp_path / "aec_step.onnx", streaming=True, verify_steps=8)
    assert result.max_abs_error < result.tolerance
    assert not model.training and not any(module.training for module in model.modules())
    for name, value in model.named_buffers():  # the export did not update batch-norm statistics
        torch.testing.assert_close(value, buffers[name], atol=0, rtol=0)
    # an independent check over 12 steps of speech-like level input
    names = model.state_names()
    session = onnxruntime.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    torch_state = model.initial_state(1)
    onnx_state = [state.numpy() for state in model.initial_state(1)]
    generator = torch.Generator().manual_seed(3)
    for _ in range(12):
        block = torch.randn(1, 2, model.block_size, generator=generator) * 0.1
        with torch.no_grad():
            expected, torch_state = model.forward_step(block, torch_state)
        outputs = session.run(None, {"x": block.numpy(), **dict(zip(names, onnx_state))})
        onnx_state = outputs[1:]
        np.testing.assert_allclose(outputs[0], expected.numpy(), atol=1e-5)
        for onnx_value, torch_value in zip(onnx_state, torch_state):
            np.testing.assert_allclose(onnx_value, torch_value.numpy(), atol=1e-4)


# ----------------------------------------------------------------------------- meta device
@pytest.mark.parametrize("window", ["hann", "sqrt_hann", "hamming", "blackman", "rectangular"])
def test_stft_pair_builds_on_meta_device(window: str) -> None:
    from speechkit.frontend.stft import STFTConfig, stft_pair

    config = STFTConfig(64, 16, window=window, padding="causal", backend="conv")
    with torch.device("meta"):
        stft, istft = stft_pair(config)
    assert istft.kernel.is_meta and stft.kernel.is_meta
    # the invertibility check still runs (on the CPU) under the meta device
    with torch.device("meta"), pytest.raises(ConfigError):
        stft_pair(STFTConfig(64, 64, window="hann", padding="causal", backend="conv"))


def test_model_builds_on_meta_without_cpu_workaround() -> None:
    with torch.device("meta"):
        model = ComplexD3NetAEC.from_preset("tiny")
    assert model.istft.kernel.is_meta and model.input_conv.weight.is_meta
    reference = ComplexD3NetAEC.from_preset("tiny")
    assert model.num_parameters() == reference.num_parameters()


# ----------------------------------------------------------------------------- the aec training loss
def test_echo_aware_loss_silence_target_and_speech_target() -> None:
    from recipes.trainer import echo_aware_loss, training_loss
    from speechkit import losses

    generator = torch.Generator().manual_seed(0)
    microphone = torch.randn(2, 1600, generator=generator) * 0.1  # [B, T]
    silence = torch.zeros(2, 1, 1, 1600)
    passthrough = microphone[:, None, None]  # [B, 1, 1, T]
    # zero target: leaving the microphone in costs the floor (50 dB), silence costs nothing
    loss = echo_aware_loss(passthrough, silence, microphone, floor_db=50.0)
    torch.testing.assert_close(loss, torch.full((2,), 10 * np.log10(1 + 1e5), dtype=torch.float32), rtol=1e-4, atol=1e-3)
    assert echo_aware_loss(silence, silence, microphone).abs().max() < 1e-4
    quieter = echo_aware_loss(0.01 * passthrough, silence, microphone)  # 40 dB of echo suppression
    assert 9.0 < float(quieter.mean()) < 11.0  # 10 log10(1 + 10^(50 - 40) / 10)
    # speech target: the negative SNR (the floor is far below the speech)
    target = torch.randn(2, 1, 1, 1600, generator=generator) * 0.1
    estimate = target + 0.01 * torch.randn(2, 1, 1, 1600, generator=generator)
    torch.testing.assert_close(
        echo_aware_loss(estimate, target, microphone), -losses.snr(estimate, target).reshape(2), atol=1e-2, rtol=1e-3
    )
    # the trainer's aec loss: mean over items, plus the weighted echo-estimate term
    mixture = torch.stack([microphone, torch.randn(2, 1600, generator=generator)], dim=1)  # [B, 2, T]
    echo = microphone[:, None]  # [B, 1, T]
    near_only = training_loss("aec")(passthrough, silence, mixture)
    with_echo = training_loss("aec", echo_weight=0.5)(passthrough, silence, mixture, 0.5 * passthrough, echo)
    expected_echo = echo_aware_loss(0.5 * passthrough, passthrough, microphone).mean()
    torch.testing.assert_close(with_echo, near_only + 0.5 * expected_echo)


class _TinyEchoItems(torch.utils.data.Dataset):
    """Synthetic echo items: half far-end single talk (zero near end), half double talk."""

    sample_rate = 16000

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        generator = torch.Generator().manual_seed(index)
        far = torch.randn(1, 1600, generator=generator) * 0.1
        echo = 0.5 * torch.roll(far, 16, dims=-1)  # a 1 ms echo path
        near = torch.zeros(1, 1600) if index % 2 == 0 else torch.randn(1, 1600, generator=generator) * 0.05
        mic = near + echo
        return {"mixture": torch.cat([mic, far]), "targets": near[None], "echo": echo, "scenario": str(index % 2)}


def test_trainer_aec_task_trains_and_validates_with_erle(tmp_path) -> None:
    from recipes.trainer import DEFAULT_CONFIG, merge_config, run_training

    config = merge_config(DEFAULT_CONFIG, {
        "name": "aec_test", "task": "aec", "run_dir": str(tmp_path), "num_threads": 1,
        "model": {"name": "complex_d3net_aec", "preset": "tiny"},
        "data": {"train": {"factory": "unused:unused"}, "valid": {"factory": "unused:unused"}},
        "loss": {"echo_weight": 0.1}, "batch_size": 2, "max_steps": 2, "valid_every": 2,
        "checkpoint_every": 2, "log_every": 1, "progress": False,
    })
    assert run_training(config, train_dataset=_TinyEchoItems(4), valid_dataset=_TinyEchoItems(4)) == "done"
    header, row = (tmp_path / "valid_log.csv").read_text().strip().splitlines()[:2]
    values = dict(zip(header.split(","), row.split(",")))
    assert float(values["near_end_items"]) == 2 and float(values["far_end_items"]) == 2
    assert np.isfinite(float(values["erle"])) and np.isfinite(float(values["si_sdr"]))
    losses_logged = [float(line.split(",")[2]) for line in (tmp_path / "train_log.csv").read_text().splitlines()[1:]]
    assert len(losses_logged) == 2 and all(np.isfinite(losses_logged))
    assert (tmp_path / "best.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.skipif(
    not (Path(__file__).resolve().parents[2] / "shared" / "data").is_dir(), reason="needs ../shared/data"
)
def test_echo_options_reach_the_echo_dataset() -> None:
    from recipes.train import minicorpus_task

    dataset = minicorpus_task(
        task="echo", split="train", length=4, sample_rate=16000, segment_seconds=0.5,
        echo_options={"delay_range_ms": [0.0, 20.0], "scenario_weights": {"far_end_single_talk": 1.0}},
    )
    assert dataset.config.delay_range_ms == (0.0, 20.0)
    for index in range(2):
        item = dataset[index]
        assert item["scenario"] == "far_end_single_talk" and 0.0 <= item["delay_ms"] <= 20.0
        assert item["echo"].shape == (1, 8000) and float(item["targets"].abs().max()) == 0.0
    with pytest.raises(ConfigError):
        minicorpus_task(task="echo", echo_options={"delay_range": [0, 1]})


def test_aec_validation_scores_pesq_on_double_talk_items_only() -> None:
    pytest.importorskip("pesq")
    from recipes.training.distributed import DistributedContext
    from recipes.training.objectives import build_objective
    from recipes.training.validation import evaluate, validation_spec
    from speechkit import metrics

    time = torch.arange(16000) / 16000.0
    envelope = 0.5 * (1.0 + torch.sin(2 * math.pi * 3.0 * time))  # syllable-like 3 Hz modulation
    near = (envelope * sum(torch.sin(2 * math.pi * 150.0 * k * time) / k for k in range(1, 12)))[None] * 0.1
    echo = 0.05 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(0))
    silence = torch.zeros(1, 16000)
    items = [  # double talk, near-end single talk, far-end single talk
        {"mixture": torch.cat([near + echo, echo]), "targets": near[None], "echo": echo},
        {"mixture": torch.cat([near, echo]), "targets": near[None], "echo": silence},
        {"mixture": torch.cat([echo, echo]), "targets": silence[None], "echo": echo},
    ]

    class Microphone(torch.nn.Module):
        sample_rate = 16000

        def forward(self, mixture: torch.Tensor) -> torch.Tensor:
            return mixture[:, None, :1]  # [1, 2, T] -> [1, 1, 1, T]

    spec = validation_spec({"task": "aec", "validation": {"metrics": ["pesq_double_talk", "double_talk_items", "erle"]}})
    scores = evaluate(Microphone(), items, build_objective({"name": "echo_aware"}), spec, DistributedContext())
    assert scores["double_talk_items"] == 1.0
    assert scores["pesq_double_talk"] == pytest.approx(metrics.pesq(items[0]["mixture"][0], near[0], 16000), abs=1e-6)
    assert scores["pesq_double_talk"] < 4.0  # the untouched echo costs quality (the clean near end alone scores 4.6)
    assert scores["erle"] == pytest.approx(0.0, abs=1e-6)
    assert "pesq_double_talk" not in evaluate(
        Microphone(), items, build_objective({"name": "echo_aware"}), validation_spec({"task": "aec"}), DistributedContext())
