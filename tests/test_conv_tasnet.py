"""Conv-TasNet: sizes, shapes, key layout, causality, and streaming == offline."""
from __future__ import annotations

import pytest
import torch

from speechkit.errors import ConfigError
from speechkit.frontend import framing
from speechkit.frontend.filterbank import LearnedDecoder, LearnedEncoder
from speechkit.models import build_model, get_model_class
from speechkit.models.conv_tasnet import ConvTasNet, ConvTasNetConfig
from speechkit.nn.conv import DilatedDepthwiseConv1d
from speechkit.nn.norms import ChannelLayerNorm, CumulativeLayerNorm, GlobalLayerNorm, make_norm

PAPER_PARAMETERS = 5.051e6  # asteroid ConvTasNet(n_src=2), measured in the dossier


@pytest.fixture(autouse=True)
def _one_thread():
    """Many tiny ops per streaming step: intra-op threads only add sync waits on a loaded machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _meta_model(preset: str) -> ConvTasNet:
    with torch.device("meta"):
        return ConvTasNet.from_preset(preset)


def test_registry_and_presets() -> None:
    assert get_model_class("conv_tasnet") is ConvTasNet
    assert {"paper", "paper_causal", "tiny", "enhance_causal_16k"} <= set(ConvTasNet.presets)
    assert ConvTasNet.paper and "Luo" in ConvTasNet.paper


def test_paper_parameter_count_matches_dossier() -> None:
    paper = _meta_model("paper")
    assert abs(paper.num_parameters() - PAPER_PARAMETERS) / PAPER_PARAMETERS < 0.005
    assert len(paper.state_dict()) == 345  # asteroid's tensor count
    assert paper.task == "separation" and not paper.supports_streaming
    causal = _meta_model("paper_causal")
    assert causal.num_parameters() == paper.num_parameters()
    assert causal.causal and causal.supports_streaming and causal.config.norm_type == "cLN"
    assert causal.algorithmic_latency == 16 and causal.sample_rate == 8000


def test_enhance_preset() -> None:
    model = _meta_model("enhance_causal_16k")
    assert 1e6 <= model.num_parameters() <= 2e6
    assert model.task == "enhancement" and model.num_sources == 1
    assert model.sample_rate == 16000 and model.supports_streaming
    assert model.block_size == 32 and model.stream_delay == 32
    assert 1000 * model.algorithmic_latency / model.sample_rate == pytest.approx(4.0)
    assert model.describe()["task"] == "enhancement"
    lookahead = _meta_model("enhance_lookahead_16k")
    assert lookahead.num_parameters() == model.num_parameters()
    assert 1000 * lookahead.algorithmic_latency / lookahead.sample_rate == pytest.approx(16.0)


def test_state_dict_mirrors_asteroid_keys() -> None:
    keys = set(_meta_model("paper_causal").state_dict())
    for key in (
        "encoder.filterbank._filters",
        "decoder.filterbank._filters",
        "masker.bottleneck.0.gamma",
        "masker.bottleneck.1.weight",
        "masker.TCN.23.shared_block.0.weight",
        "masker.TCN.23.shared_block.1.weight",
        "masker.TCN.23.shared_block.2.beta",
        "masker.TCN.23.shared_block.3.weight",
        "masker.TCN.23.shared_block.3.bias",
        "masker.TCN.23.shared_block.5.gamma",
        "masker.TCN.0.res_conv.bias",
        "masker.TCN.0.skip_conv.weight",
        "masker.mask_net.0.weight",
        "masker.mask_net.1.bias",
    ):
        assert key in keys, key


@pytest.mark.parametrize("length", [1, 7, 800, 1237])
def test_forward_shapes(length: int) -> None:
    model = build_model("conv_tasnet", "tiny").eval()
    with torch.no_grad():
        output = model(torch.randn(2, 1, length))
    assert output.shape == (2, 2, 1, length)
    assert torch.isfinite(output).all()


def test_multichannel_is_per_channel() -> None:
    torch.manual_seed(0)
    model = build_model("conv_tasnet", "tiny", n_src=3).eval()
    x = torch.randn(2, 3, 900)
    with torch.no_grad():
        together = model(x)
        alone = torch.stack([model(x[:, c : c + 1])[:, :, 0] for c in range(3)], dim=2)
    assert together.shape == (2, 3, 3, 900)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_multichannel_encoder_mixes_microphones() -> None:
    """``input_channels = M``: [B, M, T] -> [B, S, 1, T]; every microphone reaches the output."""
    torch.manual_seed(0)
    model = build_model("conv_tasnet", "tiny", n_src=1, input_channels=4).eval()
    assert model.num_input_channels == 4 and model.num_output_channels == 1
    assert model.state_dict()["encoder.filterbank._filters"].shape == (16, 4, 16)  # [N, M, L]
    single = build_model("conv_tasnet", "tiny", n_src=1)
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in single.parameters())
    assert extra == 16 * 3 * 16  # only the encoder grows: N * (M - 1) * L
    x = torch.randn(2, 4, 900)
    with torch.no_grad():
        output = model(x)
        changed = x.clone()
        changed[:, 3] = 0.0  # silence the last microphone
        assert (model(changed) - output).abs().max() > 1e-4
    assert output.shape == (2, 1, 1, 900)
    with pytest.raises(ConfigError, match="4-channel input"):
        model(torch.randn(1, 2, 900))
    with pytest.raises(ConfigError, match="input_channels"):
        ConvTasNetConfig(input_channels=0)


@pytest.mark.parametrize("lookahead_frames", [0, 2])
def test_multichannel_encoder_streaming_equals_offline(lookahead_frames: int) -> None:
    torch.manual_seed(1)
    model = build_model(
        "conv_tasnet", "tiny", n_src=2, input_channels=3, causal=True, norm_type="cLN",
        lookahead_frames=lookahead_frames,
    ).eval()
    x = torch.randn(1, 3, 1000)
    state = model.initial_state(1)
    assert state[0].shape == (1, 3, model.config.kernel_size - model.config.stride)  # [B, M, L - stride]
    with torch.no_grad():
        offline = model(x)  # [1, 2, 1, 1000]
        blocks = []
        for start in range(0, 1000, 2 * model.block_size):
            block, state = model.forward_step(x[..., start : start + 2 * model.block_size], state)
            blocks.append(block)
    streamed = torch.cat(blocks, dim=-1)  # [1, 2, 1, 1000]
    delay = model.stream_delay
    torch.testing.assert_close(streamed[..., delay:], offline[..., : 1000 - delay], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mask_act", ["sigmoid", "relu", "softmax", "tanh", "linear"])
def test_mask_activations(mask_act: str) -> None:
    model = build_model("conv_tasnet", "tiny", mask_act=mask_act, skip_chan=0 if mask_act == "linear" else 8)
    features = torch.randn(1, 16, 20)
    masks = model.masker(features)
    assert masks.shape == (1, 2, 16, 20)
    if mask_act == "softmax":
        torch.testing.assert_close(masks.sum(dim=1), torch.ones(1, 16, 20))
    if mask_act in ("sigmoid", "relu"):
        assert masks.min() >= 0


def test_invalid_configs() -> None:
    with pytest.raises(ConfigError):
        ConvTasNetConfig(causal=True, norm_type="gLN")
    with pytest.raises(ConfigError):
        ConvTasNetConfig(mask_act="prelu")
    with pytest.raises(ConfigError):
        ConvTasNetConfig(norm_type="BN")
    with pytest.raises(ConfigError):
        ConvTasNetConfig(stride=32, kernel_size=16)
    with pytest.raises(ConfigError):
        build_model("conv_tasnet", "tiny").initial_state(1)  # non-causal cannot stream
    with pytest.raises(ConfigError):
        build_model("conv_tasnet", "tiny")(torch.randn(100))


def test_causal_model_ignores_the_future() -> None:
    torch.manual_seed(1)
    model = build_model("conv_tasnet", "tiny", causal=True, norm_type="cLN").eval()
    x = torch.randn(1, 1, 2000)
    changed = x.clone()
    changed[..., 1200:] = torch.randn(1, 1, 800)
    with torch.no_grad():
        before, after = model(x), model(changed)
    # offline output sample n overlaps frames reaching kernel - stride = 8 samples ahead (the
    # stream delay), and no further: outputs before 1200 - 8 are untouched
    torch.testing.assert_close(before[..., :1192], after[..., :1192], atol=1e-6, rtol=0)
    assert not torch.allclose(before[..., 1192:1200], after[..., 1192:1200])
    assert not torch.allclose(before[..., 1200:], after[..., 1200:])


@pytest.mark.parametrize(("norm_type", "lookahead_frames"), [("cLN", 0), ("chanLN", 0), ("cLN", 3)])
def test_streaming_equals_offline(norm_type: str, lookahead_frames: int) -> None:
    torch.manual_seed(2)
    model = build_model(
        "conv_tasnet", "tiny", causal=True, norm_type=norm_type, lookahead_frames=lookahead_frames
    ).eval()
    length = 4000  # 0.5 s at 8 kHz
    x = torch.randn(2, 1, length)
    block = model.block_size
    generator = torch.Generator().manual_seed(3)
    chunks = []
    start = 0
    while start < length:
        size = block * int(torch.randint(1, 9, (1,), generator=generator))
        chunks.append(x[..., start : start + size])
        start += size
    chunks[-1] = torch.nn.functional.pad(chunks[-1], (0, -chunks[-1].shape[-1] % block))
    with torch.no_grad():
        offline = model(x)
        state = model.initial_state(2)
        assert len(state) == len(model.state_names())
        outputs = []
        for chunk in chunks:
            output, state = model.forward_step(chunk, state)
            assert output.shape == (2, 2, 1, chunk.shape[-1])
            outputs.append(output)
    streamed = torch.cat(outputs, dim=-1)[..., :length]
    delay = model.stream_delay
    assert delay == framing.stream_delay(16, 8) + 8 * lookahead_frames
    torch.testing.assert_close(streamed[..., delay:], offline[..., : length - delay], atol=1e-5, rtol=1e-5)


def test_lookahead_sees_exactly_its_frames_ahead() -> None:
    torch.manual_seed(1)
    model = build_model("conv_tasnet", "tiny", causal=True, norm_type="cLN", lookahead_frames=4).eval()
    assert model.stream_delay == 8 + 4 * 8 and model.algorithmic_latency == 16 + 32
    assert model.state_names()[-2] == "lookahead_frames"
    assert model.initial_state(2)[-2].shape == (2, 16, 4)  # [B, N, lookahead_frames]
    x = torch.randn(1, 1, 2000)
    changed = x.clone()
    changed[..., 1200:] = torch.randn(1, 1, 800)
    with torch.no_grad():
        before, after = model(x), model(changed)
        causal = build_model("conv_tasnet", "tiny", causal=True, norm_type="cLN").eval()
        causal.load_state_dict(model.state_dict())  # same weights and keys, no lookahead
        plain = causal(x)
    # the output reaches stream_delay = 8 + 4 * 8 samples into the future and no further
    torch.testing.assert_close(before[..., :1160], after[..., :1160], atol=1e-6, rtol=0)
    assert not torch.allclose(before[..., 1160:1168], after[..., 1160:1168])
    assert not torch.allclose(plain, before)  # the masks come from 4 frames later
    with pytest.raises(ConfigError, match="causal"):
        ConvTasNetConfig(lookahead_frames=2)
    with pytest.raises(ConfigError, match="lookahead_frames"):
        ConvTasNetConfig(causal=True, norm_type="cLN", lookahead_frames=-1)


def test_state_names_and_shapes() -> None:
    model = build_model("conv_tasnet", "tiny", causal=True, norm_type="cLN")
    names = model.state_names()
    state = model.initial_state(3)
    assert names[0] == "encoder_buffer" and names[-1] == "decoder_overlap"
    assert len(set(names)) == len(names)
    shapes = dict(zip(names, (tuple(tensor.shape) for tensor in state)))
    assert shapes["encoder_buffer"] == (3, 8)
    assert shapes["decoder_overlap"] == (3, 2, 8)
    assert shapes["bottleneck_norm"] == (3, 3)
    assert shapes["tcn2_conv_cache"] == (3, 8, 16)  # time-major: (kernel 3 - 1) * dilation 4 frames of 16 channels
    with pytest.raises(ConfigError):
        model.forward_step(torch.zeros(3, 1, 5), state)
    with pytest.raises(ConfigError, match="state tensors"):
        model.forward_step(torch.zeros(3, 1, 8), state[:-1])
    # the per-frame norm needs no norm state, only conv caches and the filterbank buffers
    chan = build_model("conv_tasnet", "tiny", causal=True, norm_type="chanLN")
    assert all("norm" not in name for name in chan.state_names())


def test_training_step_reduces_loss() -> None:
    from speechkit.losses import pit_loss

    torch.manual_seed(4)
    model = build_model("conv_tasnet", "tiny")
    sources = torch.randn(2, 2, 1, 800)
    mixture = sources.sum(dim=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss, _ = pit_loss(model(mixture), sources)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# ------------------------------------------------------------------ building blocks
def test_filterbank_offline_matches_streaming() -> None:
    torch.manual_seed(5)
    encoder, decoder = LearnedEncoder(12, 16, 4), LearnedDecoder(12, 16, 4)
    x = torch.randn(2, 203)
    features = encoder(x)
    assert features.shape == (2, 12, framing.causal_num_frames(203, 16, 4))
    offline = decoder(features, 203)
    padded = torch.nn.functional.pad(x, (0, 208 - 203))
    enc_state, dec_state = encoder.initial_state(2), decoder.initial_state((2,))
    outputs = []
    for start in range(0, 208, 8):  # two hops per call
        frames, enc_state = encoder.forward_step(padded[:, start : start + 8], enc_state)
        assert frames.shape == (2, 12, 2)
        out, dec_state = decoder.forward_step(frames, dec_state)
        outputs.append(out)
    streamed = torch.cat(outputs, dim=-1)
    torch.testing.assert_close(streamed[:, 12:203], offline[:, : 203 - 12], atol=1e-5, rtol=1e-5)


def test_norms() -> None:
    torch.manual_seed(6)
    x = 3.0 + 2.0 * torch.randn(2, 8, 50)
    global_out = GlobalLayerNorm(8)(x)
    assert global_out.mean().abs() < 1e-5 and (global_out.var(unbiased=False) - 1).abs() < 1e-4
    torch.testing.assert_close(global_out, torch.nn.GroupNorm(1, 8, eps=1e-8)(x), atol=1e-5, rtol=1e-5)
    chan_out = ChannelLayerNorm(8)(x)
    torch.testing.assert_close(chan_out.mean(dim=1), torch.zeros(2, 50), atol=1e-5, rtol=0)
    cumulative = CumulativeLayerNorm(8)
    cum_out = cumulative(x)
    for frame in (0, 17, 49):  # by hand: stats over channels and frames 0..t
        past = x[:, :, : frame + 1]
        mean = past.mean(dim=(1, 2), keepdim=True)
        std = torch.sqrt(past.var(dim=(1, 2), unbiased=False, keepdim=True) + 1e-8)
        torch.testing.assert_close(cum_out[:, :, frame], ((x[:, :, frame : frame + 1] - mean) / std)[..., 0],
                                   atol=1e-4, rtol=1e-4)
    state = cumulative.initial_state(2)
    first, state = cumulative.forward_step(x[..., :20], state)
    second, state = cumulative.forward_step(x[..., 20:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=-1), cum_out, atol=1e-5, rtol=1e-5)
    assert state[:, 2].tolist() == [50.0, 50.0]
    state, frames = cumulative.initial_state(2), []  # one frame per step: the cumsum-free path
    for frame in range(50):
        output, state = cumulative.forward_step(x[..., frame : frame + 1], state)
        frames.append(output)
    torch.testing.assert_close(torch.cat(frames, dim=-1), cum_out, atol=1e-5, rtol=1e-5)
    assert state[:, 2].tolist() == [50.0, 50.0]
    with pytest.raises(ConfigError):
        make_norm("BN", 8)


def test_dilated_depthwise_conv() -> None:
    torch.manual_seed(7)
    conv = DilatedDepthwiseConv1d(4, 3, dilation=2, causal=False)
    reference = torch.nn.Conv1d(4, 4, 3, padding=2, dilation=2, groups=4)
    reference.load_state_dict(conv.state_dict())
    x = torch.randn(1, 4, 30)
    torch.testing.assert_close(conv(x), reference(x))
    causal = DilatedDepthwiseConv1d(4, 3, dilation=2, causal=True)
    offline = causal(x)
    cache = torch.zeros(causal.cache_shape(1))
    pieces = []
    for start in range(0, 30, 5):
        out, cache = causal.forward_step(x[..., start : start + 5], cache)
        pieces.append(out)
    torch.testing.assert_close(torch.cat(pieces, dim=-1), offline)
    cache, frames = torch.zeros(causal.cache_shape(1)), []  # one frame per step: the taps-only path
    for start in range(30):
        out, cache = causal.forward_step(x[..., start : start + 1], cache)
        frames.append(out)
    torch.testing.assert_close(torch.cat(frames, dim=-1), offline)
    torch.testing.assert_close(cache, x[0, :, -4:].T[None])  # the last (k - 1) * d frames, time-major
    with pytest.raises(ConfigError):
        DilatedDepthwiseConv1d(4, 2, dilation=1, causal=False)
