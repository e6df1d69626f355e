"""ClearerVoice MossFormer2 conversion, on synthetic files with the official dict and key layout."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import PickleExploit, write_pickle
from speechkit.checkpoint import load_checkpoint, read_metadata
from speechkit.cli import EXIT_OK, EXIT_USAGE, main
from speechkit.convert import convert_checkpoint
from speechkit.convert.clearervoice import convert_clearervoice_checkpoint
from speechkit.errors import CheckpointError

#: a small official-style configuration: the official code fixes the FFConvM kernel (17), the FSMN
#: order (20) and depth (2), 4 offset-scale heads and rotary dim min(32, query_key_dim)
SMALL = {"encoder_dim": 16, "kernel": 16, "dim": 16, "layers": 2, "speakers": 2, "qk": 8, "fsmn": 8}


def official_state(encoder_dim: int = 16, kernel: int = 16, dim: int = 16, layers: int = 2, speakers: int = 2,
                   qk: int = 8, fsmn: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the names and shapes ``MossFormer2_SS_16K(args).model.state_dict()`` writes."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return scale * torch.randn(*shape, generator=generator)

    def ffconvm(prefix: str, dim_in: int, dim_out: int, layer_norm: bool) -> dict[str, torch.Tensor]:
        norm = ({prefix + "mdl.0.weight": 1 + rand(dim_in), prefix + "mdl.0.bias": rand(dim_in)} if layer_norm
                else {prefix + "mdl.0.g": torch.ones(1) + rand(1)})
        return {**norm, prefix + "mdl.1.weight": rand(dim_out, dim_in), prefix + "mdl.1.bias": rand(dim_out),
                prefix + "mdl.3.sequential.1.conv.weight": rand(dim_out, 1, 17)}

    rotary_dim = min(32, qk)
    rotary = 1.0 / (10000 ** (torch.arange(0, rotary_dim, 2).float()[: rotary_dim // 2] / rotary_dim))
    state = {"enc.conv1d.weight": rand(encoder_dim, 1, kernel)}
    state.update({
        "mask_net.norm.weight": 1 + rand(encoder_dim), "mask_net.norm.bias": rand(encoder_dim),
        "mask_net.conv1d_encoder.weight": rand(dim, encoder_dim, 1),
        "mask_net.pos_enc.scale": torch.ones(1),
        "mask_net.pos_enc.inv_freq": 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim)),
    })
    stack = "mask_net.mdl.intra_mdl.mossformerM."
    for index in range(layers):
        layer = f"{stack}layers.{index}."
        state.update(ffconvm(layer + "to_hidden.", dim, 4 * dim, False))
        state.update(ffconvm(layer + "to_qk.", dim, qk, False))
        state.update({layer + "qk_offset_scale.gamma": rand(4, qk), layer + "qk_offset_scale.beta": rand(4, qk)})
        state.update(ffconvm(layer + "to_out.", 2 * dim, dim, False))
        state[layer + "rotary_pos_emb.freqs"] = rotary.clone()
    for index in range(layers):
        block = f"{stack}fsmn.{index}."
        state.update({
            block + "conv1.0.weight": rand(fsmn, dim, 1), block + "conv1.0.bias": rand(fsmn),
            block + "conv1.1.weight": torch.full((1,), 0.25),
            block + "norm1.weight": 1 + rand(fsmn), block + "norm1.bias": rand(fsmn),
        })
        state.update(ffconvm(block + "gated_fsmn.to_u.", fsmn, fsmn, True))
        state.update(ffconvm(block + "gated_fsmn.to_v.", fsmn, fsmn, True))
        memory = block + "gated_fsmn.fsmn."
        state.update({
            memory + "linear.weight": rand(fsmn, fsmn), memory + "linear.bias": rand(fsmn),
            memory + "project.weight": rand(fsmn, fsmn),
        })
        for depth in (1, 2):
            state.update({
                f"{memory}conv.conv{depth}.weight": rand(fsmn, depth, 39, 1),
                f"{memory}conv.norm{depth}.weight": 1 + rand(fsmn), f"{memory}conv.norm{depth}.bias": rand(fsmn),
                f"{memory}conv.prelu{depth}.weight": torch.full((fsmn,), 0.25),
            })
        state.update({
            block + "norm2.weight": 1 + rand(fsmn), block + "norm2.bias": rand(fsmn),
            block + "conv2.weight": rand(dim, fsmn, 1), block + "conv2.bias": rand(dim),
        })
    state.update({
        "mask_net.mdl.intra_mdl.norm.weight": 1 + rand(dim), "mask_net.mdl.intra_mdl.norm.bias": rand(dim),
        "mask_net.mdl.intra_norm.weight": 1 + rand(dim), "mask_net.mdl.intra_norm.bias": rand(dim),
        "mask_net.prelu.weight": torch.full((1,), 0.25),
        "mask_net.conv1d_out.weight": rand(speakers * dim, dim, 1), "mask_net.conv1d_out.bias": rand(speakers * dim),
        "mask_net.output.0.weight": rand(dim, dim, 1), "mask_net.output.0.bias": rand(dim),
        "mask_net.output_gate.0.weight": rand(dim, dim, 1), "mask_net.output_gate.0.bias": rand(dim),
        "mask_net.conv1_decoder.weight": rand(encoder_dim, dim, 1),
        "dec.weight": rand(encoder_dim, 1, kernel),
    })
    return state


def _write(path: Path, state: dict[str, torch.Tensor], ddp: bool = False, optimizer: bool = True,
           wrapped: bool = True) -> Path:
    """Save like ClearerVoice's trainer: ``{"model": ..., "optimizer": ..., counters}`` (or a bare state dict)."""
    model_state = {("module." + key if ddp else key): value for key, value in state.items()}
    package: Any = model_state
    if wrapped:
        package = {"model": model_state, "epoch": 12, "step": 3400}
        if optimizer:
            package["optimizer"] = {
                "state": {index: {"step": torch.tensor(3.0), "exp_avg": torch.zeros_like(value),
                                  "exp_avg_sq": torch.zeros_like(value)} for index, value in enumerate(state.values())},
                "param_groups": [{"lr": 1.5e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-5,
                                  "params": list(range(len(state)))}],
            }
    torch.save(package, path)
    return path


