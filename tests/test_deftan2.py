"""DeFTAN-II: paper sizes, reference behaviour, causal variant, converter and the array file path."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F

from conftest import speech_like, write_audio_file
from speechkit.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from speechkit.cli import EXIT_OK, main
from speechkit.convert.deftan2 import convert_deftan2_checkpoint
from speechkit.errors import CheckpointError, ConfigError
from speechkit.models.deftan2 import DeFTAN2, DeFTAN2Config, unfold_neighbours
from speechkit.nn.linear_attention import causal_linear_attention
from speechkit.nn.split_dense import SingleGroupNorm


# ---------------------------------------------------------------------- sizes
@pytest.mark.parametrize(
    ("preset", "expected", "paper"),
    [("base", 3_997_988, 3.998e6), ("large", 7_712_804, 7.71e6),
     ("base_8mic", 4_016_420, 3.998e6), ("large_8mic", 7_731_236, 7.71e6)],
)
def test_parameter_counts_on_the_meta_device(preset: str, expected: int, paper: float) -> None:
    with torch.device("meta"):
        model = DeFTAN2.from_preset(preset)
    assert model.num_parameters() == expected
    assert abs(model.num_parameters() - paper) / paper < 0.005  # within 0.5 % of the measured reference counts
    assert model.input_layout.num_microphones == model.config.num_microphones


def test_reference_key_layout_has_586_tensors_for_base() -> None:
    with torch.device("meta"):
        keys = set(DeFTAN2.from_preset("base").state_dict())
    assert len(keys) == 586
    assert _reference_keys(DeFTAN2Config()) == keys


# ---------------------------------------------------------------------- reference behaviour
def test_unfold_matches_torch_unfold_order() -> None:
    x = torch.randn(3, 5, 11)
    ours, _ = unfold_neighbours(x, 4, None, causal=False)
    reference = F.unfold(x[..., None], (4, 1))  # [N, C*4, L-3]
    assert torch.equal(ours, reference)


def _reference_forward(model: DeFTAN2, x: torch.Tensor) -> torch.Tensor:
    """The published DeFTAN-II forward pass written with plain torch ops on ``model``'s weights.

    torch.stft/istft, F.unfold, padded convs, F.group_norm over all frames, F.glu, F.prelu: an
    independent formulation of the signal flow (no streaming caches, no split modules).
    """
    config, weights = model.config, model.state_dict()
    hop, window_size, kernel = config.hop_length, config.n_fft, config.unfold_kernel
    length = x.shape[-1]
    rest = window_size - (hop + length % window_size) % window_size
    padded = torch.cat([x.new_zeros(*x.shape[:2], hop), x, x.new_zeros(*x.shape[:2], rest + hop)], dim=-1)
    level = torch.std(padded, dim=(1, 2), keepdim=True)
    batch, mics, samples = padded.shape
    window = torch.hann_window(window_size)
    spectrum = torch.stft((padded / level).reshape(batch * mics, samples), window_size, hop, window=window,
                          return_complex=True)  # [B*M, F, T]
    freqs, frames = spectrum.shape[-2:]
    features = torch.view_as_real(spectrum).reshape(batch, mics, freqs, frames, 2)
    features = features.permute(0, 1, 4, 3, 2).reshape(batch, 2 * mics, frames, freqs)  # [B, 2M, T, F]

    def w(name: str) -> torch.Tensor:
        return weights[name]

    def dense(h: torch.Tensor, prefix: str, groups: int) -> torch.Tensor:
        conv = F.conv1d if h.dim() == 3 else F.conv2d
        source = h[:, 0::groups]
        for index in range(groups):
            out = conv(source, w(f"{prefix}.blocks.{index}.0.weight"), w(f"{prefix}.blocks.{index}.0.bias"), padding=1)
            out = F.group_norm(out, 1, w(f"{prefix}.blocks.{index}.1.weight"), w(f"{prefix}.blocks.{index}.1.bias"))
            out = F.prelu(out, w(f"{prefix}.blocks.{index}.2.weight"))
            source = torch.cat([out, h[:, index + 1 :: groups]], dim=1)
        return out

    def attention(z: torch.Tensor, prefix: str) -> torch.Tensor:
        heads = config.num_heads
        local = F.glu(F.conv1d(z.transpose(1, 2), w(f"{prefix}.cv_qk.0.weight"), padding=1), dim=1).transpose(1, 2)
        split = [F.linear(source, w(f"{prefix}.to_{name}.weight")).unflatten(-1, (heads, -1)).transpose(1, 2)
                 for name, source in (("q", local), ("k", local), ("v", z))]
        summary = F.softmax(split[1], dim=2).transpose(-1, -2) @ split[2] * config.attention_dim**-0.5
        merged = (F.softmax(split[0], dim=3) @ summary).transpose(1, 2).flatten(2)
        return F.linear(merged, w(f"{prefix}.to_out.0.weight"), w(f"{prefix}.to_out.0.bias"))

    def feedforward(z: torch.Tensor, prefix: str, dilation: int) -> torch.Tensor:
        first = F.gelu(F.linear(z, w(f"{prefix}.PW1.0.weight"), w(f"{prefix}.PW1.0.bias")))
        second = F.gelu(F.linear(z, w(f"{prefix}.PW2.0.weight"), w(f"{prefix}.PW2.0.bias"))).transpose(1, 2)
        second = F.conv1d(second, w(f"{prefix}.DW_Conv.0.weight"), w(f"{prefix}.DW_Conv.0.bias"), dilation=dilation,
                          padding="same")
        second = F.group_norm(second, 1, w(f"{prefix}.DW_Conv.1.weight"), w(f"{prefix}.DW_Conv.1.bias"))
        second = F.prelu(second, w(f"{prefix}.DW_Conv.2.weight")).transpose(1, 2)
        return F.linear(torch.cat([first, second], dim=2), w(f"{prefix}.PW3.0.weight"), w(f"{prefix}.PW3.0.bias"))

    def path(h: torch.Tensor, prefix: str, dilation: int, along_time: bool) -> torch.Tensor:
        b, c, t, f = h.shape
        mean, var = h.mean(dim=1, keepdim=True), h.var(dim=1, unbiased=False, keepdim=True)
        normed = (h - mean) / torch.sqrt(var + config.eps) * w(f"{prefix}_norm.gamma") + w(f"{prefix}_norm.beta")
        seq = normed.permute(0, 3, 1, 2).reshape(b * f, c, t) if along_time else normed.transpose(1, 2).reshape(
            b * t, c, f)
        z = dense(F.unfold(seq[..., None], (kernel, 1)), f"{prefix}_inv", kernel).transpose(1, 2)
        z = attention(F.layer_norm(z, (c,), w(f"{prefix}_att.norm.weight"), w(f"{prefix}_att.norm.bias")),
                      f"{prefix}_att.fn") + z
        z = feedforward(F.layer_norm(z, (c,), w(f"{prefix}_ffw.norm.weight"), w(f"{prefix}_ffw.norm.bias")),
                        f"{prefix}_ffw.fn", dilation) + z
        out = F.conv_transpose1d(z.transpose(1, 2), w(f"{prefix}_linear.weight"), w(f"{prefix}_linear.bias"))
        out = out.reshape(b, f, c, t).permute(0, 2, 3, 1) if along_time else out.reshape(b, t, c, f).transpose(1, 2)
        return out + h

    hidden = F.conv2d(features, w("up_conv.0.weight"), w("up_conv.0.bias"), padding=1)
    hidden = dense(F.group_norm(hidden, 1, w("up_conv.1.weight"), w("up_conv.1.bias")), "up_conv.2", config.num_heads)
    for layer in range(config.num_layers):
        hidden = path(hidden, f"blocks.{layer}.F", 2**layer, along_time=False)
        hidden = path(hidden, f"blocks.{layer}.T", 2**layer, along_time=True)
    output = dense(F.conv2d(hidden, w("down_conv.0.weight"), w("down_conv.0.bias"), padding=1), "down_conv.1",
                   config.num_heads)  # [B, 2, T, F]
    estimate = torch.complex(output[:, 0], output[:, 1]).transpose(1, 2)  # [B, F, T]
    signal = torch.istft(estimate, window_size, hop, window=window)  # [B, samples]
    return signal[:, hop : hop + length] * level[:, 0]  # [B, T]


def test_model_equals_the_plain_formulation_of_the_published_forward_pass() -> None:
    torch.manual_seed(10)
    model = DeFTAN2.from_preset("tiny").eval()
    with torch.no_grad():
        for parameter in model.parameters():  # non-trivial norms and activations
            parameter.add_(0.1 * torch.randn_like(parameter))
        x = torch.from_numpy(speech_like(0.3, 16000, channels=4, seed=11))[None]
        ours, reference = model(x)[:, 0, 0], _reference_forward(model, x)
    assert ours.shape == reference.shape
    assert float((ours - reference).abs().max()) < 1e-5 * max(1.0, float(reference.abs().max()))


def test_offline_output_is_scale_equivariant_and_shaped() -> None:
    torch.manual_seed(0)
    model = DeFTAN2.from_preset("tiny").eval()
    x = torch.from_numpy(speech_like(0.25, 16000, channels=4))[None]
    with torch.no_grad():
        y = model(x)
        y_loud = model(4.0 * x)
    assert y.shape == (1, 1, 1, x.shape[-1])
    assert torch.allclose(y_loud, 4.0 * y, atol=1e-5 * float(y.abs().max()) * 4)


def test_causal_level_is_in_the_offline_models_units() -> None:
    # the causal network must see spectra of the size the offline one sees (input std 1), so that
    # offline weights are a warm start; the scale was once the spectral RMS, about 10x the time std
    torch.manual_seed(3)
    causal, offline = DeFTAN2.from_preset("small_causal"), DeFTAN2.from_preset("small")
    x = 0.05 * torch.randn(1, 4, 16000)
    spec = causal.stft(x)  # [1, 4, 2, F, N]
    normalised, scale, _ = causal._normalise(spec, torch.zeros(1, 2))
    assert abs(float(scale[..., -1]) / float(x.std()) - 1.0) < 0.05
    offline_size = offline.stft(x / x.std()).pow(2).mean().sqrt()
    assert abs(float(normalised[..., 8:].pow(2).mean().sqrt() / offline_size) - 1.0) < 0.05


def test_cumulative_group_norm_keeps_frame_levels_and_streams() -> None:
    torch.manual_seed(4)
    cumulative = SingleGroupNorm(3, time_statistics="cumulative").requires_grad_(False)
    per_frame = SingleGroupNorm(3, time_statistics="frame").requires_grad_(False)
    x = torch.randn(2, 3, 6, 5)  # [N, C, T, F]
    whole, (state,) = cumulative(x)
    for frame in (0, 3, 5):  # by hand: statistics over channels, bins and frames 0..t
        past = x[:, :, : frame + 1]
        mean = past.mean(dim=(1, 2, 3), keepdim=True)
        std = torch.sqrt(past.var(dim=(1, 2, 3), unbiased=False, keepdim=True) + 1e-5)
        torch.testing.assert_close(whole[:, :, frame], ((x[:, :, frame : frame + 1] - mean) / std)[:, :, 0])
    torch.testing.assert_close(whole[:, :, :1], per_frame(x)[0][:, :, :1])
    first, (middle,) = cumulative(x[:, :, :2])
    second, (last,) = cumulative(x[:, :, 2:], [middle])
    torch.testing.assert_close(torch.cat([first, second], dim=2), whole)
    torch.testing.assert_close(last, state)
    # a quiet frame after loud ones stays quiet; a per-frame norm lifts it to unit variance
    quiet = torch.cat([x[:, :, :5], 0.01 * x[:, :, 5:]], dim=2)
    assert float(cumulative(quiet)[0][:, :, 5].std()) < 0.2 < float(per_frame(quiet)[0][:, :, 5].std())
    with pytest.raises(ConfigError, match="time_statistics"):
        SingleGroupNorm(3, time_statistics="causal")


@pytest.mark.parametrize("causal_norm", ["frame", "cumulative"])
def test_both_causal_norms_stream_as_offline(causal_norm: str) -> None:
    torch.manual_seed(5)
    config = dataclasses.replace(DeFTAN2.presets["tiny_causal"], causal_norm=causal_norm)
    model = DeFTAN2(config).eval()
    x = 0.3 * torch.randn(1, 4, 32 * 20)
    with torch.no_grad():
        offline = model(x)
        state, pieces = model.initial_state(1), []
        for start in range(0, x.shape[-1], 64):
            y, state = model.forward_step(x[..., start : start + 64], state)
            pieces.append(y)
    delay = model.stream_delay
    streamed = torch.cat(pieces, dim=-1)
    torch.testing.assert_close(streamed[..., delay:], offline[..., : x.shape[-1] - delay], atol=1e-5, rtol=1e-4)
    with pytest.raises(ConfigError, match="causal_norm"):
        DeFTAN2Config(causal=True, causal_norm="global")


def test_causal_attention_at_each_position_equals_offline_attention_on_the_prefix() -> None:
    torch.manual_seed(1)
    queries = F.softmax(torch.randn(2, 3, 9, 4), dim=-1)
    keys, values = torch.randn(2, 3, 9, 4), torch.randn(2, 3, 9, 5)
    causal, _, _ = causal_linear_attention(queries, torch.exp(keys), values, torch.zeros(2, 3, 4, 5),
                                           torch.zeros(2, 3, 4), chunk=4)
    for end in (1, 4, 9):
        summary = torch.matmul(F.softmax(keys[:, :, :end], dim=2).transpose(-1, -2), values[:, :, :end])
        expected = torch.matmul(queries[:, :, end - 1 : end], summary)
        assert torch.allclose(causal[:, :, end - 1 : end], expected, atol=1e-5)


def test_causal_variant_never_looks_ahead_but_the_offline_model_does() -> None:
    torch.manual_seed(2)
    x = 0.3 * torch.randn(1, 4, 2048)
    changed = x.clone()
    changed[..., 1500:] += 0.5 * torch.randn(1, 4, 548)
    for preset, looks_ahead in (("tiny_causal", False), ("tiny", True)):
        model = DeFTAN2.from_preset(preset).eval()
        with torch.no_grad():
            before, after = model(x), model(changed)
        # the causal output up to a sample depends on input up to one window later at most (framing)
        limit = 1500 - model.config.n_fft
        difference = float((before[..., :limit] - after[..., :limit]).abs().max())
        assert (difference > 1e-4) == looks_ahead, (preset, difference)


def test_several_hops_per_step_equal_one_hop_steps() -> None:
    torch.manual_seed(7)
    model = DeFTAN2.from_preset("tiny_causal").eval()
    x = 0.3 * torch.randn(1, 4, 32 * 24)
    outputs = []
    with torch.no_grad():
        for hops in (1, 3):
            state, pieces = model.initial_state(1), []
            for start in range(0, x.shape[-1], hops * 32):
                y, state = model.forward_step(x[..., start : start + hops * 32], state)
                pieces.append(y)
            outputs.append(torch.cat(pieces, dim=-1))
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)


@pytest.mark.parametrize("preset", ["tiny", "tiny_causal"])
def test_silence_gives_finite_silence(preset: str) -> None:
    model = DeFTAN2.from_preset(preset).eval()
    with torch.no_grad():
        y = model(torch.zeros(1, 4, 1600))
    assert torch.isfinite(y).all() and float(y.abs().max()) < 1e-6


@pytest.mark.parametrize("preset", ["tiny", "tiny_causal"])
def test_pcm_objective_trains_both_variants(preset: str) -> None:
    """A few Adam steps on one batch lower the reference PCM loss (gradients reach every block)."""
    from recipes.training.objectives import build_objective

    torch.manual_seed(8)
    model = DeFTAN2.from_preset(preset).train()
    objective = build_objective({"name": "complex_spectral_mapping", "n_fft": 64, "hop_length": 32,
                                 "magnitude_weight": 0.0})
    clean = torch.from_numpy(speech_like(0.25, 16000, channels=1, seed=9))[None]  # [1, 1, T]
    mixture = clean.repeat(2, 4, 1) + 0.05 * torch.randn(2, 4, clean.shape[-1])  # [2, 4, T]
    batch = {"mixture": mixture, "targets": clean.repeat(2, 1, 1)[:, None]}  # targets [2, 1, 1, T]
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        optimiser.zero_grad()
        loss = objective.training_loss(model, batch)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0]
    assert all(parameter.grad is not None for parameter in model.parameters())


def test_causal_latency_is_one_window() -> None:
    model = DeFTAN2.from_preset("small_causal")
    assert model.algorithmic_latency == 512 and model.block_size == 256
    assert 1000 * model.algorithmic_latency / model.sample_rate == 32.0


def test_wrong_microphone_count_is_refused() -> None:
    from speechkit.errors import ConfigError

    with pytest.raises(ConfigError, match="4 microphones"):
        DeFTAN2.from_preset("tiny")(torch.zeros(1, 2, 800))


# ---------------------------------------------------------------------- converter
def _reference_keys(config: DeFTAN2Config) -> set[str]:
    """The reference implementation's state-dict keys, written out from its module tree."""
    def dense(prefix: str, groups: int) -> list[str]:
        return [f"{prefix}.blocks.{g}.{part}" for g in range(groups)
                for part in ("0.weight", "0.bias", "1.weight", "1.bias", "2.weight")]

    keys = ["up_conv.0.weight", "up_conv.0.bias", "up_conv.1.weight", "up_conv.1.bias",
            *dense("up_conv.2", config.num_heads), "down_conv.0.weight", "down_conv.0.bias",
            *dense("down_conv.1", config.num_heads)]
    for layer in range(config.num_layers):
        for axis in "FT":
            base = f"blocks.{layer}.{axis}"
            keys += [f"{base}_norm.gamma", f"{base}_norm.beta", *dense(f"{base}_inv", config.unfold_kernel),
                     f"{base}_att.norm.weight", f"{base}_att.norm.bias", f"{base}_att.fn.cv_qk.0.weight",
                     f"{base}_att.fn.to_q.weight", f"{base}_att.fn.to_k.weight", f"{base}_att.fn.to_v.weight",
                     f"{base}_att.fn.to_out.0.weight", f"{base}_att.fn.to_out.0.bias",
                     f"{base}_ffw.norm.weight", f"{base}_ffw.norm.bias", f"{base}_linear.weight", f"{base}_linear.bias"]
            keys += [f"{base}_ffw.fn.{name}" for name in (
                "PW1.0.weight", "PW1.0.bias", "PW2.0.weight", "PW2.0.bias", "DW_Conv.0.weight", "DW_Conv.0.bias",
                "DW_Conv.1.weight", "DW_Conv.1.bias", "DW_Conv.2.weight", "PW3.0.weight", "PW3.0.bias")]
    return set(keys)


