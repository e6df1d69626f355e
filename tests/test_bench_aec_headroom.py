"""The residual-echo suppression headroom study (bench/aec_headroom.py) on synthetic and fake-cache items."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.test_bench_aec_peers import draw_echo_from_the_fake_train_split, synthetic_items


def test_oracle_bounds_the_suppressor_and_keeps_near_end_single_talk() -> None:
    from bench.aec_headroom import SYSTEMS, run_filter
    from bench.compare_aec import score_item

    items = synthetic_items()  # 1 s each: far-end single talk, double talk, near-end single talk
    run_filter(items, padding=128)
    fst, dt, nst = items
    assert fst["error"].shape == (fst["mic"].size + 128,) and fst["aligned"].shape == fst["error"].shape

    def score(label: str, item: dict) -> dict:
        return score_item(SYSTEMS[label](item)[: item["mic"].size], item, with_aecmos=False)

    bundled = "filter + suppressor (bundled, overestimation 2)"
    oracle = "filter + oracle gain (knows the near end; a bound)"
    assert score(oracle, fst)["erle"] > score(bundled, fst)["erle"] > score("filter alone", fst)["erle"] > 3.0
    assert score(oracle, dt)["si_sdr"] > score("filter alone", dt)["si_sdr"]
    # nothing to remove without a far end: the oracle's gain is 1 and the STFT reconstructs the input
    np.testing.assert_allclose(SYSTEMS[oracle](nst)[: nst["mic"].size], nst["mic"], atol=1e-4)


def test_main_builds_validation_items_once_and_reports_every_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.aec_headroom import SYSTEMS, main
    from tests.test_recipes_realworld import make_cache

    corpus = make_cache(tmp_path / "corpus")
    built = draw_echo_from_the_fake_train_split(monkeypatch)
    out = tmp_path / "headroom.json"
    arguments = ["--corpus-root", str(corpus), "--items", "1", "--cache-root", str(tmp_path / "cache"),
                 "--out", str(out)]
    assert main(arguments) == 0
    assert built == ["validation"] * 3
    assert len(list((tmp_path / "cache" / "fixed" / "aec_headroom_validation_16k").iterdir())) == 3
    report = json.loads(out.read_text())
    assert list(report["systems"]) == list(SYSTEMS) and report["items_per_scenario"] == 1
    assert report["systems"]["microphone"]["fst_erle"] == pytest.approx(0.0, abs=1e-6)
    assert "| filter + oracle gain" in out.with_suffix(".md").read_text()
    assert main(arguments) == 0 and built == ["validation"] * 3  # the fixed items are reused, not rebuilt
