"""``speechkit convert asteroid``: synthetic asteroid-layout files, one-line errors, --force."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from speechkit.checkpoint import load_checkpoint, read_metadata
from speechkit.cli import EXIT_OK, EXIT_USAGE, main
from speechkit.models import build_model


def _asteroid_file(path: Path, causal: bool = True, drop: str | None = None) -> Path:
    """A torch.save-d asteroid ConvTasNet package built from a random tiny speechkit model.

    asteroid's key names equal ours except the causal depthwise conv (``shared_block.3.0``).
    """
    torch.manual_seed(0)
    overrides: dict[str, Any] = {"n_src": 2, "sample_rate": 8000}
    if causal:
        overrides.update(causal=True, norm_type="cLN")
    model = build_model("conv_tasnet", "tiny", **overrides)
    config = model.config
    state = {}
    for key, tensor in model.state_dict().items():
        parts = key.split(".")
        if causal and len(parts) == 6 and parts[:2] == ["masker", "TCN"] and parts[3:5] == ["shared_block", "3"]:
            key = ".".join([*parts[:5], "0", parts[5]])
        state[key] = tensor.clone()
    if drop is not None:
        del state[drop]
    model_args = {
        "fb_name": "free", "n_filters": config.n_filters, "kernel_size": config.kernel_size,
        "stride": config.stride, "sample_rate": 8000.0, "in_chan": config.n_filters, "out_chan": None,
        "n_src": config.n_src, "bn_chan": config.bn_chan, "hid_chan": config.hid_chan,
        "skip_chan": config.skip_chan, "conv_kernel_size": config.conv_kernel_size, "n_blocks": config.n_blocks,
        "n_repeats": config.n_repeats, "norm_type": "cgLN" if causal else "gLN", "mask_act": config.mask_act,
        "causal": causal, "encoder_activation": None,
    }
    torch.save({"model_name": "ConvTasNet", "state_dict": state, "model_args": model_args,
                "infos": {"software_versions": {"torch_version": torch.__version__,  # a TorchVersion, as asteroid
                                                "asteroid_version": "0.4.4"}}}, path)
    return path


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_convert_writes_a_loadable_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = _asteroid_file(tmp_path / "ConvTasNet.pth")
    output = tmp_path / "converted.safetensors"
    assert main(["convert", "asteroid", str(source), "-o", str(output)]) == EXIT_OK
    line = _one_line(capsys.readouterr().out)
    assert str(output) in line and "conv_tasnet separation, 2 source(s), 8000 Hz" in line
    assert "offline (asteroid framing" in line  # reproduces asteroid: offline only
    assert read_metadata(output)["config"]["framing"] == "asteroid"
    assert main(["convert", "asteroid", str(source), "-o", str(output), "--force", "--framing", "causal"]) == EXIT_OK
    assert "streams with" in _one_line(capsys.readouterr().out)
    assert read_metadata(output)["config"]["framing"] == "causal" and load_checkpoint(output).supports_streaming
    metadata = read_metadata(output)
    assert metadata["model"] == "conv_tasnet" and metadata["provenance"]["converted_from"] == "asteroid"
    assert metadata["provenance"]["source_file"] == "ConvTasNet.pth"
    model = load_checkpoint(output)
    from torch.torch_version import TorchVersion

    with torch.serialization.safe_globals([TorchVersion]):
        package = torch.load(source, weights_only=True)
    assert torch.equal(model.state_dict()["encoder.filterbank._filters"],
                       package["state_dict"]["encoder.filterbank._filters"])
    assert torch.equal(model.state_dict()["masker.TCN.1.shared_block.3.weight"],
                       package["state_dict"]["masker.TCN.1.shared_block.3.0.weight"])


def test_existing_output_needs_force(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = _asteroid_file(tmp_path / "model.pth", causal=False)
    output = tmp_path / "out.safetensors"
    output.write_bytes(b"old")
    assert main(["convert", "asteroid", str(source), "-o", str(output)]) == EXIT_USAGE
    assert "pass --force" in _one_line(capsys.readouterr().err)
    assert output.read_bytes() == b"old"
    assert main(["convert", "asteroid", str(source), "-o", str(output), "--force"]) == EXIT_OK
    assert "offline (non-causal)" in capsys.readouterr().out
    assert read_metadata(output)["config"]["norm_type"] == "gLN"


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "does not exist"),
        ("text", "weights_only"),
        ("mismatch", "missing tensor(s): masker.TCN.2.res_conv.bias"),
        ("suffix", "must be a .safetensors file"),
        ("no_folder", "does not exist"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, case: str, message: str) -> None:
    output = tmp_path / "out.safetensors"
    source = tmp_path / "model.pth"
    if case == "text":
        source.write_text("not a checkpoint")
    elif case == "mismatch":
        _asteroid_file(source, drop="masker.TCN.2.res_conv.bias")
    elif case == "suffix":
        _asteroid_file(source)
        output = tmp_path / "out.pth"
    elif case == "no_folder":
        _asteroid_file(source)
        output = tmp_path / "nowhere" / "out.safetensors"
    assert main(["convert", "asteroid", str(source), "-o", str(output)]) == EXIT_USAGE
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("speechkit convert: error: ") and message in line
    assert not output.exists()


def test_unknown_source_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["convert", "naplab", str(tmp_path / "x.pth"), "-o", str(tmp_path / "x.safetensors")])
    assert raised.value.code == EXIT_USAGE
    assert "invalid choice" in capsys.readouterr().err
