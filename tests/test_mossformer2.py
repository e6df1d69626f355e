"""MossFormer2: paper size, block numerics against direct formulas, ONNX on several lengths, chunked speakers."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from speechkit.inference import process_array
from speechkit.models.mossformer2 import MossFormer2
from speechkit.nn.fsmn import DilatedDenseNet
from speechkit.nn.mossformer import MossFormerAttention, RotaryEmbedding

#: parameters of the official MossFormer2_SS_16K, measured on the released code
OFFICIAL_PARAMETERS = 55_735_000


@pytest.mark.parametrize(("preset", "rate"), [("paper", 16000), ("paper_8k", 8000)])
def test_paper_presets_have_the_official_size(preset: str, rate: int) -> None:
    with torch.device("meta"):
        model = MossFormer2.from_preset(preset)
    assert abs(model.num_parameters() - OFFICIAL_PARAMETERS) <= 0.005 * OFFICIAL_PARAMETERS
    assert model.sample_rate == rate and model.num_sources == 2
    config = model.config
    assert (config.encoder_kernel_size, config.stride, config.encoder_dim, config.num_layers) == (16, 8, 512, 24)
    assert model.encoder.activation == "relu" and model.encoder.framing == "unpadded"


def test_small_preset_is_a_reduction() -> None:
    with torch.device("meta"):
        small = MossFormer2.from_preset("small")
    assert 2_000_000 < small.num_parameters() < 10_000_000


def test_rotary_code_is_a_complex_rotation_of_adjacent_pairs() -> None:
    rotary = RotaryEmbedding(8)
    x = torch.randn(2, 37, 12, generator=torch.Generator().manual_seed(0))
    pairs = torch.view_as_complex(x[..., :8].reshape(2, 37, 4, 2).contiguous())  # [B, T, 4]
    freqs = 1.0 / 10000 ** (torch.arange(0, 8, 2).float() / 8)
    angles = torch.arange(37).float()[:, None] * freqs  # [T, 4]
    expected = torch.view_as_real(pairs * torch.polar(torch.ones_like(angles), angles)).reshape(2, 37, 8)
    output = rotary(x)
    torch.testing.assert_close(output[..., :8], expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(output[..., 8:], x[..., 8:])


def _reference_attention(block: MossFormerAttention, x: torch.Tensor) -> torch.Tensor:
    """The block written out directly: full-length similarities masked to the diagonal groups."""
    frames, group = x.shape[1], block.group_size
    half = x.shape[-1] // 2
    shifted = torch.cat([torch.cat([torch.zeros_like(x[:, :1, :half]), x[:, :-1, :half]], 1), x[..., half:]], -1)
    v, u = block.to_hidden(shifted).chunk(2, dim=-1)
    qk = block.to_qk(shifted)
    gamma, beta = block.qk_offset_scale.gamma, block.qk_offset_scale.beta
    quad_q, lin_q, quad_k, lin_k = (block.rotary_pos_emb(qk * gamma[h] + beta[h]) for h in range(4))
    same_group = (torch.arange(frames)[:, None] // group) == (torch.arange(frames)[None, :] // group)
    weights = torch.relu(quad_q @ quad_k.transpose(1, 2) / group) ** 2 * same_group  # [B, T, T]
    att_v = weights @ v + lin_q @ (lin_k.transpose(1, 2) @ v) / frames
    att_u = weights @ u + lin_q @ (lin_k.transpose(1, 2) @ u) / frames
    return x + block.to_out((att_u * v) * torch.sigmoid(att_v * u))


@pytest.mark.parametrize("frames", [5, 16, 41])
def test_joint_attention_equals_the_direct_formula(frames: int) -> None:
    torch.manual_seed(0)
    block = MossFormerAttention(16, RotaryEmbedding(4), group_size=16, query_key_dim=8, expansion_factor=2.0,
                                conv_kernel_size=5).eval()
    x = torch.randn(2, frames, 16)
    with torch.no_grad():
        torch.testing.assert_close(block(x), _reference_attention(block, x), atol=1e-5, rtol=1e-4)


def test_fsmn_memory_sees_both_sides_with_its_dilations() -> None:
    """Kernel 2*lorder-1 with dilations 1 and 2 and symmetric padding: an impulse at frame t reaches
    frames t - 3(lorder-1) .. t + 3(lorder-1) through the two memory convolutions (non-causal, 'same' length)."""
    lorder = 3
    net = DilatedDenseNet(channels=2, depth=2, lorder=lorder).eval()
    with torch.no_grad():
        for conv in (net.conv1, net.conv2):
            conv.weight.copy_(torch.rand(conv.weight.shape, generator=torch.Generator().manual_seed(2)) + 0.1)
        impulse = torch.zeros(1, 2, 41, 1)
        impulse[0, :, 20] = 1.0
        pad = torch.nn.functional.pad
        first = net.conv1(pad(impulse, (0, 0, net.paddings[0], net.paddings[0])))  # [1, 2, 41, 1]
        second = net.conv2(pad(torch.cat([first, impulse], 1), (0, 0, net.paddings[1], net.paddings[1])))
    assert first.shape == second.shape == impulse.shape
    touched = (second[0].abs().sum(0)[:, 0] > 0).nonzero().flatten()
    assert (touched.min().item(), touched.max().item()) == (20 - 3 * (lorder - 1), 20 + 3 * (lorder - 1))
    assert net(torch.randn(2, 2, 41, 1)).shape == (2, 2, 41, 1)


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")
def test_onnx_export_has_a_dynamic_length(tmp_path) -> None:
    """One export, several lengths (none a multiple of the attention group), ORT == PyTorch within 1e-4 of the peak."""
    from speechkit.export import export_onnx

    torch.manual_seed(0)
    model = MossFormer2.from_preset("tiny").eval()
    lengths = [1999, 4097, 8000, 14411]
    result = export_onnx(model, tmp_path / "mossformer2.onnx", chunk_lengths=lengths, tolerance=1e-4)
    assert result.max_abs_error <= 1e-4 and not result.streaming
    golden = np.load(result.golden_path)
    assert [golden[f"y_{index}"].shape[-1] for index in range(len(lengths))] == lengths


class _PermutingOracle(MossFormer2):
    """MossFormer2's chunk declarations around a separator whose behaviour the test controls.

    It splits the mixture at 1 kHz (talker A is low, talker B high) and returns the two halves in
    an order drawn from the chunk's content, so consecutive chunks disagree about the order as an
    untrained or real separator may.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft(x, dim=-1)  # [B, C, F]
        frequencies = torch.fft.rfftfreq(x.shape[-1], 1.0 / self.sample_rate)
        low = torch.fft.irfft(spectrum * (frequencies < 1000.0), n=x.shape[-1], dim=-1)  # [B, C, T]
        high = x - low
        swap = int(torch.round(x.abs().sum() * 1e3).item()) % 2 == 1
        return torch.stack([high, low] if swap else [low, high], dim=1)  # [B, 2, C, T]


