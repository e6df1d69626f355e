"""SGMSE+ against the official code (sp-uhh/sgmse), when a checkout of it is available.

Set ``SGMSE_REFERENCE`` to the folder that holds the official ``sgmse`` package; otherwise the test
skips. The official ``ScoreModel`` (``sgmse/model.py``), its data module, SDE, samplers and the
NCSN++ backbones are imported as they are; what they import for training, logging and metrics
(``pytorch_lightning``, ``torchaudio``, ``torch_ema``, ``librosa``, ``pesq``, ``pystoi``,
``torch_pesq``) is stood in for: the network never calls it. Two stand-ins carry behaviour the
test relies on: the Lightning module records its ``__init__`` arguments as ``hyper_parameters`` the
way ``save_hyperparameters`` does, and the EMA keeps one shadow tensor per parameter it was given,
in order (torch_ema 0.3, the pinned version).

For each released backbone (``ncsnpp``: the 16 kHz journal models; ``ncsnpp_48k``: the EARS 48 kHz
models) a randomly initialised official ``ScoreModel`` is built as ``train.py`` builds it with the
README's training command (the official argument parser's defaults; the backbone's layer types at a
reduced width), its weights are drawn off their init values, it takes an optimiser step (the
official ``optimizer_step`` updates the EMA) and a validation round (``eval`` / ``train`` swap the
EMA weights in and out), and it is saved as Lightning writes a ``.ckpt`` (``state_dict``,
``hyper_parameters`` with the data-module class, the official ``on_save_checkpoint`` adding
``ema``). ``speechkit convert sgmse`` converts the file and the converted model must reproduce, to
float rounding:

* the score ``ScoreModel.forward(x_t, y, t)`` with the EMA weights (and the raw weights), on frame
  counts that are and are not a multiple of 64 (padded as ``enhancement.py`` pads, then cropped);
* the official front end (peak normalisation, STFT, compression);
* a predictor-corrector run (reverse diffusion + annealed Langevin, 3 steps) and the enhanced
  waveform of ``enhancement.py``'s procedure, with the official run's noise draws replayed into ours.

Measured at sp-uhh/sgmse ae690e8 (float32, one thread), max error relative to the reference's peak:
nf=16: score 9.8e-7 (ncsnpp) / 0 (ncsnpp_48k), front end 9e-7, sampler 1.6e-6, waveform 1.1e-6;
the full-size networks converted the same way (65,590,822 and 64,739,854 parameters, as the
official modules count them): score 8.2e-7 for both.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from reference_support import relative_error
from torch import nn

import speechkit.models.sgmse as sgmse_module
from speechkit.checkpoint import load_checkpoint
from speechkit.convert.sgmse import convert_sgmse_checkpoint
from speechkit.nn.diffusion import list_noise

SOURCE = os.environ.get("SGMSE_REFERENCE")
#: channel width of the reduced networks (the released models have 128)
REDUCED_WIDTH = 16
#: per official backbone: the ``train.py`` arguments of the README's training command, the frame
#: padding ``enhancement.py`` uses and the rate it runs at
SETUPS: dict[str, tuple[list[str], str, int]] = {
    "ncsnpp": ([], "zero_pad", 16000),
    "ncsnpp_48k": (["--n_fft", "1534", "--hop_length", "384", "--spec_factor", "0.065", "--spec_abs_exponent", "0.667",
                    "--sigma-min", "0.1", "--sigma-max", "1.0", "--theta", "2.0"], "reflection", 48000),
}


# ---------------------------------------------------------------------------------------------- stand-ins
class _LightningModule(nn.Module):
    """Stand-in for ``pytorch_lightning.LightningModule``: hyper-parameter recording and the optimiser step."""

    def save_hyperparameters(self, ignore: Any = ()) -> None:
        """Record the caller's ``__init__`` arguments (keyword arguments flattened in), as Lightning does."""
        frame = inspect.currentframe()
        assert frame is not None and frame.f_back is not None
        local = frame.f_back.f_locals
        values: dict[str, Any] = {}
        for name, parameter in inspect.signature(type(self).__init__).parameters.items():
            if name == "self" or parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                continue
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                values.update(local[name])
            else:
                values[name] = local[name]
        ignored = {ignore} if isinstance(ignore, str) else set(ignore)
        self.hparams = {key: value for key, value in values.items() if key not in ignored}

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer,
                       optimizer_closure: Any = None) -> None:
        optimizer.step(closure=optimizer_closure)


class _LightningDataModule:
    def __init__(self) -> None:
        pass


