"""Echo scenarios of real sentences from a corpus cache (recipes.train:realworld_echo)."""
from pathlib import Path

import numpy as np
import pytest

from recipes.train import fixed_realworld_echo, realworld_echo
from speechkit.errors import ConfigError
from tests.test_recipes_realworld import NOISES, SPEAKERS, make_cache


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cache(tmp_path_factory.mktemp("corpus_cache_echo"))


def test_items_draw_two_speakers_noise_and_rooms_of_the_split(cache: Path) -> None:
    dataset = realworld_echo(str(cache), "train", segment_seconds=0.5, length=16, seed=3, max_floor_db=None,
                             echo_options={"scenario_weights": {"double_talk": 1.0}, "rir_source": "simulated",
                                           "delay_range_ms": [0.0, 5.0]})
    assert dataset.config.delay_range_ms == (0.0, 5.0)
    for index in range(4):
        item = dataset[index]
        assert item["mixture"].shape == (2, 8000) and item["targets"].shape == (1, 1, 8000)
        far, near = Path(item["far_id"]).parent.name, Path(item["near_id"]).parent.name
        assert far != near and {far, near} <= set(SPEAKERS["train"])
        assert Path(item["noise_id"]).stem in NOISES["train"]
        assert item["scenario"] == "double_talk" and item["rir"].startswith("shoebox") and item["delay_ms"] <= 5.0
        # mic = near end + echo + noise, the far end is the second channel
        total = item["near_end"] + item["echo"] + item["noise"]
        np.testing.assert_allclose(item["mixture"][0].numpy(), total[0].numpy(), atol=1e-5)
        np.testing.assert_array_equal(item["mixture"][1].numpy(), item["far_end"][0].numpy())


def test_unknown_echo_option_is_refused(cache: Path) -> None:
    with pytest.raises(ConfigError, match="unknown echo_options"):
        realworld_echo(str(cache), "train", length=1, max_floor_db=None, echo_options={"delay_ms": 3})


def test_measured_echo_paths_need_two_responses_in_the_split(cache: Path) -> None:
    """An echo-path change needs two positions; a split with one measured response says so in one line."""
    dataset = realworld_echo(str(cache), "train", segment_seconds=0.5, length=1, max_floor_db=None,
                             echo_options={"rir_source": "measured"})
    with pytest.raises(ConfigError, match="2 distinct source positions"):
        dataset[0]


def test_fixed_echo_set_is_built_once_from_the_validation_split(cache: Path, tmp_path: Path) -> None:
    root = tmp_path / "echo"
    options = {"rir_source": "simulated"}
    dataset = fixed_realworld_echo(str(root), str(cache), "validation", count=2, segment_seconds=0.5,
                                   max_floor_db=None, echo_options=options)
    assert len(dataset) == 2 and (root / "index.json").is_file()
    assert dataset[0]["mixture"].shape == (2, 8000)
    again = fixed_realworld_echo(str(root), str(cache), "validation", count=2, segment_seconds=0.5, max_floor_db=None,
                                 echo_options=options)
    np.testing.assert_array_equal(again[1]["mixture"].numpy(), dataset[1]["mixture"].numpy())