def _official_state(config: DeFTAN2Config, seed: int = 0) -> dict[str, torch.Tensor]:
    """A reference-layout state dict: every key of :func:`_reference_keys` with random values."""
    torch.manual_seed(seed)
    shapes = {key: value.shape for key, value in DeFTAN2(config).state_dict().items()}
    assert set(shapes) == _reference_keys(config)
    return {key: 0.1 * torch.randn(shapes[key]) for key in sorted(_reference_keys(config))}


SMALL_OFFICIAL = DeFTAN2Config(num_layers=2, embed_dim=8, num_heads=2, attention_dim=6, hidden_dim=12,
                               num_microphones=6, n_fft=512, hop_length=256)


@pytest.mark.parametrize("wrapping", ["plain", "state_dict", "training_package", "data_parallel", "thop"])
def test_converter_accepts_state_dicts_and_wrappers(tmp_path, wrapping: str) -> None:
    state = _official_state(SMALL_OFFICIAL)
    if wrapping == "state_dict":
        payload: object = {"state_dict": state}
    elif wrapping == "training_package":
        payload = {"epoch": 3, "model": state, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}}
    elif wrapping == "data_parallel":
        payload = {f"module.{key}": value for key, value in state.items()}
    elif wrapping == "thop":
        payload = {**state, "total_ops": torch.zeros(1), "total_params": torch.zeros(1),
                   "blocks.0.F_linear.total_ops": torch.zeros(1)}
    else:
        payload = state
    source = tmp_path / "deftan2.pt"
    torch.save(payload, source)
    model = convert_deftan2_checkpoint(source, tmp_path / "out.safetensors")
    config = model.config
    assert (config.num_layers, config.embed_dim, config.num_heads, config.attention_dim, config.hidden_dim,
            config.num_microphones, config.unfold_kernel) == (2, 8, 2, 6, 12, 6, 4)
    assert all(torch.equal(model.state_dict()[key], value) for key, value in state.items())
    metadata = read_metadata(tmp_path / "out.safetensors")
    assert "inferred from weight shapes" in metadata["provenance"]["configuration"]
    assert metadata["input_layout"]["num_microphones"] == 6
    loaded = load_checkpoint(tmp_path / "out.safetensors")
    x = 0.1 * torch.randn(1, 6, 3000)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("preset", ["base", "large_8mic"])
