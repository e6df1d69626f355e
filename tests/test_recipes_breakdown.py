"""recipes.breakdown: per-group means of per-file scores joined with fixed-set metadata."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from recipes.breakdown import breakdown, group_key, main
from speechkit.errors import ConfigError


def _fixed_set(root: Path, metas: list[dict]) -> Path:
    root.mkdir(parents=True)
    lines = [json.dumps({"name": f"{index:05d}", "meta": meta, "tensors": {}}) for index, meta in enumerate(metas)]
    (root / "items.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_group_keys() -> None:
    assert group_key("noise/street/abc", r"noise/([a-z]+)/") == "street"
    assert group_key("shoebox rt60=0.41", r"rt60=([0-9.]+)", [0.2, 0.4, 0.7]) == "[0.4, 0.7)"
    assert group_key("measured", r"rt60=([0-9.]+)", [0.2, 0.4, 0.7]) == "measured"
    assert group_key(-7.0, None, [-5, 5]) == "< -5" and group_key(9.0, None, [-5, 5]) == ">= 5"
    assert group_key(float("inf"), None, [-5, 5]) == "inf" and group_key("", None) == "(none)"


def test_breakdown_means_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _fixed_set(tmp_path / "set", [{"reverb": "measured"}, {"reverb": "shoebox rt60=0.30"},
                                         {"reverb": "shoebox rt60=0.35"}])
    scores = tmp_path / "scores.csv"
    scores.write_text("name,si_sdri,stoi\n00000,1.0,0.9\n00001,2.0,0.8\n00002,4.0,\n")
    summary = breakdown(root, scores, "reverb", r"rt60=([0-9.]+)", [0.2, 0.4, 0.7])
    assert summary["measured"] == {"files": 1.0, "si_sdri": 1.0, "stoi": 0.9}
    assert summary["[0.2, 0.4)"] == {"files": 2.0, "si_sdri": 3.0, "stoi": 0.8}  # a blank score is left out
    assert main([str(root), str(scores), "--by", "reverb"]) == 0
    assert "| shoebox rt60=0.30 | 1 | 2.000 | 0.800 |" in capsys.readouterr().out
    assert main([str(root), str(scores), "--by", "noise_id"]) == 1
    assert "no field 'noise_id'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="not a fixed set"):
        breakdown(tmp_path, scores, "reverb")
