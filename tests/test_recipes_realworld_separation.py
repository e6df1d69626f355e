"""Real-sentence separation mixtures with the device channel (recipes.train:realworld_separation)."""
from pathlib import Path

import numpy as np
import pytest

from recipes.train import fixed_realworld_separation, realworld_separation
from tests.test_recipes_realworld import make_cache


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cache(tmp_path_factory.mktemp("corpus_cache_separation"))


def test_items_mix_two_speakers_and_share_one_channel(cache: Path) -> None:
    dataset = realworld_separation(str(cache), "train", segment_seconds=0.5, length=12, seed=1, max_floor_db=None,
                                   noise_probability=0.0, reverb_probability=0.0)
    dataset.conditions = type(dataset.conditions)(colouration_probability=1.0, telephone_probability=1.0,
                                                  clipping_probability=0.0, dc_offset_probability=0.0)
    item = dataset[0]
    assert item["mixture"].shape == (1, 8000) and item["targets"].shape == (2, 1, 8000)
    assert "telephone" in item["channel"] and "eq" in item["channel"]
    ids = item["speech_ids"].split("|")
    assert len({Path(entry).parent.name for entry in ids}) == 2  # two different speakers
    # the channel is linear and shared: the targets still add up to the noiseless mixture
    np.testing.assert_allclose(item["targets"].sum(0).numpy(), item["mixture"].numpy(), atol=1e-4)
    again = dataset[0]
    np.testing.assert_array_equal(again["mixture"].numpy(), item["mixture"].numpy())


def test_fixed_separation_set_is_built_once(cache: Path, tmp_path: Path) -> None:
    root = tmp_path / "sep"
    dataset = fixed_realworld_separation(str(root), str(cache), "validation", count=3, segment_seconds=0.5,
                                         max_floor_db=None, noise_probability=0.0, reverb_probability=0.0)
    assert len(dataset) == 3 and (root / "index.json").is_file()
    assert dataset[0]["targets"].shape[0] == 2