class _ExponentialMovingAverage:
    """Stand-in for ``torch_ema.ExponentialMovingAverage`` 0.3: a shadow copy of every parameter given, in order."""

    def __init__(self, parameters: Any, decay: float, use_num_updates: bool = True) -> None:
        self.decay = decay
        self.num_updates = 0 if use_num_updates else None
        self.shadow_params = [parameter.clone().detach() for parameter in parameters]
        self.collected_params: list[torch.Tensor] | None = None

    def update(self, parameters: Any) -> None:
        decay = self.decay
        if self.num_updates is not None:
            self.num_updates += 1
            decay = min(decay, (1 + self.num_updates) / (10 + self.num_updates))
        with torch.no_grad():
            for shadow, parameter in zip(self.shadow_params, list(parameters), strict=True):
                shadow.sub_((1.0 - decay) * (shadow - parameter))

    def copy_to(self, parameters: Any) -> None:
        for shadow, parameter in zip(self.shadow_params, list(parameters), strict=True):
            parameter.data.copy_(shadow.data)

    def store(self, parameters: Any) -> None:
        self.collected_params = [parameter.clone() for parameter in parameters]

    def restore(self, parameters: Any) -> None:
        assert self.collected_params is not None
        for stored, parameter in zip(self.collected_params, list(parameters), strict=True):
            parameter.data.copy_(stored.data)

    def to(self, *args: Any, **kwargs: Any) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow_params": self.shadow_params,
                "collected_params": self.collected_params}


