"""``speechkit convert sgmse``: Lightning checkpoints of the official layout, built here.

The files are written with ``torch.save`` as Lightning stores them: ``state_dict`` with the backbone's
``dnn.output_layer`` (registered first) and ``dnn.all_modules.{i}`` (the reference's flat module list,
in its construction order), the torch_ema state under ``ema`` (``shadow_params`` a positional list in
that parameter order),
``hyper_parameters`` holding a class reference to ``sgmse.data_module.SpecsDataModule``, and the
training state (optimiser, loops, callbacks with tensors).
"""
from __future__ import annotations

import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch

from speechkit.checkpoint import load_checkpoint, read_metadata
from speechkit.cli import EXIT_OK, main
from speechkit.convert.sgmse import convert_sgmse_checkpoint, reference_key_map_for
from speechkit.errors import CheckpointError
from speechkit.models.sgmse import SGMSE

#: hyper-parameters of a small file (a 3-level U-Net on 32 bins)
TINY_HPARAMS: dict[str, Any] = {
    "backbone": "ncsnpp", "sde": "ouve", "lr": 1e-4, "ema_decay": 0.999, "t_eps": 0.03, "num_eval_files": 20,
    "loss_type": "score_matching", "theta": 1.5, "sigma_min": 0.05, "sigma_max": 0.5, "N": 30,
    "ch_mult": [1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [8], "nf": 8, "centered": True,
    "batch_size": 8, "num_workers": 4, "base_dir": "/data/vb_dmd", "format": "default", "n_fft": 62,
    "hop_length": 16, "num_frames": 256, "window": "hann", "spec_factor": 0.15, "spec_abs_exponent": 0.5,
    "normalize": "noisy", "transform_type": "exponent", "dummy": False,
}


def official_layout(nf: int, ch_mult: list[int], num_res_blocks: int, attn: list[int], height: int,
                    channels: int = 4, progressive: bool = True) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of the reference backbone in parameter order: ``output_layer`` (created first), then its module list.

    ``progressive=False``: without the input-skip and output-skip paths (``ncsnpp_48k``'s defaults).
    """
    keys: list[tuple[str, tuple[int, ...]]] = [("dnn.output_layer.weight", (2, channels, 1, 1)),
                                               ("dnn.output_layer.bias", (2,))]
    index = 0

    def add(parts: list[tuple[str, tuple[int, ...]]]) -> None:
        nonlocal index
        keys.extend((f"dnn.all_modules.{index}.{name}", shape) for name, shape in parts)
        index += 1

    def prefix(name: str, parts: list[tuple[str, tuple[int, ...]]]) -> list[tuple[str, tuple[int, ...]]]:
        return [(f"{name}.{leaf}", shape) for leaf, shape in parts]

    def norm(c: int) -> list[tuple[str, tuple[int, ...]]]:
        return [("weight", (c,)), ("bias", (c,))]

    def conv(i: int, o: int, k: int) -> list[tuple[str, tuple[int, ...]]]:
        return [("weight", (o, i, k, k)), ("bias", (o,))]

    def dense(i: int, o: int) -> list[tuple[str, tuple[int, ...]]]:
        return [("weight", (o, i)), ("bias", (o,))]

    def resnet(i: int, o: int | None = None, resample: bool = False) -> list[tuple[str, tuple[int, ...]]]:
        o = o or i
        parts = (prefix("GroupNorm_0", norm(i)) + prefix("Conv_0", conv(i, o, 3)) + prefix("Dense_0", dense(4 * nf, o))
                 + prefix("GroupNorm_1", norm(o)) + prefix("Conv_1", conv(o, o, 3)))
        return parts + (prefix("Conv_2", conv(i, o, 1)) if i != o or resample else [])

    def attention(c: int) -> list[tuple[str, tuple[int, ...]]]:
        nins = [part for k in range(4) for part in prefix(f"NIN_{k}", [("W", (c, c)), ("b", (c,))])]
        return prefix("GroupNorm_0", norm(c)) + nins

    add([("W", (nf,))])
    add(dense(2 * nf, 4 * nf))
    add(dense(4 * nf, 4 * nf))
    add(conv(channels, nf, 3))
    skips, width = [nf], nf
    for level, mult in enumerate(ch_mult):
        for _ in range(num_res_blocks):
            add(resnet(width, nf * mult))
            width = nf * mult
            if height // 2**level in attn:
                add(attention(width))
            skips.append(width)
        if level != len(ch_mult) - 1:
            add(resnet(width, resample=True))
            if progressive:
                add(prefix("Conv_0", conv(channels, width, 1)))
            skips.append(width)
    add(resnet(width))
    add(attention(width))
    add(resnet(width))
    for level in reversed(range(len(ch_mult))):
        for _ in range(num_res_blocks + 1):
            add(resnet(width + skips.pop(), nf * ch_mult[level]))
            width = nf * ch_mult[level]
        if height // 2**level in attn:
            add(attention(width))
        if progressive:
            add(norm(width))
            add(conv(width, channels, 3))
        if level != 0:
            add(resnet(width, resample=True))
    if not progressive:
        add(norm(width))
        add(conv(width, channels, 3))
    return keys


@pytest.fixture()
def data_module_class(monkeypatch):
    """The data-module class a real checkpoint references (a stand-in module on sys.modules)."""
    package, module = types.ModuleType("sgmse"), types.ModuleType("sgmse.data_module")
    cls = type("SpecsDataModule", (), {"__module__": "sgmse.data_module"})
    module.SpecsDataModule = cls
    package.data_module = module
    monkeypatch.setitem(sys.modules, "sgmse", package)
    monkeypatch.setitem(sys.modules, "sgmse.data_module", module)
    return cls


def lightning_file(path: Path, data_module: Any, hparams: dict[str, Any] | None = None, *, drop: str | None = None,
                   shadow_count: int | None = None, fourier: bool = True, ema: bool = True,
                   stored: dict[str, Any] | None = None,
                   remove: tuple[str, ...] = ()) -> tuple[Path, OrderedDict, list[torch.Tensor]]:
    """A Lightning-layout SGMSE+ checkpoint with random weights; returns (path, state_dict, EMA list).

    The weights follow ``hparams``; the stored hyper-parameters also get ``stored`` and lose ``remove``.
    ``fourier=False`` leaves the fixed Fourier frequencies out of the EMA list (an EMA of the
    trainable parameters only, as torch_ema before 0.3 kept); ``shadow_count`` keeps its last tensors.
    """
    hparams = {**TINY_HPARAMS, **(hparams or {}), "data_module_cls": data_module}
    generator = torch.Generator().manual_seed(3)
    progressive = hparams.get("progressive", "none" if hparams["backbone"] == "ncsnpp_48k" else "output_skip")
    layout = official_layout(hparams["nf"], hparams["ch_mult"], hparams["num_res_blocks"], hparams["attn_resolutions"],
                             hparams["n_fft"] // 2 + 1, progressive=progressive == "output_skip")
    state = OrderedDict((key, 0.1 * torch.randn(shape, generator=generator)) for key, shape in layout)
    shadow = [tensor + 0.01 * torch.randn(tensor.shape, generator=generator) for tensor in state.values()]
    if not fourier:
        shadow = [tensor for key, tensor in zip(state, shadow) if key != "dnn.all_modules.0.W"]
    if shadow_count is not None:
        shadow = shadow[len(shadow) - shadow_count:]
    if drop is not None:
        del state[drop]
    score = torch.tensor(2.91)
    package: dict[str, Any] = {
        "epoch": 115, "global_step": 41_000, "pytorch-lightning_version": "1.6.5",
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_loop.state_dict": {"_batches_that_stepped": 41_000},
                               "epoch_progress": {"total": {"ready": 116, "started": 116, "processed": 116,
                                                            "completed": 115}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'pesq', 'mode': 'max', 'every_n_train_steps': 0}": {
            "monitor": "pesq", "best_model_score": score, "best_model_path": "/logs/run/epoch=115.ckpt",
            "current_score": score, "dirpath": "/logs/run", "best_k_models": {"/logs/run/epoch=115.ckpt": score},
            "kth_best_model_path": "/logs/run/epoch=115.ckpt", "kth_value": score, "last_model_path": ""}},
        "optimizer_states": [{"state": {0: {"step": torch.tensor(41_000.0), "exp_avg": torch.zeros(8),
                                            "exp_avg_sq": torch.zeros(8)}},
                              "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0,
                                                "amsgrad": False, "params": [0]}]}],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": {key: value for key, value in {**hparams, **(stored or {})}.items() if key not in remove},
    }
    if ema:
        package["ema"] = {"decay": 0.999, "num_updates": 41_000, "shadow_params": shadow, "collected_params": None}
    torch.save(package, path)
    return path, state, shadow


def test_paper_layout_matches_the_reference_order_and_shapes():
    """The 647 reference keys of the journal backbone, in parameter order, map onto the paper preset."""
    config = SGMSE.presets["paper"]
    layout = official_layout(128, [1, 1, 2, 2, 2, 2, 2], 2, [16], 256)
    mapping = reference_key_map_for(config)
    assert len(layout) == len(mapping) == 647
    assert [key for key, _ in layout] == list(mapping)
    assert max(int(key.split(".")[2]) for key, _ in layout if "all_modules" in key) == 76  # 77 modules
    with torch.device("meta"):
        shapes = {key: tuple(tensor.shape) for key, tensor in SGMSE(config).state_dict().items()}
    for (key, shape), (ours, matrix) in zip(layout, mapping.values()):
        assert shape == (shapes[ours][1], shapes[ours][0]) if matrix else shape == shapes[ours], key


def test_converts_ema_weights_by_default_and_raw_on_request(tmp_path, data_module_class):
    path, state, shadow = lightning_file(tmp_path / "vb_dmd.ckpt", data_module_class)
    model = convert_sgmse_checkpoint(path, tmp_path / "out.safetensors")
    ours = model.state_dict()
    ema = dict(zip(state, shadow))
    assert torch.equal(ours["backbone.time_fourier.frequencies"], ema["dnn.all_modules.0.W"])
    assert torch.equal(ours["backbone.time_dense_in.weight"], ema["dnn.all_modules.1.weight"])
    assert torch.equal(ours["backbone.input_conv.weight"], ema["dnn.all_modules.3.weight"])
    assert torch.equal(ours["backbone.output_layer.bias"], ema["dnn.output_layer.bias"])
    assert not torch.equal(ours["backbone.input_conv.weight"], state["dnn.all_modules.3.weight"])
    # the middle attention (NIN W [in, out]) computes the reference formula on the file's weights:
    # attention modules sit at the 8-bin level going down, in the middle and going up; the middle is the 2nd
    block = model.backbone.middle_attention
    index = sorted(int(key.split(".")[2]) for key in state if key.endswith("NIN_3.b"))[1]
    x = torch.randn(1, 16, 4, 6)
    h = torch.nn.functional.group_norm(x, 4, ema[f"dnn.all_modules.{index}.GroupNorm_0.weight"],
                                       ema[f"dnn.all_modules.{index}.GroupNorm_0.bias"], eps=1e-6)

    def nin(k: int, value: torch.Tensor) -> torch.Tensor:
        weight, bias = ema[f"dnn.all_modules.{index}.NIN_{k}.W"], ema[f"dnn.all_modules.{index}.NIN_{k}.b"]
        return (torch.einsum("bchw,co->bohw", value, weight) + bias[None, :, None, None])

    q, k, v = nin(0, h), nin(1, h), nin(2, h)
    w = torch.einsum("bchw,bcij->bhwij", q, k) * 16**-0.5
    w = torch.softmax(w.reshape(1, 4, 6, 24), dim=-1).reshape(1, 4, 6, 4, 6)
    expected = (x + nin(3, torch.einsum("bhwij,bcij->bchw", w, v))) / 2**0.5
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)

    saved = load_checkpoint(tmp_path / "out.safetensors")
    assert all(torch.equal(tensor, saved.state_dict()[key]) for key, tensor in ours.items())
    provenance = read_metadata(tmp_path / "out.safetensors")["provenance"]
    assert provenance["weights"] == "ema" and provenance["epoch"] == 115 and "lr" in provenance["ignored_hyper_parameters"]
    raw = convert_sgmse_checkpoint(path, weights="raw").state_dict()
    assert torch.equal(raw["backbone.input_conv.weight"], state["dnn.all_modules.3.weight"])
    assert (model.config.n_fft, model.config.channel_multipliers, model.config.steps) == (62, (1, 2, 2), 30)


def test_ema_list_without_the_fixed_fourier_frequencies_is_accepted(tmp_path, data_module_class):
    path, state, shadow = lightning_file(tmp_path / "b.ckpt", data_module_class, fourier=False)
    assert len(shadow) == len(state) - 1
    model = convert_sgmse_checkpoint(path)
    ema = dict(zip([key for key in state if key != "dnn.all_modules.0.W"], shadow))
    assert torch.equal(model.state_dict()["backbone.time_fourier.frequencies"], state["dnn.all_modules.0.W"])
    assert torch.equal(model.state_dict()["backbone.time_dense_in.weight"], ema["dnn.all_modules.1.weight"])
    assert torch.equal(model.state_dict()["backbone.output_layer.weight"], shadow[0])  # the list opens with it


def test_the_48k_backbone_converts_with_its_layout_and_rate(tmp_path, data_module_class):
    """ncsnpp_48k (trained with progressive = progressive_input = "none"): its layout, 48 kHz whatever ``sr`` says."""
    wide = {"backbone": "ncsnpp_48k", "progressive": "none", "progressive_input": "none", "attn_resolutions": [],
            "sr": 16000}
    path, state, shadow = lightning_file(tmp_path / "ears.ckpt", data_module_class, wide)
    model = convert_sgmse_checkpoint(path, tmp_path / "ears.safetensors")
    config = model.config
    assert (model.sample_rate, config.pad_mode) == (48000, "reflect")
    assert not config.input_skip and not config.output_skip
    assert config.scale_after_output_layer and config.attention_resolutions == ()
    last = max(int(key.split(".")[2]) for key in state if key.startswith("dnn.all_modules."))
    ema = dict(zip(state, shadow))
    assert torch.equal(model.state_dict()["backbone.final_conv.weight"], ema[f"dnn.all_modules.{last}.weight"])
    assert torch.equal(model.state_dict()["backbone.final_norm.bias"], ema[f"dnn.all_modules.{last - 1}.bias"])
    assert "16000" in read_metadata(tmp_path / "ears.safetensors")["provenance"]["sr"]
    path, _, _ = lightning_file(tmp_path / "residual.ckpt", data_module_class, {**wide, "progressive": "residual"})
    with pytest.raises(CheckpointError, match="progressive='residual'"):
        convert_sgmse_checkpoint(path)


def test_refusals_are_one_line(tmp_path, data_module_class):
    path, state, _ = lightning_file(tmp_path / "short.ckpt", data_module_class, shadow_count=10)
    with pytest.raises(CheckpointError, match="EMA list holds 10 tensors"):
        convert_sgmse_checkpoint(path)
    path, _, _ = lightning_file(tmp_path / "missing.ckpt", data_module_class, drop="dnn.all_modules.5.Conv_1.weight")
    with pytest.raises(CheckpointError, match=r"1 missing tensor\(s\): dnn\.all_modules\.5\.Conv_1\.weight"):
        convert_sgmse_checkpoint(path)
    path, _, _ = lightning_file(tmp_path / "wide.ckpt", data_module_class, stored={"nf": 16})
    with pytest.raises(CheckpointError, match="mis-shaped"):
        convert_sgmse_checkpoint(path, weights="raw")  # weights of an 8-channel network, hyper-parameters say 16
    for key, value in (("sde", "sbve"), ("backbone", "ncsnpp_v2"), ("transform_type", "log")):
        path, _, _ = lightning_file(tmp_path / f"{value}.ckpt", data_module_class, {key: value})
        with pytest.raises(CheckpointError, match=f"{key}='{value}'") as error:
            convert_sgmse_checkpoint(path)
        assert "\n" not in str(error.value)
    path, _, _ = lightning_file(tmp_path / "noema.ckpt", data_module_class, ema=False)
    with pytest.raises(CheckpointError, match="no EMA weights"):
        convert_sgmse_checkpoint(path)
    assert convert_sgmse_checkpoint(path, weights="raw").config.num_res_blocks == 1


def test_a_foreign_class_in_the_pickle_is_refused_by_name(tmp_path, monkeypatch):
    module = types.ModuleType("evil")
    payload = type("Payload", (), {"__module__": "evil"})
    module.Payload = payload
    monkeypatch.setitem(sys.modules, "evil", module)
    path, _, _ = lightning_file(tmp_path / "evil.ckpt", payload)
    with pytest.raises(CheckpointError, match=r"refers to the class evil\.Payload") as error:
        convert_sgmse_checkpoint(path)
    assert "\n" not in str(error.value)


def test_centered_absent_from_old_files_is_assumed_and_recorded(tmp_path, data_module_class):
    path, _, _ = lightning_file(tmp_path / "old.ckpt", data_module_class, remove=("centered",))
    model = convert_sgmse_checkpoint(path, tmp_path / "old.safetensors")
    assert model.config.centered
    assert "assumed True" in read_metadata(tmp_path / "old.safetensors")["provenance"]["centered"]
    assert not convert_sgmse_checkpoint(path, centered=False).config.centered


def test_cli_convert_sgmse(tmp_path, data_module_class, capsys):
    path, state, shadow = lightning_file(tmp_path / "in.ckpt", data_module_class)
    out = tmp_path / "out.safetensors"
    assert main(["convert", "sgmse", str(path), "-o", str(out), "--weights", "raw"]) == EXIT_OK
    assert "sgmse" in capsys.readouterr().out
    assert torch.equal(load_checkpoint(out).state_dict()["backbone.input_conv.weight"], state["dnn.all_modules.3.weight"])
    assert main(["convert", "asteroid", str(path), "-o", str(tmp_path / "x.safetensors"), "--weights", "ema"]) != EXIT_OK


def _upfirdn(x: torch.Tensor, taps: list[float], up: int, down: int, pad: tuple[int, int], gain: float) -> torch.Tensor:
    """The reference's native upfirdn2d: zero-stuff by ``up``, pad, convolve with the flipped kernel, keep every ``down``."""
    kernel = torch.outer(torch.tensor(taps), torch.tensor(taps))
    kernel = kernel / kernel.sum() * gain
    batch, channels, height, width = x.shape
    out = x.reshape(-1, height, 1, width, 1)
    out = torch.nn.functional.pad(out, [0, up - 1, 0, 0, 0, up - 1]).reshape(-1, 1, height * up, width * up)
    out = torch.nn.functional.pad(out, [pad[0], pad[1], pad[0], pad[1]])
    out = torch.nn.functional.conv2d(out, torch.flip(kernel, [0, 1])[None, None])
    out = out[:, :, ::down, ::down]
    return out.reshape(batch, channels, out.shape[-2], out.shape[-1])


def reference_forward(p: dict[str, torch.Tensor], x: torch.Tensor, t: torch.Tensor, hp: dict[str, Any]) -> torch.Tensor:
    """The reference network's forward pass in plain ops on its own keys (``-dnn(x, t)``, real/imag stacked)."""
    F = torch.nn.functional
    taps, act = [1.0, 3.0, 3.0, 1.0], F.silu
    down = lambda h: _upfirdn(h, taps, 1, 2, (1, 1), 1.0)  # noqa: E731
    upsample = lambda h: _upfirdn(h, taps, 2, 1, (2, 1), 4.0)  # noqa: E731
    index = 0

    def get(name: str) -> torch.Tensor:
        return p[f"dnn.all_modules.{index}.{name}"]

    def norm(h: torch.Tensor, prefix: str = "") -> torch.Tensor:
        return F.group_norm(h, min(h.shape[1] // 4, 32), get(prefix + "weight"), get(prefix + "bias"), eps=1e-6)

    def resnet(h: torch.Tensor, temb: torch.Tensor, mode: str = "") -> torch.Tensor:
        nonlocal index
        skip, inner = h, act(norm(h, "GroupNorm_0."))
        if mode:
            inner, skip = (upsample(inner), upsample(skip)) if mode == "up" else (down(inner), down(skip))
        inner = F.conv2d(inner, get("Conv_0.weight"), get("Conv_0.bias"), padding=1)
        inner = inner + F.linear(act(temb), get("Dense_0.weight"), get("Dense_0.bias"))[:, :, None, None]
        inner = F.conv2d(act(norm(inner, "GroupNorm_1.")), get("Conv_1.weight"), get("Conv_1.bias"), padding=1)
        if f"dnn.all_modules.{index}.Conv_2.weight" in p:
            skip = F.conv2d(skip, get("Conv_2.weight"), get("Conv_2.bias"))
        index += 1
        return (skip + inner) / 2**0.5

    def attention(h: torch.Tensor) -> torch.Tensor:
        nonlocal index
        b, c, hh, ww = h.shape
        normed = norm(h, "GroupNorm_0.")
        def nin(k: int, v: torch.Tensor) -> torch.Tensor:
            return torch.einsum("bchw,co->bohw", v, get(f"NIN_{k}.W")) + get(f"NIN_{k}.b")[None, :, None, None]

        q, k, v = nin(0, normed), nin(1, normed), nin(2, normed)
        w = torch.einsum("bchw,bcij->bhwij", q, k) * c**-0.5
        w = torch.softmax(w.reshape(b, hh, ww, hh * ww), dim=-1).reshape(b, hh, ww, hh, ww)
        out = (h + nin(3, torch.einsum("bhwij,bcij->bchw", w, v))) / 2**0.5
        index += 1
        return out

    phase = torch.log(t)[:, None] * get("W")[None] * 2 * torch.pi
    temb = torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)
    index += 1
    temb = F.linear(temb, get("weight"), get("bias"))
    index += 1
    temb = F.linear(act(temb), get("weight"), get("bias"))
    index += 1
    pyramid_in = x
    hs = [F.conv2d(x, get("weight"), get("bias"), padding=1)]
    index += 1
    levels = len(hp["ch_mult"])
    for level in range(levels):
        for _ in range(hp["num_res_blocks"]):
            h = resnet(hs[-1], temb)
            if h.shape[-2] in hp["attn_resolutions"]:
                h = attention(h)
            hs.append(h)
        if level != levels - 1:
            h = resnet(hs[-1], temb, "down")
            pyramid_in = down(pyramid_in)
            h = F.conv2d(pyramid_in, get("Conv_0.weight"), get("Conv_0.bias")) + h
            index += 1
            hs.append(h)
    h = resnet(attention(resnet(hs[-1], temb)), temb)
    pyramid = None
    for level in reversed(range(levels)):
        for _ in range(hp["num_res_blocks"] + 1):
            h = resnet(torch.cat([h, hs.pop()], dim=1), temb)
        if h.shape[-2] in hp["attn_resolutions"]:
            h = attention(h)
        level_out = act(norm(h))
        index += 1
        level_out = F.conv2d(level_out, get("weight"), get("bias"), padding=1)
        index += 1
        pyramid = level_out if pyramid is None else upsample(pyramid) + level_out
        if level != 0:
            h = resnet(h, temb, "up")
    out = F.conv2d(pyramid / t[:, None, None, None], p["dnn.output_layer.weight"], p["dnn.output_layer.bias"])
    return -out


def test_converted_model_equals_the_reference_forward_pass(tmp_path, data_module_class):
    """The converted score network == the reference forward written in plain ops on the file's EMA tensors."""
    path, state, shadow = lightning_file(tmp_path / "ref.ckpt", data_module_class)
    model = convert_sgmse_checkpoint(path)
    ema = dict(zip(state, shadow))
    generator = torch.Generator().manual_seed(5)
    x_t, y = (0.3 * torch.randn(2, 1, 2, 32, 8, generator=generator) for _ in range(2))
    t = torch.tensor([0.9, 0.05])
    features = torch.cat([x_t[:, 0], y[:, 0]], dim=1)  # Re x, Im x, Re y, Im y
    with torch.no_grad():
        expected = reference_forward(ema, features, t, TINY_HPARAMS)
        actual = model.network_score(x_t, y, t)[:, 0]  # no frame padding (8 frames suit the 3-level U-Net)
    assert float(expected.abs().max()) > 1e-3
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
