"""bench.separation_bounds: the mixture-consistent ceiling of a fixed separation set."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench import separation_bounds

RATE = 16000


def _write_set(root: Path, noise_gains: list[float]) -> Path:
    """Two tones per item plus white noise scaled by each gain, in the fixed-set layout."""
    root.mkdir()
    rng = np.random.default_rng(0)
    time_axis = np.arange(RATE // 2) / RATE
    lines = []
    for index, gain in enumerate(noise_gains):
        talkers = np.stack([0.3 * np.sin(2 * np.pi * 200 * time_axis), 0.3 * np.sin(2 * np.pi * 900 * time_axis)])
        mixture = talkers.sum(axis=0) + gain * rng.standard_normal(time_axis.size)  # [T]
        folder = root / f"{index:05d}"
        folder.mkdir()
        sf.write(folder / "mixture.wav", mixture[:, None], RATE, subtype="DOUBLE")
        sf.write(folder / "targets.wav", talkers.T, RATE, subtype="DOUBLE")
        tensors = {"mixture": {"file": f"{index:05d}/mixture.wav", "shape": [1, time_axis.size]},
                   "targets": {"file": f"{index:05d}/targets.wav", "shape": [2, 1, time_axis.size]}}
        lines.append(json.dumps({"name": f"{index:05d}", "tensors": tensors}))
    (root / "items.jsonl").write_text("\n".join(lines) + "\n")
    (root / "index.json").write_text(json.dumps({"sample_rate": RATE}))
    return root


def test_the_consistent_oracle_sums_to_the_mixture_and_is_closest_to_the_targets() -> None:
    rng = np.random.default_rng(1)
    targets, residual = rng.standard_normal((2, 400)), rng.standard_normal(400)
    mixture = targets.sum(axis=0) + residual
    oracle = separation_bounds.consistent_oracle(mixture, targets)
    assert np.allclose(oracle.sum(axis=0), mixture)
    other = oracle + np.stack([residual, -residual]) * 0.1  # another split that still sums to the mixture
    assert np.sum((other - targets) ** 2) > np.sum((oracle - targets) ** 2)


def test_louder_noise_lowers_the_ceiling_and_clean_items_are_left_out(tmp_path: Path) -> None:
    quiet = separation_bounds.score_set(_write_set(tmp_path / "quiet", [0.01, 0.0]))
    loud = separation_bounds.score_set(_write_set(tmp_path / "loud", [0.1]))
    assert (quiet["items"], quiet["items_without_residual"], loud["items"]) == (1, 1, 1)
    assert quiet["oracle_si_sdr"] > loud["oracle_si_sdr"] + 15  # 20 dB less noise, shared the same way
    assert loud["oracle_si_sdri"] == pytest.approx(loud["oracle_si_sdr"] - loud["input_si_sdr"])
    assert loud["oracle_si_sdr"] > loud["input_si_sdr"]


def test_main_writes_the_report_and_refuses_a_folder_without_items(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bounds.json"
    test_set = _write_set(tmp_path / "set", [0.05, 0.05])
    assert separation_bounds.main(["--test-set", str(test_set), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["test_sets"][str(test_set)]["items"] == 2
    assert "ceiling SI-SDRi" in out.with_suffix(".md").read_text()
    assert separation_bounds.main(["--test-set", str(tmp_path), "--out", str(out)]) == 2
    assert "not a fixed set" in capsys.readouterr().err