def test_converter_infers_the_paper_configurations(tmp_path, preset: str) -> None:
    config = DeFTAN2.presets[preset]
    source = tmp_path / f"{preset}.pt"
    torch.save({"state_dict": _official_state(config)}, source)
    assert convert_deftan2_checkpoint(source).config == config


@pytest.mark.parametrize(("change", "message"), [("extra", r"1 unexpected tensor\(s\): blocks.0.F_att.fn.extra"),
                                                ("missing", r"1 missing tensor\(s\): blocks.1.T_linear.bias"),
                                                ("stranger", "unexpected entr")])
def test_converter_refuses_keys_it_cannot_place(tmp_path, change: str, message: str) -> None:
    state = _official_state(SMALL_OFFICIAL)
    if change == "extra":
        state["blocks.0.F_att.fn.extra"] = torch.zeros(2)
    elif change == "missing":
        del state["blocks.1.T_linear.bias"]
    else:
        state = {**{f"module.{key}": value for key, value in state.items()}, "step": torch.tensor(3)}
    source = tmp_path / "bad.pt"
    torch.save(state, source)
    with pytest.raises(CheckpointError, match=message) as error:
        convert_deftan2_checkpoint(source)
    assert "\n" not in str(error.value)


def test_convert_cli(tmp_path, capsys) -> None:
    source = tmp_path / "deftan2.pt"
    torch.save(_official_state(SMALL_OFFICIAL), source)
    output = tmp_path / "converted.safetensors"
    assert main(["convert", "deftan2", str(source), "-o", str(output)]) == EXIT_OK
    printed = capsys.readouterr().out
    assert "deftan2 multichannel_enhancement" in printed and "2 layers" in printed and "6 microphones" in printed
    assert main(["convert", "deftan2", str(source), "-o", str(output), "--force", "--framing", "causal"]) != EXIT_OK
    assert "--framing applies to asteroid checkpoints only" in capsys.readouterr().err


