"""Official TIGER import (``speechkit convert tiger``) on files of the reference's exact layout.

The reference key names and shapes below are written from the architecture description
(``BN.i.*``, ``separator.*``, ``mask.i.*``; 838 tensors for the speech model), independently of the
converter's own mapping, and the test files are built under them.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from speechkit.checkpoint import load_checkpoint, read_metadata
from speechkit.cli import EXIT_OK, main
from speechkit.convert import convert_checkpoint
from speechkit.convert.tiger import convert_tiger_state_dict, reference_state_dict, tiger_config
from speechkit.errors import CheckpointError
from speechkit.models.tiger import TIGER, TIGERConfig

#: constructor arguments as the hub mixin's config.json holds them: every argument of the reference
#: constructor, defaults included (narrow widths, real 67-band split)
ARGUMENTS = {"out_channels": 8, "in_channels": 16, "num_blocks": 2, "upsampling_depth": 3, "att_n_head": 4,
             "att_hid_chan": 4, "att_kernel_size": 8, "att_stride": 1, "win": 640, "stride": 160,
             "num_sources": 2, "sample_rate": 16000}
WIDTHS = [1] * 40 + [4] * 10 + [10] * 8 + [20] * 8 + [1]


def _reference_keys(widths: list[int], features: int, hidden: int, depth: int, sources: int = 2,
                    heads: int = 4, key_channels: int = 4) -> dict[str, tuple[int, ...]]:
    """Every key of the reference state dict with its shape."""
    keys: dict[str, tuple[int, ...]] = {}
    for index, width in enumerate(widths):
        keys.update({f"BN.{index}.0.weight": (2 * width,), f"BN.{index}.0.bias": (2 * width,),
                     f"BN.{index}.1.weight": (features, 2 * width, 1), f"BN.{index}.1.bias": (features,)})
        keys.update({f"mask.{index}.0.weight": (1,),
                     f"mask.{index}.1.weight": (4 * sources * width, features // sources, 1),
                     f"mask.{index}.1.bias": (4 * sources * width,)})

    def conv_norm(prefix: str, kernel: int, groups_in: int, bias: bool) -> None:
        keys[f"{prefix}.conv.weight"] = (hidden, groups_in, kernel)
        if bias:
            keys[f"{prefix}.conv.bias"] = (hidden,)
        keys[f"{prefix}.norm.weight"] = keys[f"{prefix}.norm.bias"] = (hidden,)

    for path in ("freq_path", "frame_path"):
        block = f"separator.{path}.0"
        keys.update({f"{block}.proj_1x1.conv.weight": (hidden, features, 1), f"{block}.proj_1x1.conv.bias": (hidden,),
                     f"{block}.proj_1x1.norm.weight": (hidden,), f"{block}.proj_1x1.norm.bias": (hidden,),
                     f"{block}.proj_1x1.act.weight": (1,)})
        for level in range(depth):
            conv_norm(f"{block}.spp_dw.{level}", 5, 1, True)
            for part in ("local_embedding", "global_embedding", "global_act"):
                conv_norm(f"{block}.loc_glo_fus.{level}.{part}", 1, 1, False)
                if level < depth - 1:
                    conv_norm(f"{block}.last_layer.{level}.{part}", 5, 1, False)
        conv_norm(f"{block}.globalatt.fc1", 1, hidden, False)
        conv_norm(f"{block}.globalatt.fc2", 1, hidden, False)
        keys.update({f"{block}.globalatt.dwconv.weight": (hidden, 1, 5), f"{block}.globalatt.dwconv.bias": (hidden,),
                     f"{block}.res_conv.weight": (features, hidden, 1), f"{block}.res_conv.bias": (features,)})
        attention = f"separator.{path}.1"
        projections = [(f"{attention}.{kind}.{head}", width) for kind, width in
                       (("Queries", key_channels), ("Keys", key_channels), ("Values", features // heads))
                       for head in range(heads)] + [(f"{attention}.attn_concat_proj", features)]
        for prefix, out in projections:
            keys.update({f"{prefix}.conv.weight": (out, features, 1, 1), f"{prefix}.conv.bias": (out,),
                         f"{prefix}.act.weight": (1,), f"{prefix}.norm.gamma": (1, out, 1, 1),
                         f"{prefix}.norm.beta": (1, out, 1, 1)})
        keys.update({f"separator.{path}.2.gamma": (1, features, 1, 1), f"separator.{path}.2.beta": (1, features, 1, 1)})
    keys.update({"separator.concat_block.0.weight": (features, 1, 1, 1), "separator.concat_block.0.bias": (features,),
                 "separator.concat_block.1.weight": (1,)})
    return keys


def _reference_model(seed: int = 0) -> TIGER:
    torch.manual_seed(seed)
    model = TIGER(TIGERConfig(features=8, hidden_channels=16, iterations=2, depth=3)).eval()
    with torch.no_grad():  # move norms and PReLUs off their initial values so a mix-up shows
        for name, parameter in model.named_parameters():
            if parameter.dim() == 1 or name.endswith("gamma") or name.endswith("beta"):
                parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def _hub_folder(folder: Path, model: TIGER, arguments: dict | None = None, drop: str | None = None,
                extra: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    state = reference_state_dict(model)
    if drop:
        del state[drop]
    if extra:
        state[extra] = torch.zeros(3)
    save_file({key: value.contiguous() for key, value in state.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(arguments or ARGUMENTS))
    return folder


def test_the_speech_model_produces_exactly_the_reference_keys_and_shapes() -> None:
    model = TIGER.from_preset("large")
    produced = {key: tuple(value.shape) for key, value in reference_state_dict(model).items()}
    expected = _reference_keys(WIDTHS, features=128, hidden=256, depth=5)
    assert len(expected) == 838
    assert produced == expected


def test_hub_folder_converts_key_complete_and_reproduces_the_model(tmp_path) -> None:
    model = _reference_model()
    assert {k: tuple(v.shape) for k, v in reference_state_dict(model).items()} == _reference_keys(WIDTHS, 8, 16, 3)
    folder = _hub_folder(tmp_path / "TIGER-speech", model)
    out = tmp_path / "tiger.safetensors"
    converted = convert_checkpoint("tiger", folder, out_path=out)
    x = 0.3 * torch.randn(1, 1, 8000)
    with torch.no_grad():
        assert torch.equal(converted(x), model(x))
        assert torch.equal(load_checkpoint(out)(x), model(x))
    metadata = read_metadata(out)
    assert metadata["provenance"]["converted_from"] == "tiger"
    assert metadata["config"]["iterations"] == 2 and metadata["config"]["features"] == 8


@pytest.mark.parametrize("variant", ["bin", "best_model", "lightning"])
def test_pytorch_files_load_weights_only(tmp_path, variant: str) -> None:
    model = _reference_model(seed=1)
    state = reference_state_dict(model)
    (tmp_path / "config.json").write_text(json.dumps(ARGUMENTS))
    if variant == "bin":
        path, package = tmp_path / "pytorch_model.bin", state
    elif variant == "best_model":  # serialize(): model_args is useless in the reference ({"n_sample_rate": 2})
        path, package = tmp_path / "best_model.pth", {"model_name": "TIGER", "state_dict": state,
                                                      "model_args": {"n_sample_rate": 2}, "infos": {}}
    else:
        path = tmp_path / "epoch=10.ckpt"
        package = {"state_dict": {"audio_model." + key: value for key, value in state.items()}, "epoch": 10}
    torch.save(package, path)
    converted = convert_checkpoint("tiger", path)
    assert all(torch.equal(converted.state_dict()[k], v) for k, v in model.state_dict().items())


def test_attention_arguments_map_onto_the_config_and_unused_ones_are_ignored() -> None:
    config = tiger_config({**ARGUMENTS, "att_n_head": 2, "att_hid_chan": 8, "att_kernel_size": 3, "att_stride": 2})
    assert (config.num_heads, config.key_channels) == (2, 8)
    plain = {key: value for key, value in ARGUMENTS.items() if not key.startswith("att_")}
    assert (tiger_config(plain).num_heads, tiger_config(plain).key_channels) == (4, 4)  # the reference defaults


def test_missing_and_unexpected_keys_are_one_line_errors(tmp_path) -> None:
    model = _reference_model()
    folder = _hub_folder(tmp_path / "a", model, drop="separator.frame_path.0.loc_glo_fus.2.global_act.norm.bias",
                         extra="separator.surprise.weight")
    with pytest.raises(CheckpointError) as error:
        convert_checkpoint("tiger", folder)
    message = str(error.value)
    assert "\n" not in message
    assert "1 missing tensor(s): separator.frame_path.0.loc_glo_fus.2.global_act.norm.bias" in message
    assert "1 unexpected tensor(s): separator.surprise.weight" in message


def test_wrong_sample_rate_window_and_band_count_are_refused_with_the_reason(tmp_path) -> None:
    model = _reference_model()
    folder = _hub_folder(tmp_path / "rate", model, arguments={**ARGUMENTS, "sample_rate": 8000})
    with pytest.raises(CheckpointError, match="sample_rate 8000 with win 640 does not give"):
        convert_checkpoint("tiger", folder)
    folder = _hub_folder(tmp_path / "window", model, arguments={**ARGUMENTS, "window": "hamming"})
    with pytest.raises(CheckpointError, match="TIGER uses a Hann"):
        convert_checkpoint("tiger", folder)
    folder = _hub_folder(tmp_path / "short", model, arguments={**ARGUMENTS, "win": 512, "stride": 128})
    with pytest.raises(CheckpointError, match="a band of 25 Hz is 0 bins"):
        convert_checkpoint("tiger", folder)
    folder = _hub_folder(tmp_path / "bands", model, arguments={**ARGUMENTS, "win": 1024, "stride": 256})
    with pytest.raises(CheckpointError, match="band widths differ from those of sample_rate 16000 with win 1024"):
        convert_checkpoint("tiger", folder)
    folder = _hub_folder(tmp_path / "unknown", model, arguments={**ARGUMENTS, "att_heads": 8})
    with pytest.raises(CheckpointError, match="unknown TIGER argument"):
        convert_checkpoint("tiger", folder)
    dnr_state = {f"{part}.{key}": value for part in ("dialog", "music")
                 for key, value in reference_state_dict(model).items()}
    with pytest.raises(CheckpointError, match="is a TIGER-DnR file \\(networks dialog, music\\)"):
        convert_tiger_state_dict(dnr_state, model)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        convert_checkpoint("tiger", folder / "model.safetensors")


def test_cli_convert_tiger_folder(tmp_path, capsys) -> None:
    folder = _hub_folder(tmp_path / "hub", _reference_model())
    out = tmp_path / "tiger.safetensors"
    assert main(["convert", "tiger", str(folder), "-o", str(out)]) == EXIT_OK
    assert "tiger separation, 2 source(s), 16000 Hz" in capsys.readouterr().out
    assert load_checkpoint(out).config.features == 8
    assert main(["convert", "tiger", str(folder), "-o", str(tmp_path / "x.safetensors"), "--framing", "causal"]) != 0
