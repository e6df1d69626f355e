"""asteroid Conv-TasNet conversion, on synthetic files with asteroid's exact dict and key layout."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from conftest import PickleExploit, write_pickle
from speechkit.checkpoint import load_checkpoint, read_metadata
from speechkit.convert import convert_checkpoint
from speechkit.convert.asteroid import asteroid_key_to_speechkit, convert_asteroid_checkpoint
from speechkit.errors import CheckpointError
from speechkit.frontend.framing import causal_pad
from speechkit.models.conv_tasnet import ConvTasNet

EPS = 1e-8


def _asteroid_args(**overrides: Any) -> dict[str, Any]:
    """model_args as asteroid writes them (filterbank config merged with the masker config)."""
    args = {
        "fb_name": "free", "n_filters": 16, "kernel_size": 16, "stride": 8, "sample_rate": 8000.0,
        "in_chan": 16, "out_chan": None, "n_src": 2, "bn_chan": 8, "hid_chan": 12, "skip_chan": 6,
        "conv_kernel_size": 3, "n_blocks": 3, "n_repeats": 2, "norm_type": "gLN", "mask_act": "sigmoid",
        "causal": False, "encoder_activation": None,
    }
    args.update(overrides)
    return args


def _asteroid_state(args: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under asteroid's ConvTasNet key names and shapes (dossier section 6)."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.3) -> torch.Tensor:
        return scale * torch.randn(*shape, generator=generator)

    n, bn, hid, skip = args["n_filters"], args["bn_chan"], args["hid_chan"], args["skip_chan"]
    kernel = args["conv_kernel_size"]
    state = {
        "encoder.filterbank._filters": rand(n, 1, args["kernel_size"]),
        "masker.bottleneck.0.gamma": 1 + rand(n, scale=0.1),
        "masker.bottleneck.0.beta": rand(n, scale=0.1),
        "masker.bottleneck.1.weight": rand(bn, n, 1),
        "masker.bottleneck.1.bias": rand(bn),
    }
    depthwise = "shared_block.3.0" if args["causal"] else "shared_block.3"
    for index in range(args["n_blocks"] * args["n_repeats"]):
        prefix = f"masker.TCN.{index}."
        state.update({
            prefix + "shared_block.0.weight": rand(hid, bn, 1),
            prefix + "shared_block.0.bias": rand(hid),
            prefix + "shared_block.1.weight": torch.full((1,), 0.25) + rand(1, scale=0.05),
            prefix + "shared_block.2.gamma": 1 + rand(hid, scale=0.1),
            prefix + "shared_block.2.beta": rand(hid, scale=0.1),
            prefix + depthwise + ".weight": rand(hid, 1, kernel),
            prefix + depthwise + ".bias": rand(hid),
            prefix + "shared_block.4.weight": torch.full((1,), 0.25) + rand(1, scale=0.05),
            prefix + "shared_block.5.gamma": 1 + rand(hid, scale=0.1),
            prefix + "shared_block.5.beta": rand(hid, scale=0.1),
            prefix + "res_conv.weight": rand(bn, hid, 1),
            prefix + "res_conv.bias": rand(bn),
        })
        if skip:
            state[prefix + "skip_conv.weight"] = rand(skip, hid, 1)
            state[prefix + "skip_conv.bias"] = rand(skip)
    state["masker.mask_net.0.weight"] = torch.full((1,), 0.25)
    state["masker.mask_net.1.weight"] = rand(args["n_src"] * n, skip or bn, 1)
    state["masker.mask_net.1.bias"] = rand(args["n_src"] * n)
    state["decoder.filterbank._filters"] = rand(n, 1, args["kernel_size"])
    return state


def _write(path: Path, args: dict[str, Any], state: dict[str, torch.Tensor]) -> Path:
    """Save the package exactly as asteroid's recipes do: ``model.serialize()`` updated with the data infos.

    ``serialize()`` stores ``torch.__version__`` itself, a ``torch.torch_version.TorchVersion``
    object since torch 1.10, which a plain ``torch.load(weights_only=True)`` refuses.
    """
    package = {
        "model_name": "ConvTasNet",
        "state_dict": state,
        "model_args": args,
        "infos": {"software_versions": {"torch_version": torch.__version__, "pytorch_lightning_version": "1.9.5",
                                        "asteroid_version": "0.4.4"}},
    }
    package.update({"dataset": "WHAM", "task": "sep_clean", "licenses": [{"title": "WHAM!", "license": "CC BY-NC 4.0"}]})
    torch.save(package, path)
    return path


# ----------------------------------------------------------------- independent reference forward
def _reference_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, kind: str) -> torch.Tensor:
    """asteroid norms by their definitions: gLN, cLN (per frame), cgLN (cumulative, frame loop)."""
    if kind == "gLN":
        mean = x.mean(dim=(1, 2), keepdim=True)
        var = ((x - mean) ** 2).mean(dim=(1, 2), keepdim=True)
        normed = (x - mean) / torch.sqrt(var + EPS)
    elif kind == "cLN":
        mean = x.mean(dim=1, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=1, keepdim=True)
        normed = (x - mean) / torch.sqrt(var + EPS)
    else:  # cgLN
        columns = []
        for frame in range(x.shape[-1]):
            past = x[:, :, : frame + 1]
            mean = past.mean(dim=(1, 2), keepdim=True)
            var = ((past - mean) ** 2).mean(dim=(1, 2), keepdim=True)
            columns.append((x[:, :, frame : frame + 1] - mean) / torch.sqrt(var + EPS))
        normed = torch.cat(columns, dim=-1)
    return gamma[None, :, None] * normed + beta[None, :, None]


def _pad_x_to_y(x: torch.Tensor, length: int) -> torch.Tensor:
    """asteroid.utils.torch_utils.pad_x_to_y: right-pad with zeros or crop the last axis to ``length``."""
    return F.pad(x, (0, length - x.shape[-1])) if x.shape[-1] < length else x[..., :length]


def _reference_forward(state: dict[str, torch.Tensor], args: dict[str, Any], x: torch.Tensor,
                       framing: str = "asteroid") -> torch.Tensor:
    """asteroid's ConvTasNet computation from the raw tensors: ``x [B, T] -> [B, S, T]``.

    ``framing="asteroid"`` is exactly asteroid's: ``Encoder`` = ``Conv1d(1, N, L, stride, bias=False)``
    with no padding, ``Decoder`` = ``ConvTranspose1d(N, 1, L, stride, bias=False)``, then
    ``pad_x_to_y`` to the input length. ``"causal"`` feeds the same network speechkit's causally
    padded signal and crops the same way (speechkit's own framing).
    """
    window, hop, length = args["kernel_size"], args["stride"], x.shape[-1]
    signal = x[:, None] if framing == "asteroid" else causal_pad(x, window, hop)[:, None]  # [B, 1, T']
    features = F.conv1d(signal, state["encoder.filterbank._filters"], stride=hop)  # [B, N, F]
    kind = args["norm_type"]
    output = _reference_norm(features, state["masker.bottleneck.0.gamma"], state["masker.bottleneck.0.beta"], kind)
    output = F.conv1d(output, state["masker.bottleneck.1.weight"], state["masker.bottleneck.1.bias"])
    skip_sum = 0.0
    kernel = args["conv_kernel_size"]
    for index in range(args["n_blocks"] * args["n_repeats"]):
        prefix = f"masker.TCN.{index}."
        dilation = 2 ** (index % args["n_blocks"])
        hidden = F.conv1d(output, state[prefix + "shared_block.0.weight"], state[prefix + "shared_block.0.bias"])
        hidden = F.prelu(hidden, state[prefix + "shared_block.1.weight"])
        hidden = _reference_norm(hidden, state[prefix + "shared_block.2.gamma"], state[prefix + "shared_block.2.beta"], kind)
        if args["causal"]:  # pad (k-1)d on both sides, chop the right side
            pad = (kernel - 1) * dilation
            hidden = F.conv1d(hidden, state[prefix + "shared_block.3.0.weight"], state[prefix + "shared_block.3.0.bias"],
                              padding=pad, dilation=dilation, groups=hidden.shape[1])[..., :-pad]
        else:
            hidden = F.conv1d(hidden, state[prefix + "shared_block.3.weight"], state[prefix + "shared_block.3.bias"],
                              padding=(kernel - 1) * dilation // 2, dilation=dilation, groups=hidden.shape[1])
        hidden = F.prelu(hidden, state[prefix + "shared_block.4.weight"])
        hidden = _reference_norm(hidden, state[prefix + "shared_block.5.gamma"], state[prefix + "shared_block.5.beta"], kind)
        if args["skip_chan"]:
            skip_sum = skip_sum + F.conv1d(hidden, state[prefix + "skip_conv.weight"], state[prefix + "skip_conv.bias"])
        output = output + F.conv1d(hidden, state[prefix + "res_conv.weight"], state[prefix + "res_conv.bias"])
    score = F.prelu(skip_sum if args["skip_chan"] else output, state["masker.mask_net.0.weight"])
    score = F.conv1d(score, state["masker.mask_net.1.weight"], state["masker.mask_net.1.bias"])
    score = score.reshape(x.shape[0], args["n_src"], args["n_filters"], -1)
    masks = {"sigmoid": torch.sigmoid, "relu": torch.relu, "softmax": lambda s: torch.softmax(s, dim=1)}[args["mask_act"]](score)
    masked = (masks * features[:, None]).reshape(-1, args["n_filters"], features.shape[-1])
    decoded = F.conv_transpose1d(masked, state["decoder.filterbank._filters"], stride=hop)  # [B*S, 1, L']
    if framing == "asteroid":
        return _pad_x_to_y(decoded[:, 0], length).reshape(x.shape[0], args["n_src"], length)
    return decoded[:, 0, window - hop : window - hop + length].reshape(x.shape[0], args["n_src"], length)


@pytest.mark.parametrize(
    "overrides, our_norm",
    [
        ({}, "gLN"),
        ({"causal": True, "norm_type": "cgLN", "mask_act": "relu"}, "cLN"),
        ({"causal": True, "norm_type": "cLN", "mask_act": "softmax", "skip_chan": 0, "n_src": 3}, "chanLN"),
    ],
)
def test_convert_reproduces_reference_forward(tmp_path: Path, overrides: dict[str, Any], our_norm: str) -> None:
    args = _asteroid_args(**overrides)
    state = _asteroid_state(args)
    path = _write(tmp_path / "model.pth", args, state)
    model = convert_asteroid_checkpoint(path)
    assert isinstance(model, ConvTasNet)
    assert model.config.norm_type == our_norm and model.config.causal == args["causal"]
    assert model.num_sources == args["n_src"] and model.sample_rate == 8000
    # every asteroid tensor landed, unchanged, under its mapped name
    ours = model.state_dict()
    assert len(ours) == len(state)
    for key, tensor in state.items():
        assert torch.equal(ours[asteroid_key_to_speechkit(key)], tensor), key
    assert model.config.framing == "asteroid" and not model.supports_streaming
    x = torch.randn(2, 603, generator=torch.Generator().manual_seed(9))  # (603 - 16) % 8 != 0: a dropped tail
    with torch.no_grad():
        output = model(x[:, None])[:, :, 0]  # [B, S, T]
        expected = _reference_forward(state, args, x)
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-4)  # float32, the norms summed another way
    assert not output[..., -3:].any()  # asteroid's last frame ends before the last 3 samples: pad_x_to_y zeros
    causal = convert_asteroid_checkpoint(path, framing="causal")
    assert causal.supports_streaming == args["causal"]
    with torch.no_grad():
        causal_output = causal(x[:, None])[:, :, 0]
    torch.testing.assert_close(causal_output, _reference_forward(state, args, x, "causal"), atol=1e-5, rtol=1e-4)
    assert (causal_output - output).abs().max() > 1e-3  # the two framings really differ


def test_asteroid_framing_equals_plain_conv_encoder_and_decoder(tmp_path: Path) -> None:
    """The converted model == asteroid's Encoder/Decoder (plain conv1d / conv_transpose1d + pad_x_to_y) around the same masker."""
    args = _asteroid_args(causal=True, norm_type="cgLN", n_src=1, kernel_size=32, stride=16, sample_rate=16000)
    state = _asteroid_state(args, seed=5)
    model = convert_asteroid_checkpoint(_write(tmp_path / "model.pth", args, state))
    x = torch.randn(1, 16000, generator=torch.Generator().manual_seed(2))  # 1 s at 16 kHz
    with torch.no_grad():
        features = F.conv1d(x[:, None], state["encoder.filterbank._filters"], stride=16)  # [1, N, F], no padding
        masks = model.masker(features)  # [1, S, N, F]
        decoded = F.conv_transpose1d((masks * features[:, None])[:, 0], state["decoder.filterbank._filters"], stride=16)
        expected = _pad_x_to_y(decoded[:, 0], x.shape[-1])  # [1, T]
        output = model(x[:, None])[:, 0, 0]  # [1, T]
    torch.testing.assert_close(output, expected, atol=1e-6, rtol=1e-5)


def test_causal_key_mapping() -> None:
    assert asteroid_key_to_speechkit("masker.TCN.5.shared_block.3.0.weight") == "masker.TCN.5.shared_block.3.weight"
    assert asteroid_key_to_speechkit("masker.TCN.5.shared_block.3.bias") == "masker.TCN.5.shared_block.3.bias"
    assert asteroid_key_to_speechkit("masker.mask_net.1.weight") == "masker.mask_net.1.weight"


def test_paper_sized_layout_converts(tmp_path: Path) -> None:
    args = _asteroid_args(n_filters=512, in_chan=512, bn_chan=128, hid_chan=512, skip_chan=128,
                          n_blocks=8, n_repeats=3)
    state = _asteroid_state(args)
    assert len(state) == 345  # the dossier's tensor count
    model = convert_asteroid_checkpoint(_write(tmp_path / "paper.pth", args, state))
    assert model.num_parameters() == sum(tensor.numel() for tensor in state.values())


def test_hugging_face_bin_and_saved_checkpoint(tmp_path: Path) -> None:
    args = _asteroid_args(n_src=1, sample_rate=16000, kernel_size=32, stride=16, causal=True, norm_type="cgLN")
    state = _asteroid_state(args, seed=3)
    path = _write(tmp_path / "pytorch_model.bin", args, state)
    out_path = tmp_path / "converted.safetensors"
    model = convert_checkpoint("asteroid", path, out_path=out_path)
    assert model.task == "enhancement" and model.sample_rate == 16000 and not model.supports_streaming
    assert convert_checkpoint("asteroid", path, framing="causal").supports_streaming  # the causal framing streams
    metadata = read_metadata(out_path)
    assert metadata["model"] == "conv_tasnet" and metadata["sample_rate"] == 16000
    provenance = metadata["provenance"]
    assert provenance["converted_from"] == "asteroid"
    assert provenance["asteroid_model_args"]["norm_type"] == "cgLN"
    assert provenance["asteroid_infos"]["software_versions"]["asteroid_version"] == "0.4.4"
    assert provenance["asteroid_infos"]["software_versions"]["torch_version"] == str(torch.__version__)
    loaded = load_checkpoint(out_path)
    x = torch.randn(1, 1, 480)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(CheckpointError):
        convert_asteroid_checkpoint(path, out_path=out_path)  # exists, no overwrite
    convert_asteroid_checkpoint(path, out_path=out_path, overwrite=True)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"fb_name": "stft"}, "filterbank"),
        ({"fb_name": "param_sinc"}, "filterbank"),
        ({"mask_act": "gelu"}, "mask_act"),
        ({"norm_type": "BN"}, "norm_type"),
        ({"causal": True, "norm_type": "gLN"}, "causal"),
        ({"encoder_activation": "relu"}, "encoder_activation"),
    ],
)
def test_unsupported_configurations(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    args = _asteroid_args(**overrides)
    path = _write(tmp_path / "model.pth", args, _asteroid_state(_asteroid_args(causal=args["causal"])))
    with pytest.raises(CheckpointError, match=message):
        convert_asteroid_checkpoint(path)


def test_fb_name_class_spelling_accepted(tmp_path: Path) -> None:
    args = _asteroid_args(fb_name="FreeFB")
    state = _asteroid_state(args)
    model = convert_asteroid_checkpoint(_write(tmp_path / "model.pth", args, state))
    assert torch.equal(model.state_dict()["encoder.filterbank._filters"], state["encoder.filterbank._filters"])
    assert model.config.n_filters == args["n_filters"] and model.num_sources == args["n_src"]


def test_asteroid_serialize_layout_with_torch_version_object(tmp_path: Path) -> None:
    """The TorchVersion that asteroid's serialize() stores is allowed, and only for this load."""
    from torch.torch_version import TorchVersion

    args = _asteroid_args()
    path = _write(tmp_path / "best_model.pth", args, _asteroid_state(args))
    with pytest.raises(Exception, match="TorchVersion"):  # what users hit before: a plain weights-only load fails
        torch.load(path, weights_only=True)
    assert isinstance(torch.__version__, TorchVersion)
    out_path = tmp_path / "converted.safetensors"
    model = convert_asteroid_checkpoint(path, out_path=out_path)
    assert model.num_sources == 2
    versions = read_metadata(out_path)["provenance"]["asteroid_infos"]["software_versions"]
    assert versions["torch_version"] == str(torch.__version__) and versions["asteroid_version"] == "0.4.4"
    with pytest.raises(Exception, match="TorchVersion"):  # the allowance did not leak out of the conversion
        torch.load(path, weights_only=True)


def test_refused_file_names_the_real_cause(tmp_path: Path) -> None:
    package = {"model_name": "ConvTasNet", "state_dict": {}, "model_args": {}, "infos": {"when": Path("x")}}
    torch.save(package, tmp_path / "other_object.pth")
    with pytest.raises(CheckpointError) as raised:
        convert_asteroid_checkpoint(tmp_path / "other_object.pth")
    message = str(raised.value)
    assert "weights_only" in message and "Unsupported global" in message and "PosixPath" in message
    assert "\n" not in message and "can still be loaded" not in message


def test_leftover_missing_and_misshaped_keys_are_listed(tmp_path: Path) -> None:
    args = _asteroid_args()
    state = _asteroid_state(args)
    state["masker.extra_layer.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match="unconsumed.*masker.extra_layer.weight"):
        convert_asteroid_checkpoint(_write(tmp_path / "a.pth", args, state))
    state = _asteroid_state(args)
    del state["masker.TCN.4.res_conv.bias"]
    with pytest.raises(CheckpointError, match="missing.*masker.TCN.4.res_conv.bias"):
        convert_asteroid_checkpoint(_write(tmp_path / "b.pth", args, state))
    state = _asteroid_state(args)
    state["decoder.filterbank._filters"] = torch.zeros(16, 1, 32)
    with pytest.raises(CheckpointError, match="mis-shaped.*decoder.filterbank._filters"):
        convert_asteroid_checkpoint(_write(tmp_path / "c.pth", args, state))


def test_bad_files(tmp_path: Path, pickle_exploit: PickleExploit) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        convert_asteroid_checkpoint(tmp_path / "nothing.pth")
    text = tmp_path / "text.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="weights_only"):
        convert_asteroid_checkpoint(text)
    payload = {"model_args": {}, "state_dict": {}, "payload": pickle_exploit}
    pickled = write_pickle(tmp_path / "object.pth", payload, protocol=2)
    with pytest.raises(CheckpointError, match="weights_only"):
        convert_asteroid_checkpoint(pickled)
    assert not pickle_exploit.ran
    bare = tmp_path / "bare.pth"
    torch.save({"weight": torch.zeros(2)}, bare)
    with pytest.raises(CheckpointError, match="not an asteroid model file"):
        convert_asteroid_checkpoint(bare)
    other = tmp_path / "dprnn.pth"
    torch.save({"model_name": "DPRNNTasNet", "state_dict": {}, "model_args": {}}, other)
    with pytest.raises(CheckpointError, match="DPRNNTasNet"):
        convert_asteroid_checkpoint(other)
    no_src = tmp_path / "no_src.pth"
    args = _asteroid_args()
    del args["n_src"]
    _write(no_src, args, _asteroid_state(_asteroid_args()))
    with pytest.raises(CheckpointError, match="n_src"):
        convert_asteroid_checkpoint(no_src)
    with pytest.raises(CheckpointError, match="no converter"):
        convert_checkpoint("naplab", text)
    assert json.dumps(_asteroid_args())  # the synthetic model_args are plain JSON


def test_framing_option_is_checked_and_asteroid_framing_does_not_stream() -> None:
    from speechkit.errors import ConfigError
    from speechkit.models import build_model

    with pytest.raises(ConfigError, match="framing"):
        build_model("conv_tasnet", "tiny", framing="centered")
    model = build_model("conv_tasnet", "tiny", causal=True, norm_type="cLN", framing="asteroid")
    assert not model.supports_streaming
    with pytest.raises(ConfigError, match="offline only"):
        model.encoder.initial_state(1)
    assert build_model("conv_tasnet", "tiny", causal=True, norm_type="cLN").supports_streaming  # default: causal