def _unused(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a stand-in for a training or metric dependency was called")


def _stand_ins() -> dict[str, types.ModuleType]:
    modules = {name: types.ModuleType(name) for name in
               ("pytorch_lightning", "torchaudio", "torch_ema", "librosa", "pesq", "pystoi", "torch_pesq")}
    modules["pytorch_lightning"].LightningModule = _LightningModule  # type: ignore[attr-defined]
    modules["pytorch_lightning"].LightningDataModule = _LightningDataModule  # type: ignore[attr-defined]
    modules["torchaudio"].load = _unused  # type: ignore[attr-defined]
    modules["torch_ema"].ExponentialMovingAverage = _ExponentialMovingAverage  # type: ignore[attr-defined]
    modules["librosa"].resample = _unused  # type: ignore[attr-defined]
    modules["pesq"].pesq = _unused  # type: ignore[attr-defined]
    modules["pystoi"].stoi = _unused  # type: ignore[attr-defined]
    modules["torch_pesq"].PesqLoss = _unused  # type: ignore[attr-defined]
    return modules


def _is_official(name: str) -> bool:
    return name == "sgmse" or name.startswith("sgmse.")


def official_package(root: str | os.PathLike, monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """The official modules the test needs, imported from ``root`` beside the stand-ins.

    The caller removes the imported ``sgmse`` modules from ``sys.modules`` afterwards.
    """
    for name, module in _stand_ins().items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.syspath_prepend(str(root))
    names = ("sgmse", "sgmse.backbones", "sgmse.backbones.ncsnpp", "sgmse.sdes", "sgmse.data_module",
             "sgmse.util.other", "sgmse.model")
    return types.SimpleNamespace(**{name.rpartition(".")[2]: importlib.import_module(name) for name in names})


# ---------------------------------------------------------------------------------------------- the official file
def train_arguments(official: types.SimpleNamespace, backbone: str = "ncsnpp") -> dict[str, Any]:
    """The keyword arguments ``train.py`` passes to ``ScoreModel`` for the README's command of ``backbone``."""
    parser = argparse.ArgumentParser()
    backbone_class = official.backbones.BackboneRegistry.get_by_name(backbone)
    groups = {}
    for title, owner in (("ScoreModel", official.model.ScoreModel), ("SDE", official.sdes.OUVESDE),
                         ("Backbone", backbone_class), ("DataModule", official.data_module.SpecsDataModule)):
        group = parser.add_argument_group(title)
        owner.add_argparse_args(group)
        groups[title] = group
    args = parser.parse_args(["--base_dir", "/data/VoiceBank-DEMAND", *SETUPS[backbone][0]])
    values: dict[str, Any] = {}
    for group in groups.values():
        values.update({action.dest: getattr(args, action.dest) for action in group._group_actions})
    return values


def _redraw(model: nn.Module, generator: torch.Generator) -> None:
    """Every trainable weight off its init value (convolutions initialised with scale 0 included)."""
    with torch.no_grad():
        for module in model.modules():
            for name, parameter in module.named_parameters(recurse=False):
                if not parameter.requires_grad:
                    continue  # the fixed Fourier frequencies keep their random draw
                noise = torch.randn(parameter.shape, generator=generator)
                if isinstance(module, nn.GroupNorm) and name == "weight":
                    parameter.copy_(1.0 + 0.2 * noise)
                elif parameter.dim() == 1:
                    parameter.copy_(0.1 * noise)
                else:  # NIN weights are [in, out], convolutions and linears [out, in, ...]
                    fan_in = parameter.shape[0] if name == "W" else parameter[0].numel()
                    parameter.copy_(noise / fan_in**0.5)


def official_checkpoint(official: types.SimpleNamespace, path: Path, backbone: str = "ncsnpp",
                        width: int | None = REDUCED_WIDTH, seed: int = 0, optimiser_state: bool = True) -> nn.Module:
    """An official ``ScoreModel`` trained for one step and saved at ``path`` as Lightning saves it.

    ``width`` is passed as ``nf`` (None: the released width, and for ``ncsnpp``, whose parser has
    no ``--nf``, ``nf`` absent from the file). Returns the model (training mode, raw weights loaded).
    """
    torch.manual_seed(seed)
    arguments = train_arguments(official, backbone)
    if width is not None:
        arguments["nf"] = width
    model = official.model.ScoreModel(backbone=backbone, sde="ouve",
                                      data_module_cls=official.data_module.SpecsDataModule, **arguments)
    generator = torch.Generator().manual_seed(seed + 1)
    _redraw(model.dnn, generator)
    optimizer = model.configure_optimizers()
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.grad = torch.randn(parameter.shape, generator=generator)
    model.optimizer_step(0, 0, optimizer)  # Adam step, then the official EMA update
    model.eval()  # a validation round: the EMA weights are swapped in ...
    model.train(True)  # ... and out again (the stored raw weights stay in ``collected_params``)
    checkpoint: dict[str, Any] = {
        "epoch": 115, "global_step": 41_000, "pytorch-lightning_version": "2.1.4",
        "state_dict": model.state_dict(),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_loop.state_dict": {"_batches_that_stepped": 41_000}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'pesq', 'mode': 'max'}": {
            "monitor": "pesq", "best_model_score": torch.tensor(2.93), "dirpath": "logs/abc123"}},
        "optimizer_states": [optimizer.state_dict()] if optimiser_state else [],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": dict(model.hparams),
    }
    model.on_save_checkpoint(checkpoint)  # the official hook adds ``ema``
    torch.save(checkpoint, path)
    return model


def _stacked(spec: torch.Tensor) -> torch.Tensor:
    """Complex ``[B, 1, F, N]`` -> our ``[B, 1, 2, F, N]``."""
    return torch.stack((spec.real, spec.imag), dim=2)


def compare_scores(official_model: nn.Module, ours: nn.Module, official: types.SimpleNamespace,
                   frame_counts: tuple[int, ...] = (64, 50), seed: int = 7) -> float:
    """Largest relative error of ``ours.score`` against ``ScoreModel.forward`` over ``frame_counts``.

    The official side gets the spectra padded as ``enhancement.py`` pads them; ours pads and crops itself.
    """
    pad_mode = SETUPS[official_model.backbone][1]
    worst = 0.0
    generator = torch.Generator().manual_seed(seed)
    bins = ours.config.num_freqs
    for frames in frame_counts:
        x_t, y = (torch.complex(*(0.3 * torch.randn(2, 2, 1, bins, frames, generator=generator)))
                  for _ in range(2))
        t = torch.tensor([0.93, 0.031])
        with torch.no_grad():
            pad = official.other.pad_spec
            padded = official_model(pad(x_t, mode=pad_mode), pad(y, mode=pad_mode), t)
            reference = padded[..., :frames]
            output = ours.score(_stacked(x_t), _stacked(y), t)
        assert output.shape == (2, 1, 2, bins, frames)
        assert float(reference.abs().max()) > 1e-2
        worst = max(worst, relative_error(torch.complex(output[:, :, 0], output[:, :, 1]), reference))
    return worst


# ---------------------------------------------------------------------------------------------- the test
@pytest.fixture()
def official(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.SimpleNamespace]:
    """The official package; ``sgmse`` modules already loaded (stand-ins of other tests) are put back afterwards."""
    before = {name: module for name, module in sys.modules.items() if _is_official(name)}
    for name in before:
        del sys.modules[name]
    try:
        yield official_package(str(SOURCE), monkeypatch)
    finally:
        for name in [name for name in sys.modules if _is_official(name)]:
            del sys.modules[name]
        sys.modules.update(before)


@pytest.mark.skipif(not SOURCE, reason="SGMSE_REFERENCE (folder holding the official sgmse package) is not set")
@pytest.mark.parametrize("backbone", sorted(SETUPS))
def test_converted_official_model_reproduces_the_official_score_and_sampler(tmp_path, official, monkeypatch,
                                                                            backbone) -> None:
    _, pad_mode, sample_rate = SETUPS[backbone]
    path = tmp_path / "epoch=115-pesq=2.93.ckpt"
    official_model = official_checkpoint(official, path, backbone)
    converted = convert_sgmse_checkpoint(path, tmp_path / "sgmse.safetensors")
    ours = load_checkpoint(tmp_path / "sgmse.safetensors")
    assert all(torch.equal(tensor, ours.state_dict()[key]) for key, tensor in converted.state_dict().items())
    assert (ours.sample_rate, ours.config.base_channels, ours.config.channel_multipliers) == (
        sample_rate, REDUCED_WIDTH, (1, 1, 2, 2, 2, 2, 2))
    assert ours.config.attention_resolutions == tuple(official_model.dnn.attn_resolutions)
    assert ours.num_parameters() + REDUCED_WIDTH == sum(p.numel() for p in official_model.dnn.parameters())

    # (a) the score: raw weights, then the EMA weights the official evaluation swaps in
    raw = convert_sgmse_checkpoint(path, weights="raw").eval()
    official_model.train(False, no_ema=True)
    assert compare_scores(official_model, raw, official) < 1e-5
    official_model.eval()
    error = compare_scores(official_model, ours, official)
    assert error < 1e-5, error
    assert compare_scores(official_model, raw, official) > 1e-3  # the EMA and raw weights differ

    # the front end: peak normalisation, STFT, compression (enhancement.py)
    seconds = 0.6  # 76 frames: the sampler pads them to 128
    generator = torch.Generator().manual_seed(11)
    time = torch.arange(int(sample_rate * seconds)) / sample_rate
    noisy = 0.4 * torch.sin(2 * torch.pi * 330 * time) + 0.1 * torch.randn(time.shape, generator=generator)
    y = noisy[None]  # [1, T], as torchaudio loads it
    norm_factor = y.abs().max()
    spectrum = torch.unsqueeze(official_model._forward_transform(official_model._stft(y / norm_factor)), 0)
    ours_spectrum = ours.spectrum(y[None] / norm_factor)  # [1, 1, 2, F, N]
    assert relative_error(ours_spectrum, _stacked(spectrum)) < 1e-5
    frames = spectrum.shape[-1]
    assert frames % 64

    # (b) the predictor-corrector sampler and the waveform, the official noise draws replayed into ours
    steps, corrector_steps, snr = 3, 1, 0.5
    draws: list[torch.Tensor] = []
    draw = torch.randn_like

    def recording(like: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        sample = draw(like, *args, **kwargs)
        draws.append(sample)
        return sample

    torch.manual_seed(3)
    condition = official.other.pad_spec(spectrum, mode=pad_mode)  # to 128 frames
    with monkeypatch.context() as patch:
        patch.setattr(torch, "randn_like", recording)
        sampler = official_model.get_pc_sampler("reverse_diffusion", "ald", condition, N=steps,
                                                corrector_steps=corrector_steps, snr=snr)
        sample, evaluations = sampler()
    reference_audio = official_model.to_audio(sample.squeeze(), y.size(1)) * norm_factor
    assert evaluations == steps * (corrector_steps + 1) and len(draws) == 1 + steps * (corrector_steps + 1)
    assert all(d.is_complex() for d in draws)
    noise = [_stacked(d) for d in draws]
    ours.set_options({"steps": steps, "corrector_steps": corrector_steps, "snr": snr, "sampler": "pc"})
    with torch.no_grad():
        ours_sample = ours.sample(ours.pad_frames(ours_spectrum), noise=noise)
    assert ours_sample.shape == (1, 1, 2, ours.config.num_freqs, condition.shape[-1])
    sample_error = relative_error(torch.complex(ours_sample[:, :, 0], ours_sample[:, :, 1]), sample)
    assert sample_error < 1e-5, sample_error
    monkeypatch.setattr(sgmse_module, "generator_noise", lambda generator: list_noise(noise))
    with torch.no_grad():
        audio = ours(y[None])  # [1, 1, T] -> [1, 1, 1, T]
    assert audio.shape == (1, 1, 1, y.size(1))
    audio_error = relative_error(audio[0, 0, 0], reference_audio)
    assert audio_error < 1e-5, audio_error