def test_paper_layout_has_the_official_tensor_count() -> None:
    """The full-size layout: 1099 official tensors = speechkit's tensors + 24 rotary copies + inv_freq."""
    with torch.device("meta"):
        from speechkit.models.mossformer2 import MossFormer2

        model = MossFormer2.from_preset("paper")
    official = official_state(encoder_dim=512, dim=512, layers=2, qk=128, fsmn=256)  # two layers are enough to count
    per_layer = sum(1 for key in official if ".layers.0." in key or ".fsmn.0." in key)
    fixed = len(official) - 2 * per_layer
    assert fixed + 24 * per_layer == 1099
    assert len(model.state_dict()) + 24 + 1 == 1099


@pytest.mark.parametrize("ddp", [False, True])
def test_official_file_converts_with_every_tensor_in_place(tmp_path, ddp: bool) -> None:
    state = official_state(**{key: SMALL[key] for key in SMALL})
    path = _write(tmp_path / "last_best_checkpoint.pt", state, ddp=ddp)
    out = tmp_path / "mossformer2.safetensors"
    model = convert_checkpoint("clearervoice", path, out_path=out)
    config = model.config
    assert (config.encoder_dim, config.encoder_kernel_size, config.model_dim, config.num_layers) == (16, 16, 16, 2)
    assert (config.query_key_dim, config.expansion_factor, config.rotary_dim) == (8, 4.0, 8)
    assert (config.fsmn_channels, config.fsmn_lorder, config.fsmn_depth, config.conv_kernel_size) == (8, 20, 2, 17)
    ours = model.state_dict()
    assert torch.equal(ours["encoder.filterbank._filters"], state["enc.conv1d.weight"])
    assert torch.equal(ours["decoder.filterbank._filters"], state["dec.weight"])
    copied = [key for key in state if key.startswith("mask_net.") and key in ours]
    assert len(copied) == len(ours) - 2 and all(torch.equal(ours[key], state[key]) for key in copied)
    metadata = read_metadata(out)
    assert metadata["provenance"]["converted_from"] == "clearervoice"
    assert metadata["provenance"]["ddp_prefix_stripped"] is ddp
    assert metadata["provenance"]["ignored_entries"] == ["epoch", "optimizer", "step"]
    loaded = load_checkpoint(out)
    x = 0.3 * torch.randn(1, 1, 1600, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_bare_state_dict_and_weights_without_optimizer_convert(tmp_path) -> None:
    state = official_state(**SMALL)
    bare = convert_clearervoice_checkpoint(_write(tmp_path / "bare.pt", state, wrapped=False))
    plain = convert_clearervoice_checkpoint(_write(tmp_path / "plain.pt", state, optimizer=False), sample_rate=8000)
    assert plain.sample_rate == 8000 and bare.sample_rate == 16000
    for key, value in bare.state_dict().items():
        assert torch.equal(value, plain.state_dict()[key])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("drop", r"1 missing tensor\(s\): mask_net\.mdl\.intra_mdl\.mossformerM\.fsmn\.1\.conv2\.bias"),
        ("extra", r"1 unexpected tensor\(s\): mask_net\.extra\.weight"),
        ("shape", r"1 mis-shaped tensor\(s\): mask_net\.output\.0\.bias \(15,\) != \(16,\)"),
        ("freqs", r"position-frequency tensor\(s\) differ .*layers\.1\.rotary_pos_emb\.freqs"),
    ],
)
def test_mismatches_are_one_line_errors(tmp_path, edit: str, message: str) -> None:
    state = official_state(**SMALL)
    if edit == "drop":
        del state["mask_net.mdl.intra_mdl.mossformerM.fsmn.1.conv2.bias"]
    elif edit == "extra":
        state["mask_net.extra.weight"] = torch.zeros(3)
    elif edit == "shape":
        state["mask_net.output.0.bias"] = torch.zeros(15)
    else:
        state["mask_net.mdl.intra_mdl.mossformerM.layers.1.rotary_pos_emb.freqs"] *= 1.5
    path = _write(tmp_path / "broken.pt", state)
    with pytest.raises(CheckpointError, match=message) as caught:
        convert_clearervoice_checkpoint(path)
    assert "\n" not in str(caught.value)


