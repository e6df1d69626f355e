"""``speechkit eval`` on folders of files and on a model + fixed test set."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from speechkit.cli import main

RATE = 8000


def tone(seed: int, seconds: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    time = np.arange(int(seconds * RATE)) / RATE
    frequencies = rng.uniform(150, 900, size=3)
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(2, 5) * time), 0, None)
    return (0.1 * envelope * np.sin(2 * np.pi * frequencies[:, None] * time).sum(0)).astype(np.float32)


def write(path: Path, audio: np.ndarray, rate: int = RATE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), audio, rate, subtype="FLOAT")


def run_json(capsys: pytest.CaptureFixture, *arguments: str) -> dict:
    assert main(["eval", *arguments, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_enhancement_folders_with_mixtures_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(0)
    for index in range(2):
        clean = tone(index)
        noise = (0.05 * rng.standard_normal(clean.shape[0])).astype(np.float32)
        write(tmp_path / "ref" / f"utt{index}.wav", clean)
        write(tmp_path / "mix" / f"utt{index}.wav", clean + noise)
        write(tmp_path / "est" / f"utt{index}.wav", clean + 0.1 * noise)  # noise 20 dB lower
    result = run_json(
        capsys, "--references", str(tmp_path / "ref"), "--estimates", str(tmp_path / "est"),
        "--mixtures", str(tmp_path / "mix"), "--metrics", "si_sdr,si_sdri,sdr,stoi", "--csv", str(tmp_path / "scores.csv"),
    )
    assert [row["name"] for row in result["rows"]] == ["utt0.wav", "utt1.wav"]
    assert result["summary"]["si_sdri"] == pytest.approx(20.0, abs=0.5)
    assert result["summary"]["count"] == 2
    assert "stoi" in result["summary"] and "input_stoi" in result["summary"]
    with (tmp_path / "scores.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and "sdr" in rows[0]
    assert main(["eval", "--references", str(tmp_path / "ref"), "--estimates", str(tmp_path / "est"), "--metrics", "si_sdr"]) == 0
    table = capsys.readouterr().out
    assert "si_sdr" in table and "files" in table
    for index in range(2):  # the same estimates 6 dB too loud: SI-SDR unchanged, the level says it
        write(tmp_path / "loud" / f"utt{index}.wav", 2.0 * soundfile.read(tmp_path / "est" / f"utt{index}.wav")[0])
    loud = run_json(capsys, "--references", str(tmp_path / "ref"), "--estimates", str(tmp_path / "loud"),
                    "--metrics", "si_sdr,level_db")
    assert loud["summary"]["level_db"] == pytest.approx(6.02, abs=0.1)  # the estimates are at the reference level
    assert loud["summary"]["si_sdr"] == pytest.approx(result["summary"]["si_sdr"], abs=1e-3)


def test_separation_folders_are_permutation_invariant(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first, second = tone(1), tone(2)
    write(tmp_path / "ref" / "s1" / "a.wav", first)
    write(tmp_path / "ref" / "s2" / "a.wav", second)
    write(tmp_path / "mix" / "a.wav", first + second)
    write(tmp_path / "est" / "a_s1.wav", second)  # what `speechkit separate` writes, in swapped order
    write(tmp_path / "est" / "a_s2.wav", first)
    result = run_json(
        capsys, "--references", str(tmp_path / "ref"), "--estimates", str(tmp_path / "est"),
        "--mixtures", str(tmp_path / "mix"), "--metrics", "si_sdr,si_sdri",
    )
    assert result["rows"][0]["si_sdr"] > 60
    assert result["rows"][0]["si_sdri"] > 50


def test_erle_on_far_end_only_segments(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    echo = tone(3)
    near_end = np.zeros_like(echo)
    near_end[4000:] = tone(4)[4000:]
    write(tmp_path / "ref" / "x.wav", near_end)
    write(tmp_path / "mic" / "x.wav", echo + near_end)
    output = near_end + 0.01 * echo  # 40 dB of echo removed
    write(tmp_path / "est" / "x.wav", output)
    result = run_json(
        capsys, "--references", str(tmp_path / "ref"), "--estimates", str(tmp_path / "est"),
        "--mixtures", str(tmp_path / "mic"), "--metrics", "erle,si_sdr",
    )
    assert result["rows"][0]["erle"] == pytest.approx(40.0, abs=0.5)


def test_model_on_fixed_test_set(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from recipes.data.fixedset import write_fixed_set
    from recipes.trainer import SyntheticMixtures
    from speechkit.checkpoint import save_checkpoint
    from speechkit.models import build_model

    write_fixed_set(SyntheticMixtures(num_items=2, num_samples=4000, sample_rate=RATE), tmp_path / "test", RATE)
    checkpoint = save_checkpoint(build_model("conv_tasnet", "tiny", n_src=1), tmp_path / "model.safetensors")
    result = run_json(capsys, "--model", str(checkpoint), "--test-set", str(tmp_path / "test"), "--metrics", "si_sdr,si_sdri")
    assert len(result["rows"]) == 2
    assert all(np.isfinite(row["si_sdri"]) for row in result["rows"])
    limited = run_json(capsys, "--model", str(checkpoint), "--test-set", str(tmp_path / "test"), "--metrics", "si_sdr",
                       "--attenuation-limit", "6")
    assert [row["si_sdr"] for row in limited["rows"]] != [row["si_sdr"] for row in result["rows"]]


def test_models_on_a_microphone_array_test_set(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A 3-mic model gets all microphones; a one-channel model enhances the reference mic (the first),
    as the trainer's validation does; both are scored against the one reference channel."""
    import torch

    from recipes.data.fixedset import write_fixed_set
    from speechkit.checkpoint import save_checkpoint
    from speechkit.models import build_model

    items = []
    for seed in range(2):
        speech = torch.from_numpy(tone(seed))
        mixture = torch.stack([speech + 0.05 * torch.randn(RATE) for _ in range(3)])  # [3, T]
        items.append({"mixture": mixture, "targets": speech[None, None]})  # targets [1, 1, T]
    write_fixed_set(items, tmp_path / "test", RATE)
    array_model = save_checkpoint(build_model("conv_tasnet", "tiny", n_src=1, input_channels=3), tmp_path / "a.safetensors")
    mono_model = save_checkpoint(build_model("conv_tasnet", "tiny", n_src=1), tmp_path / "m.safetensors")
    for checkpoint in (array_model, mono_model):
        result = run_json(capsys, "--model", str(checkpoint), "--test-set", str(tmp_path / "test"), "--metrics", "si_sdr,si_sdri")
        assert len(result["rows"]) == 2 and all(np.isfinite(row["si_sdri"]) for row in result["rows"])


def test_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write(tmp_path / "ref" / "a.wav", tone(0))
    (tmp_path / "est").mkdir()
    assert main(["eval", "--references", str(tmp_path / "ref"), "--estimates", str(tmp_path / "est")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["eval", "--estimates", str(tmp_path / "ref")]) == 2
    assert "--dnsmos" in capsys.readouterr().err
    assert main(["eval", "--references", str(tmp_path / "ref"), "--estimates", str(tmp_path / "ref"), "--metrics", "mos"]) == 2
    assert "Unknown metric" in capsys.readouterr().err
