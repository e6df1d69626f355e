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
                                   noise_probability=0.0, reverb_probability=0.0,
                                   conditions={"colouration_probability": 1.0, "telephone_probability": 1.0})
    assert dataset.conditions.clipping_probability == 0.0 and dataset.conditions.silence_probability == 0.0
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


def test_conditions_override_the_channel(cache: Path) -> None:
    """An all-high-passed set (300 Hz, no colouration) has its low band removed in every item."""
    highpassed = realworld_separation(
        str(cache), "train", segment_seconds=0.5, length=4, seed=1, max_floor_db=None, noise_probability=0.0,
        reverb_probability=0.0, conditions={"colouration_probability": 1.0, "eq_bands": [0, 0],
                                            "highpass_probability": 1.0, "highpass_hz": [300.0, 300.0]},
    )
    plain = realworld_separation(str(cache), "train", segment_seconds=0.5, length=4, seed=1, max_floor_db=None,
                                 noise_probability=0.0, reverb_probability=0.0,
                                 conditions={"colouration_probability": 0.0, "telephone_probability": 0.0})
    for index in range(4):
        assert highpassed[index]["channel"] == "eq" and plain[index]["channel"] == ""

        def low_band_share(audio: np.ndarray) -> float:
            power = np.abs(np.fft.rfft(audio[0] * np.hanning(audio.shape[-1]))) ** 2  # 0.5 s: 2 Hz bins
            return float(power[: 150 // 2].sum() / power.sum())  # below 150 Hz

        # a 2nd-order high-pass at 300 Hz takes 12-19 dB off 100-150 Hz
        assert low_band_share(highpassed[index]["mixture"].numpy()) < 0.3 * low_band_share(plain[index]["mixture"].numpy())
    assert highpassed.conditions.highpass_hz == (300.0, 300.0)


def test_fixed_enhancement_set_holds_the_generated_items(cache: Path, tmp_path: Path) -> None:
    """fixed_realworld writes the items realworld_enhancement draws with the split's seed (16-bit files)."""
    from recipes.data.fixedset import DEFAULT_SPLIT_SEEDS
    from recipes.train import fixed_realworld, realworld_enhancement

    options = dict(segment_seconds=0.5, max_floor_db=None)
    fixed = fixed_realworld(str(tmp_path / "enh"), str(cache), "validation", count=2, **options)
    drawn = realworld_enhancement(str(cache), "validation", length=2, seed=DEFAULT_SPLIT_SEEDS["validation"], **options)
    assert len(fixed) == 2 and "fixed validation/test set of :func:`realworld_enhancement`" in fixed_realworld.__doc__
    for index in range(2):
        np.testing.assert_allclose(fixed[index]["mixture"].numpy(), drawn[index]["mixture"].numpy(), atol=1e-4)