def test_prefix_clash_and_foreign_files_are_refused(tmp_path) -> None:
    state = official_state(**SMALL)
    clash = {**state, "module.dec.weight": state["dec.weight"]}
    with pytest.raises(CheckpointError, match="both with and without"):
        convert_clearervoice_checkpoint(_write(tmp_path / "clash.pt", clash))
    torch.save({"model": {"encoder.weight": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a MossFormer2 separation checkpoint"):
        convert_clearervoice_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        convert_clearervoice_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_pickled_code_is_never_run_and_the_class_is_named(tmp_path, pickle_exploit: PickleExploit,
                                                          writer: str) -> None:
    package = {"model": official_state(**SMALL), "hook": pickle_exploit}
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(package, path)
    else:
        write_pickle(path, package, protocol=2)
    with pytest.raises(CheckpointError, match=r"weights_only=True \(Unsupported global: GLOBAL .*no extra classes") as caught:
        convert_clearervoice_checkpoint(path)
    assert not pickle_exploit.ran and "\n" not in str(caught.value)


def test_cli_converts_and_keeps_framing_asteroid_only(tmp_path, capsys) -> None:
    path = _write(tmp_path / "last_best_checkpoint.pt", official_state(**SMALL), ddp=True)
    out = tmp_path / "mossformer2_8k.safetensors"
    assert main(["convert", "clearervoice", str(path), "-o", str(out), "--sample-rate", "8000"]) == EXIT_OK
    assert "mossformer2 separation, 2 source(s), 8000 Hz" in capsys.readouterr().out
    assert read_metadata(out)["sample_rate"] == 8000
    assert main(["convert", "clearervoice", str(path), "-o", str(out), "--force", "--framing", "causal"]) == EXIT_USAGE
    assert main(["convert", "asteroid", str(path), "-o", str(out), "--force", "--sample-rate", "8000"]) == EXIT_USAGE


def test_rotary_dim_follows_the_query_key_size() -> None:
    """min(32, qk): the full model rotates 32 of 128 features; the small file all 8."""
    assert math.isclose(official_state(qk=128, layers=1)[
        "mask_net.mdl.intra_mdl.mossformerM.layers.0.rotary_pos_emb.freqs"].numel(), 16)


def test_one_memory_mapped_weights_only_load(tmp_path, monkeypatch) -> None:
    """The file is read once, memory-mapped, so the optimizer state beside the weights is never paged in."""
    calls: list[dict[str, Any]] = []
    original = torch.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    convert_clearervoice_checkpoint(_write(tmp_path / "last_best_checkpoint.pt", official_state(**SMALL)))
    assert calls == [{"map_location": "cpu", "weights_only": True, "mmap": True}]