# ---------------------------------------------------------------------- array files end to end
@pytest.fixture(scope="module")
def tiny_array_checkpoint(tmp_path_factory) -> str:
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("deftan2") / "deftan2_tiny.safetensors"
    save_checkpoint(DeFTAN2.from_preset("tiny", dropout=0.0).eval(), path)
    return str(path)


def test_enhance_cli_takes_an_array_file_and_maps_channels_with_mics(tmp_path, capsys, tiny_array_checkpoint) -> None:
    audio = speech_like(0.5, 16000, channels=6, seed=4)
    array_file = write_audio_file(tmp_path / "array6.wav", audio, 16000, subtype="FLOAT")
    four = write_audio_file(tmp_path / "array4.wav", audio[[5, 4, 3, 2]], 16000, subtype="FLOAT")
    assert main(["enhance", str(four), "-o", str(tmp_path / "a.wav"), "--model", tiny_array_checkpoint]) == EXIT_OK
    assert main(["enhance", str(array_file), "-o", str(tmp_path / "b.wav"), "--model", tiny_array_checkpoint,
                 "--mics", "5,4,3,2"]) == EXIT_OK
    direct, rate = soundfile.read(str(tmp_path / "a.wav"), dtype="float32", always_2d=True)
    mapped, _ = soundfile.read(str(tmp_path / "b.wav"), dtype="float32", always_2d=True)
    assert rate == 16000 and direct.shape == (8000, 1)  # one enhanced channel: the reference microphone
    np.testing.assert_array_equal(direct, mapped)
    model = load_checkpoint(tiny_array_checkpoint)
    with torch.no_grad():
        expected = model(torch.from_numpy(audio[[5, 4, 3, 2]])[None])[0, 0, 0].numpy()
    assert float(np.abs(direct[:, 0] - expected).max()) < 1e-3  # one chunk: the file path is the model
    capsys.readouterr()
    two = write_audio_file(tmp_path / "array2.wav", audio[:2], 16000)
    assert main(["enhance", str(two), "-o", str(tmp_path / "c.wav"), "--model", tiny_array_checkpoint]) != EXIT_OK
    assert "expects 4 microphones but the input has 2 channel(s)" in capsys.readouterr().err
    assert main(["enhance", str(array_file), "-o", str(tmp_path / "d.wav"), "--model", tiny_array_checkpoint,
                 "--mics", "0,1"]) != EXIT_OK
    assert "pass 4 channel number(s) with --mics" in capsys.readouterr().err
    assert main(["enhance", str(array_file), "-o", str(tmp_path / "e.wav"),
                 "--model", tiny_array_checkpoint]) != EXIT_OK
    assert "of a fixed geometry but the input has 6 channels" in capsys.readouterr().err  # no silent first four