def _alternating_talkers(rate: int, turns: int = 12, turn_seconds: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """Talker A (tones under 1 kHz) and B (tones above) taking turns with 0.4 s of double talk."""
    rng = np.random.default_rng(0)
    total = int(turns * turn_seconds * rate)
    time_axis = np.arange(total) / rate
    talkers = np.zeros((2, total), dtype=np.float32)
    for turn in range(turns):
        speaker = turn % 2
        start = int(turn * turn_seconds * rate)
        stop = min(total, int(((turn + 1) * turn_seconds + 0.4) * rate))
        pitches = rng.uniform(150, 600, 3) if speaker == 0 else rng.uniform(1800, 3500, 3)
        tone = sum(np.sin(2 * np.pi * pitch * time_axis[start:stop]) for pitch in pitches) / 3
        talkers[speaker, start:stop] += 0.3 * tone.astype(np.float32)
    return talkers[0], talkers[1]


def test_alternating_talkers_stay_on_one_output_across_chunks() -> None:
    """30 s at MossFormer2's 4 s / 1 s chunks: 10 chunks, each with its own order; the joins re-align them."""
    model = _PermutingOracle(MossFormer2.presets["tiny"]).eval()
    spec = model.inference_spec
    talker_a, talker_b = _alternating_talkers(model.sample_rate)
    mixture = (talker_a + talker_b)[None]  # [1, T]

    def run(align: bool) -> np.ndarray:
        from speechkit.inference.runners import ChunkedRunner

        runner = ChunkedRunner(model, [[0]], int(spec.chunk_seconds * model.sample_rate),
                               int(spec.overlap_seconds * model.sample_rate), align_sources=align)
        output = np.concatenate([runner.push(mixture), runner.flush()], axis=-1)[:, 0]  # [2, T]
        assert runner.chunks_processed >= 9
        return output

    def leak_db(output: np.ndarray) -> float:
        """Worst over outputs of (energy of the other talker / energy of its own) in dB, own = the larger."""
        worst = -np.inf
        for estimate in output:
            energies = [float(np.dot(estimate, talker) ** 2 / np.dot(talker, talker)) for talker in (talker_a, talker_b)]
            worst = max(worst, 10 * np.log10(min(energies) / max(energies) + 1e-12))
        return worst

    aligned = run(align=True)
    assert aligned.shape == (2, mixture.shape[-1])
    assert leak_db(aligned) < -20.0  # each output holds one talker all along
    assert leak_db(run(align=False)) > -10.0  # without re-alignment the talkers swap between chunks
    assert process_array(model, mixture, model.sample_rate, chunk_seconds=spec.chunk_seconds,
                         overlap_seconds=spec.overlap_seconds).shape == (2, 1, mixture.shape[-1])


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy torch.onnx exporter, on purpose
def test_realtime_chunk_mode_runs_the_export_like_offline_chunks(tmp_path) -> None:
    """``speechkit export --chunk`` then ``speechkit stream``: equal to PyTorch chunks on the engine's windows."""
    soundfile = pytest.importorskip("soundfile")
    from speechkit.cli import main
    from speechkit.export import read_onnx_metadata
    from speechkit.inference.runners import ChunkedRunner
    from speechkit.models import build_model

    from speechkit.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_model("mossformer2", "tiny").eval()
    checkpoint = save_checkpoint(model, tmp_path / "mossformer2.safetensors")
    target = tmp_path / "mossformer2.onnx"
    assert main(["export", str(checkpoint), "-o", str(target), "--chunk", "0.25", "--overlap", "0.0625"]) == 0
    meta = read_onnx_metadata(target)
    window, overlap = 4000, 1000
    assert (meta["mode"], meta["chunk_length"], meta["overlap_length"]) == ("chunk", window, overlap)
    x = (0.3 * np.random.default_rng(3).standard_normal((1, 9000))).astype(np.float32)
    soundfile.write(tmp_path / "in.wav", x[0], 16000, subtype="FLOAT")
    assert main(["stream", "--model", str(target), "--input", str(tmp_path / "in.wav"),
                 "--output", str(tmp_path / "out.wav"), "--quiet"]) == 0
    streamed, rate = soundfile.read(tmp_path / "out.wav", dtype="float32", always_2d=True)  # [T, S]
    padded = np.concatenate([np.zeros((1, overlap), np.float32), x, np.zeros((1, 2 * window), np.float32)], -1)
    runner = ChunkedRunner(model, [[0]], window, overlap)
    reference = np.concatenate([runner.push(padded), runner.flush()], -1)[:, 0, overlap : overlap + x.shape[-1]]
    assert rate == 16000 and streamed.shape == (9000, 2)
    assert np.max(np.abs(streamed.T - reference)) / max(1.0, float(np.abs(reference).max())) <= 1e-4


def test_bf16_option_runs_under_autocast_close_to_float32() -> None:
    torch.manual_seed(0)
    model = MossFormer2.from_preset("tiny").eval()
    x = 0.3 * torch.randn(1, 1, 4000, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        reference = model(x)
        model.set_options({"bf16": "true"})
        bf16_output = model(x)
    assert bf16_output.dtype == torch.float32 and not torch.equal(bf16_output, reference)
    error = (bf16_output - reference).pow(2).sum() / reference.pow(2).sum()
    assert 10 * torch.log10(error) < -20.0  # within 20 dB of the float32 output (35.8 dB for the paper preset)


def test_activation_checkpointing_recomputes_every_layer_with_equal_gradients() -> None:
    import copy

    from recipes.training.step import enable_activation_checkpointing

    torch.manual_seed(0)
    model = MossFormer2.from_preset("tiny", dropout=0.0).train()
    checkpointed = copy.deepcopy(model)
    wrapped = enable_activation_checkpointing(checkpointed)
    assert len(wrapped) == 2 * model.config.num_layers and all("mossformerM" in name for name in wrapped)
    x = 0.3 * torch.randn(2, 1, 3000, generator=torch.Generator().manual_seed(5))
    for network in (model, checkpointed):
        network(x).pow(2).mean().backward()
    for (name, plain), (_, recomputed) in zip(model.named_parameters(), checkpointed.named_parameters()):
        torch.testing.assert_close(recomputed.grad, plain.grad, msg=name)
