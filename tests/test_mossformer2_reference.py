"""MossFormer2 against the official ClearerVoice-Studio code, when a checkout of it is available.

Set ``CLEARERVOICE_MOSSFORMER2`` to the folder that holds the official ``mossformer2_ss`` package
(``clearvoice/clearvoice/models`` of a ClearerVoice-Studio checkout) with its dependencies
(``einops``, ``rotary-embedding-torch``; ``torchinfo`` is only imported) importable; otherwise the
test skips. A randomly initialised official ``MossFormer`` (a reduced width, the official layer
types) is saved as ClearerVoice's trainer saves it, converted, and run on lengths off the
256-frame attention grid: the outputs must agree to float rounding (measured on the full
``MossFormer2_SS_16K`` network at HEAD 6b3774d: bit-identical at 0.3 s and 1.02 s, 1099 tensors).
"""
from __future__ import annotations

import os
import sys

import pytest
import torch

from speechkit.convert.clearervoice import convert_clearervoice_checkpoint

SOURCE = os.environ.get("CLEARERVOICE_MOSSFORMER2")


@pytest.mark.skipif(not SOURCE, reason="CLEARERVOICE_MOSSFORMER2 (official mossformer2_ss package folder) is not set")
def test_converted_official_model_reproduces_the_official_output(tmp_path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(SOURCE))
    official_module = pytest.importorskip("mossformer2_ss.mossformer2")
    torch.manual_seed(0)
    official = official_module.MossFormer(in_channels=64, out_channels=64, num_blocks=2, kernel_size=16).eval()
    optimizer = torch.optim.Adam(official.parameters(), lr=1.5e-4)
    state = {"module." + key: value for key, value in official.state_dict().items()}
    path = tmp_path / "last_best_checkpoint.pt"
    torch.save({"model": state, "optimizer": optimizer.state_dict(), "epoch": 1, "step": 10}, path)
    ours = convert_clearervoice_checkpoint(path)
    assert ours.num_parameters() + ours.config.rotary_dim // 2 == sum(p.numel() for p in official.parameters())
    for length in (4800, 9003):
        x = 0.3 * torch.randn(1, length, generator=torch.Generator().manual_seed(length))
        with torch.no_grad():
            reference = torch.stack(official(x), dim=1)  # K x [B, T] -> [B, K, T]
            output = ours(x[:, None])[:, :, 0]  # [B, K, 1, T] -> [B, K, T]
        torch.testing.assert_close(output, reference, atol=1e-6, rtol=1e-5)
    sys.modules.pop("mossformer2_ss.mossformer2", None)
