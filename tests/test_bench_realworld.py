"""bench.compare_realworld without the corpus cache: group conditions, per-condition scoring and the report."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import speech_like

pytest.importorskip("pesq")
pytest.importorskip("pystoi")

from bench import compare_realworld  # noqa: E402
from bench.peers.base import Availability, Enhancer  # noqa: E402


class HalfNoise(Enhancer):
    """Keeps the first half of every signal and silences the rest (hurts STOI on noisy items)."""

    name = "half"
    native_rate = 16000
    block_size = 160
    stream_delay = 0

    @classmethod
    def availability(cls) -> Availability:
        return Availability(True)

    def process_native(self, audio: np.ndarray, state: object) -> np.ndarray:
        output = audio.copy()
        output[audio.shape[-1] // 2 :] *= 0.1
        return output


def test_every_group_has_its_one_condition():
    configs = compare_realworld.group_configs()
    assert tuple(configs) == compare_realworld.GROUPS
    noisy = configs["noisy"]
    assert noisy.reverb.probability == 0 and noisy.babble_probability == 0 and noisy.clean_probability == 0
    assert noisy.conditions.telephone_probability == 0 and noisy.conditions.colouration_probability == 0
    assert noisy.snr_range_db == (-5.0, 25.0) and noisy.speech_level_db == (-45.0, -10.0)
    assert configs["reverberant"].reverb.probability == 1.0 and configs["babble"].babble_probability == 1.0
    assert configs["telephone"].conditions.telephone_probability == 1.0 and configs["clean"].clean_probability == 1.0
    assert configs["coloured"].conditions.colouration_probability == 1.0
    assert configs["coloured"].conditions.highpass_probability == 1.0


def _item(name: str, group: str, snr_db: float, channel: str = "", reverb: str = "", seed: int = 0) -> dict:
    clean = speech_like(1.0, 16000, seed=seed, level=0.2)[0]
    noise = 0.0 if group == "clean" else 0.05 * np.random.default_rng(seed).standard_normal(clean.shape)
    return {"name": name, "group": group, "mixture": (clean + noise).astype(np.float32), "clean": clean,
            "snr_db": snr_db, "noise_type": "clean" if group == "clean" else "city+babble", "channel": channel,
            "reverb": reverb}


def test_per_condition_scores_and_report():
    items = [_item("a", "noisy", 3.0), _item("b", "telephone", 12.0, channel="telephone", seed=1),
             _item("c", "clean", float("inf"), seed=2)]
    conditions = compare_realworld.condition_order(items)
    assert conditions[:3] == ["group: noisy", "group: telephone", "group: clean"]
    assert "noise: city" in conditions and "SNR +0..+5 dB" in conditions and "band-limited (telephone)" in conditions
    baseline = compare_realworld.evaluate(None, "noisy input (unprocessed)", items, [], None, False, conditions)
    result = compare_realworld.evaluate(HalfNoise(), "half", items, [], baseline["items"], False, conditions)
    rows = {row["name"]: row for row in result["items"]}
    assert "si_sdri" in rows["a"] and "si_sdri" not in rows["c"]  # a clean input's SI-SDR is unbounded
    assert rows["a"]["delta_stoi"] < 0 and rows["c"]["level_change_db"] < 0
    summary = result["summary"]
    assert summary["per_condition"]["group: telephone"]["count"] == 1
    worst = summary["worst_condition"]
    assert worst["delta_stoi"] < 0 and not set(worst["conditions_below_input"]) & set(compare_realworld.CLEAN_CONDITIONS)
    report = {"date": "today", "machine": {"cpu": "cpu", "cores": 2, "platform": "test"}, "skipped": {}, "notes": [],
              "data": {"items": 3, "noisy_items": 2, "clean_items": 1, "speakers": 1, "noise_files": ["n"],
                       "real_recordings": 0, "real_floor_db": -30.0, "conditions": conditions},
              "systems": [baseline, result]}
    table = compare_realworld.markdown_report(report)
    assert "| half |" in table and "| group: clean | 1 | 1.000 |" in table and "below input" in table