# ---------------------------------------------------------------------- ONNX Runtime engine
@pytest.mark.parametrize("preset", ["tiny_causal", "tiny"])
def test_realtime_engine_runs_both_variants_on_four_channels(tmp_path, preset: str) -> None:
    pytest.importorskip("onnxruntime")
    from realtime.model import load_model
    from speechkit.export import export_onnx

    torch.manual_seed(5)
    model = DeFTAN2.from_preset(preset).eval()
    if preset == "tiny":
        result = export_onnx(model, tmp_path / "deftan2.onnx", chunk_seconds=0.25, overlap_seconds=0.05)
    else:
        result = export_onnx(model, tmp_path / "deftan2.onnx", verify_steps=4)
    engine = load_model(result.onnx_path)
    assert engine.num_microphones == 4 and engine.input_layout == model.input_layout
    audio = speech_like(0.5, 16000, channels=4, seed=6)
    output = engine.process(audio)  # [1, T], trailing the input by the stream delay
    assert output.shape == (1, audio.shape[-1]) and np.isfinite(output).all()
    if preset == "tiny_causal":  # by blocks: equals the offline PyTorch output, delayed
        delay = model.stream_delay
        with torch.no_grad():
            offline = model(torch.from_numpy(audio)[None])[0, 0].numpy()  # [1, T]
        np.testing.assert_allclose(output[:, delay:], offline[:, : audio.shape[-1] - delay], atol=1e-4)
        # `speechkit stream` from a 6-channel file: --mics maps four of its channels in array order
        six = write_audio_file(tmp_path / "six.wav", np.concatenate([audio, audio[:2]])[[4, 5, 3, 2, 1, 0]], 16000,
                               subtype="FLOAT")
        assert main(["stream", "--model", str(result.onnx_path), "--input", str(six), "--output",
                     str(tmp_path / "streamed.wav"), "--mics", "5,4,3,2", "--quiet"]) == EXIT_OK
        streamed, _ = soundfile.read(str(tmp_path / "streamed.wav"), dtype="float32")
        np.testing.assert_allclose(streamed, offline[0], atol=1e-4)  # the file output is aligned with the input
    else:  # chunk mode: a sliding 0.25 s window, latency = the window
        assert result.metadata["mode"] == "chunk" and result.metadata["algorithmic_latency"] == 4000
