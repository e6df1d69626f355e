"""bench/oracle_masks.py: oracle IRM/PSM estimates and the report on a tiny synthetic fixed set."""
from __future__ import annotations

import json

import numpy as np
import soundfile as sf
import torch

from bench import oracle_masks
from speechkit.metrics import si_sdr
from test_bench_peers import gliding_voice


def _mixture(seed: int, noise_level: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    speech = torch.from_numpy(gliding_voice(0.5, seed=seed))
    noise = noise_level * torch.randn(speech.shape[-1], generator=torch.Generator().manual_seed(seed))
    return speech + noise, speech, noise


def test_oracle_masks_recover_speech() -> None:
    mixture, speech, noise = _mixture(0, 0.05)
    estimates = oracle_masks.oracle_estimates(mixture, speech, noise, 256, 64)
    noisy = float(si_sdr(mixture, speech))
    irm, psm = (float(si_sdr(estimates[name], speech)) for name in ("IRM", "PSM"))
    assert estimates["IRM"].shape == mixture.shape
    assert irm > noisy + 5 and psm >= irm - 0.5  # PSM is the better real mask
    noise_free = oracle_masks.oracle_estimates(speech, speech, torch.zeros_like(speech), 256, 64)
    torch.testing.assert_close(noise_free["IRM"], speech, atol=1e-4, rtol=0)  # no noise: the mask is one


def test_report_on_a_fixed_set(tmp_path) -> None:
    lines = []
    for index, snr in enumerate((-2.0, 7.0)):
        mixture, speech, noise = _mixture(index, 0.1 if snr < 0 else 0.02)
        folder = tmp_path / f"{index:05d}"
        folder.mkdir()
        tensors = {}
        for key, audio in (("mixture", mixture), ("targets", speech), ("noise", noise)):
            sf.write(folder / f"{key}.wav", audio.numpy(), 16000, subtype="FLOAT")
            tensors[key] = {"file": f"{index:05d}/{key}.wav"}
        lines.append(json.dumps({"name": f"{index:05d}", "meta": {"snr_db": snr}, "tensors": tensors}))
    (tmp_path / "items.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "oracle.json"
    assert oracle_masks.main(["--test-set", str(tmp_path), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    summary = report["summary"]
    assert report["num_items"] == 2 and summary["noisy input"]["si_sdri"] == 0.0
    assert summary["oracle PSM, 32 ms"]["si_sdri"] > 5
    assert np.isfinite(summary["oracle IRM, 16 ms"]["si_sdri_-5_0"])
    assert "| oracle IRM, 32 ms |" in out.with_suffix(".md").read_text()
    assert oracle_masks.main(["--test-set", str(tmp_path / "missing"), "--out", str(out)]) == 2
