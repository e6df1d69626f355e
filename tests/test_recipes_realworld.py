"""Corpus cache (corpora.py), recording conditions (conditions.py) and real-world mixing (realworld.py).

Everything runs on a fake corpus cache of short synthetic FLAC files built in a temporary folder.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from recipes.data.audio import snr_db
from recipes.data.conditions import (
    ConditionConfig,
    apply_filters,
    clip,
    cut_silence,
    dc_offset,
    draw_channel,
    random_colouration,
    telephone_band,
)
from recipes.data.corpora import filter_clean_speech, load_corpora, speech_floor_db
from recipes.data.datasets import ReverbConfig
from recipes.data.minicorpus import CorpusEntry
from recipes.data.realworld import RealWorldConfig, RealWorldEnhancementDataset, realworld_dataset
from speechkit.errors import ConfigError

RATE = 16000
SPEAKERS = {"train": ["spk_a", "spk_b", "spk_c"], "valid": ["spk_d", "spk_e"], "test": ["spk_f"]}
NOISES = {"train": ["rain", "wind", "places_church"], "valid": ["cafe"], "test": ["street"]}
OFF = ConditionConfig(colouration_probability=0.0, telephone_probability=0.0, clipping_probability=0.0,
                      dc_offset_probability=0.0, silence_probability=0.0)


def speechlike(rng: np.random.Generator, seconds: float = 1.0, rate: int = RATE) -> np.ndarray:
    """Two voiced bursts (harmonics of a random pitch) with true silence between and around them."""
    time = np.arange(int(seconds * rate)) / rate
    pitch = rng.uniform(100.0, 220.0)
    voiced = sum(np.sin(2 * np.pi * pitch * k * time + rng.uniform(0, 6.28)) / k for k in range(1, 8))
    gate = ((time > 0.1 * seconds) & (time < 0.4 * seconds)) | ((time > 0.55 * seconds) & (time < 0.9 * seconds))
    return (0.2 * voiced * gate).astype(np.float32)


def write(path: Path, audio: np.ndarray, rate: int = RATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, audio, rate)
    return path


def make_cache(root: Path) -> Path:
    """A corpus cache: manifest.jsonl + splits.json + 16 kHz FLAC speech, noise and RIRs."""
    rng = np.random.default_rng(0)
    records: list[dict] = []

    def add(path: str, kind: str, corpus: str, audio: np.ndarray, **extra: object) -> None:
        write(root / path, audio)
        records.append({"path": path, "kind": kind, "corpus": corpus, "license": "CC-BY-4.0",
                        "source": "synthetic test data", "duration_s": audio.size / RATE, **extra})

    for speaker in [name for names in SPEAKERS.values() for name in names]:
        for utterance in range(2):
            add(f"speech/speechocean762/{speaker}/{utterance}.flac", "speech", "speechocean762",
                speechlike(rng), speaker=speaker, lang="en")
    add("speech/speechocean762/spk_a/short.flac", "speech", "speechocean762", speechlike(rng, 0.5), speaker="spk_a")
    add("speech/speechocean762/spk_z/0.flac", "speech", "speechocean762", speechlike(rng), speaker="spk_z")  # no split
    add("speech/other/spk_o/0.flac", "speech", "other", speechlike(rng), speaker="spk_o")  # corpus not selected
    for names in NOISES.values():
        for name in names:
            add(f"noise/moodist/{name}.flac", "noise", "moodist", (0.1 * rng.standard_normal(RATE)).astype(np.float32))
    response = np.zeros(1600, np.float32)
    response[20], response[200:] = 1.0, 0.05 * rng.standard_normal(1400) * np.exp(-np.arange(1400) / 300)
    for name in ("room_1", "room_2", "room_3"):
        add(f"rirs/iosr/{name}.flac", "rirs", "iosr", response)
    (root / "manifest.jsonl").write_text("\n".join(json.dumps(record) for record in records) + "\n")
    splits = {
        "seed": 762,
        "speech": {"speechocean762": SPEAKERS, "other": {"train": ["spk_o"]}},
        "noise": {"moodist": {split: [f"noise/moodist/{name}.flac" for name in names]
                              for split, names in NOISES.items()}},
        "rirs": {"iosr": {"train": ["rirs/iosr/room_1.flac"], "valid": ["rirs/iosr/room_2.flac"],
                          "test": ["rirs/iosr/room_3.flac"]}},
    }
    (root / "splits.json").write_text(json.dumps(splits))
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cache(tmp_path_factory.mktemp("corpus_cache"))


# ----------------------------------------------------------------------------------------- corpora.py
def test_load_corpora_maps_splits_and_filters(cache: Path) -> None:
    corpora = load_corpora(cache)
    groups = {split: {e.group for e in corpora.select("speech", split)} for split in ("train", "validation", "test")}
    assert groups == {"train": {"speechocean762:spk_a", "speechocean762:spk_b", "speechocean762:spk_c"},
                      "validation": {"speechocean762:spk_d", "speechocean762:spk_e"},
                      "test": {"speechocean762:spk_f"}}
    assert len(corpora.select("speech", "train")) == 6  # the 0.5 s file is below min_speech_seconds
    assert not any("spk_z" in e.id or e.corpus == "other" for e in corpora.entries)
    noise = {split: sorted(Path(e.id).stem for e in corpora.select("noise", split))
             for split in ("train", "validation")}
    assert noise == {"train": ["rain", "wind"], "validation": ["cafe"]}  # places_church is unusual noise
    assert [e.id for e in corpora.select("rir", "test")] == ["rirs/iosr/room_3.flac"]
    entry = corpora.select("speech", "test")[0]
    assert Path(entry.sources[0]).is_file() and entry.frames == RATE and entry.language == "en"
    assert corpora.licenses() == {"speechocean762": "CC-BY-4.0", "moodist": "CC-BY-4.0", "iosr": "CC-BY-4.0"}
    assert len(load_corpora(cache, min_speech_seconds=0.4).select("speech", "train")) == 7
    assert {e.corpus for e in load_corpora(cache, speech_corpora=None).select("speech", "train")} == {
        "speechocean762", "other"}
    with pytest.raises(ConfigError, match="split must be one of"):
        corpora.select("speech", "valid")


def _one_line_error(root: Path, match: str, **kwargs: object) -> None:
    with pytest.raises(ConfigError, match=match) as error:
        load_corpora(root, **kwargs)
    assert "\n" not in str(error.value)


def test_corpus_cache_errors_are_one_line(cache: Path, tmp_path: Path) -> None:
    _one_line_error(tmp_path, "manifest.jsonl is missing")
    (tmp_path / "manifest.jsonl").write_text((cache / "manifest.jsonl").read_text())
    _one_line_error(tmp_path, "splits.json is missing")
    (tmp_path / "splits.json").write_text("{not json")
    _one_line_error(tmp_path, "splits.json is not JSON")
    (tmp_path / "splits.json").write_text(json.dumps({"speech": ["spk_a"]}))
    _one_line_error(tmp_path, "'speech' must map corpus names")
    (tmp_path / "splits.json").write_text(json.dumps({"speech": {"speechocean762": {"dev": ["spk_a"]}}}))
    _one_line_error(tmp_path, "unknown split 'dev'")
    (tmp_path / "splits.json").write_text(json.dumps({"speech": {"speechocean762": ["spk_a"]}}))
    _one_line_error(tmp_path, "speech/speechocean762 must map split names to lists")
    (tmp_path / "splits.json").write_text((cache / "splits.json").read_text())
    _one_line_error(tmp_path, "no speech entries", speech_corpora=("missing_corpus",))
    (tmp_path / "manifest.jsonl").write_text('{"path": "a.flac", "kind": "speech"}\n{broken\n')
    _one_line_error(tmp_path, "line 2 of")
    (tmp_path / "manifest.jsonl").write_text('["a.flac"]\n')
    _one_line_error(tmp_path, "line 1 of .* is not a JSON object")
    (tmp_path / "manifest.jsonl").write_text('{"path": "a.flac", "kind": "music"}\n')
    _one_line_error(tmp_path, "no usable kind/path")


def test_speech_floor_orders_clean_before_noisy() -> None:
    rng = np.random.default_rng(1)
    clean = speechlike(rng)
    noisy = clean + (0.02 * rng.standard_normal(clean.size)).astype(np.float32)
    very_noisy = clean + (0.1 * rng.standard_normal(clean.size)).astype(np.float32)
    floors = [speech_floor_db(signal, RATE) for signal in (clean, noisy, very_noisy)]
    assert floors[0] < -40.0 < floors[1] < floors[2] < 0.0
    assert speech_floor_db(clean[:100], RATE) == 0.0  # too short to judge: treated as noisy


def test_filter_clean_speech_uses_and_writes_its_cache(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    clean = speechlike(rng)
    paths = {"clean": write(tmp_path / "clean.flac", clean),
             "noisy": write(tmp_path / "noisy.flac", clean + 0.05 * rng.standard_normal(clean.size))}

    def entry(name: str, kind: str = "speech") -> CorpusEntry:
        return CorpusEntry(id=name, kind=kind, split="train", group=name, corpus="c", license="", provenance="",
                           native_sample_rate=RATE, sources=[str(paths[name])])

    entries = [entry("clean"), entry("noisy"), entry("noisy", "noise")]
    cache_file = tmp_path / "floors" / "speech_floor.json"
    kept = filter_clean_speech(entries, -35.0, cache_file)
    assert [(e.id, e.kind) for e in kept] == [("clean", "speech"), ("noisy", "noise")]
    scores = json.loads(cache_file.read_text())
    assert set(scores) == {str(paths["clean"]), str(paths["noisy"])} and scores[str(paths["noisy"])] > -35.0
    scores[str(paths["noisy"])] = -60.0  # a cached score is used, not recomputed
    cache_file.write_text(json.dumps(scores))
    assert len(filter_clean_speech(entries, -35.0, cache_file)) == 3
    assert len(filter_clean_speech(entries, -35.0)) == 2


# ----------------------------------------------------------------------------------------- conditions.py
def _spectrum_fraction_above(audio: np.ndarray, frequency: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio.reshape(-1))) ** 2
    frequencies = np.fft.rfftfreq(audio.size, 1.0 / RATE)
    return float(spectrum[frequencies > frequency].sum() / spectrum.sum())


def test_telephone_band_removes_the_upper_band() -> None:
    noise = np.random.default_rng(3).standard_normal((1, RATE)).astype(np.float32)
    assert _spectrum_fraction_above(noise, 4100.0) > 0.4
    narrow = telephone_band(noise, RATE)
    assert narrow.shape == noise.shape and narrow.dtype == np.float32
    assert _spectrum_fraction_above(narrow, 4100.0) < 0.01
    assert np.mean(narrow**2) > 0.4 * np.mean(noise**2)  # the lower band is kept
    assert np.array_equal(telephone_band(noise, 8000), noise)


def test_highpass_attenuates_30_hz_and_keeps_speech_band() -> None:
    config = ConditionConfig(eq_bands=(0, 0), highpass_probability=1.0)
    time = np.arange(RATE) / RATE
    rumble, voice = np.sin(2 * np.pi * 30 * time)[None], np.sin(2 * np.pi * 1000 * time)[None]
    for seed in range(5):
        filters = random_colouration(np.random.default_rng(seed), RATE, config)
        assert len(filters) == 1
        steady = slice(RATE // 2, None)  # after the filter's transient
        assert np.max(np.abs(apply_filters(rumble, filters)[:, steady])) < 0.5  # cutoff >= 50 Hz
        assert np.max(np.abs(apply_filters(voice, filters)[:, steady])) > 0.9
    without = dataclasses.replace(config, highpass_probability=0.0)
    assert random_colouration(np.random.default_rng(0), RATE, without) == []


def test_clip_bounds_the_peak_at_the_drawn_fraction() -> None:
    config = ConditionConfig()
    audio = speechlike(np.random.default_rng(4))[None]
    peak = float(np.max(np.abs(audio)))
    for seed in range(5):
        fraction = np.random.default_rng(seed).uniform(*config.clipping_level)
        clipped = clip(audio, np.random.default_rng(seed), config)
        assert config.clipping_level[0] <= fraction <= config.clipping_level[1]
        assert np.isclose(np.max(np.abs(clipped)), fraction * peak, rtol=1e-5)
        below = np.abs(audio) < fraction * peak * 0.999
        assert np.array_equal(clipped[below], audio[below])  # samples under the level are untouched


def test_dc_offset_within_range() -> None:
    config = ConditionConfig()
    audio = speechlike(np.random.default_rng(5))[None]
    signs = set()
    for seed in range(12):
        offset = dc_offset(audio, np.random.default_rng(seed), config) - audio
        assert np.allclose(offset, offset[0, 0], atol=1e-6)
        assert config.dc_offset[0] - 1e-6 <= abs(offset[0, 0]) <= config.dc_offset[1] + 1e-6
        signs.add(bool(offset[0, 0] > 0))
    assert signs == {True, False}


def test_cut_silence_zeroes_a_stretch_of_the_drawn_length() -> None:
    config = ConditionConfig(silence_seconds=(0.2, 0.4))
    audio = np.full((1, RATE), 0.5, np.float32)
    fade = int(0.005 * RATE)
    for seed in range(5):
        stretch = int(np.random.default_rng(seed).uniform(*config.silence_seconds) * RATE)
        cut = cut_silence(audio, np.random.default_rng(seed), RATE, config)
        zeros = np.flatnonzero(cut[0] == 0.0)
        assert stretch - 2 * fade <= zeros.size <= stretch
        assert zeros[-1] - zeros[0] + 1 == zeros.size  # one contiguous stretch
        untouched = np.count_nonzero(cut[0] == 0.5)  # outside the stretch (its fades start at gain 1)
        assert RATE - stretch <= untouched <= RATE - stretch + 2
    short = cut_silence(audio[:, :1000], np.random.default_rng(0), RATE, config)
    assert np.count_nonzero(short == 0.0) <= 500  # at most half of a short utterance


def test_draw_channel_is_deterministic_and_respects_probabilities() -> None:
    config = ConditionConfig(colouration_probability=1.0)
    first, again = (draw_channel(np.random.default_rng(7), RATE, config) for _ in range(2))
    assert first.describe() == again.describe() and len(first.filters) == len(again.filters) >= 1
    for (b1, a1), (b2, a2) in zip(first.filters, again.filters):
        assert np.array_equal(b1, b2) and np.array_equal(a1, a2)
    always = ConditionConfig(colouration_probability=1.0, telephone_probability=1.0, clipping_probability=1.0,
                             dc_offset_probability=1.0)
    assert draw_channel(np.random.default_rng(0), RATE, always).describe() == "eq+telephone+clipped+dc"
    assert draw_channel(np.random.default_rng(0), RATE, OFF).describe() == ""


def test_colouration_stays_stable_at_8_khz() -> None:
    noise = np.random.default_rng(0).standard_normal((1, 8000)).astype(np.float32)
    config = ConditionConfig(eq_bands=(3, 3), highpass_probability=0.0)
    for seed in range(40):  # peaking filters drawn up to 6 kHz are capped below the 4 kHz Nyquist frequency
        coloured = apply_filters(noise, random_colouration(np.random.default_rng(seed), 8000, config))
        assert np.isfinite(coloured).all() and np.max(np.abs(coloured)) < 50.0


@pytest.mark.parametrize("name", ["clipping_probability", "silence_probability", "colouration_probability"])
@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_probabilities_outside_unit_interval_are_rejected(name: str, value: float) -> None:
    with pytest.raises(ConfigError, match=name):
        ConditionConfig(**{name: value})


# ----------------------------------------------------------------------------------------- realworld.py
def _dataset(cache: Path, seed: int = 3, split: str = "train", **overrides: object) -> RealWorldEnhancementDataset:
    values: dict = {"segment_seconds": 0.5, "reverb": ReverbConfig(probability=0.0), "babble_talkers": (3, 4),
                    **overrides}
    return realworld_dataset(cache, split, RealWorldConfig(**values), length=6, seed=seed)


KEYS = {"mixture", "targets", "noise", "snr_db", "level_db", "speech_id", "noise_id", "noise_type", "reverb",
        "channel", "index"}


def test_items_have_documented_keys_shapes_and_levels(cache: Path) -> None:
    dataset = _dataset(cache, conditions=dataclasses.replace(ConditionConfig(), clipping_probability=0.0,
                                                             dc_offset_probability=0.0))
    assert dataset.config.reverb.probability == 0.0 and len(dataset.speech) == 6
    for index in range(len(dataset)):
        item = dataset[index]
        assert set(item) == KEYS and item["index"] == index
        assert item["mixture"].shape == (1, 8000) and item["noise"].shape == (1, 8000)
        assert item["targets"].shape == (1, 1, 8000) and item["mixture"].dtype == torch.float32
        assert torch.isfinite(item["mixture"]).all() and item["mixture"].abs().max() <= 1.0
        assert item["level_db"] <= -10.0 + 0.01
        peak = max(float(item[key].abs().max()) for key in ("mixture", "targets", "noise"))
        assert item["level_db"] >= -45.0 - 0.01 or np.isclose(peak, 0.99, atol=1e-3)
        assert item["speech_id"].startswith("speech/speechocean762/spk_")


def test_loud_levels_are_peak_limited(cache: Path) -> None:
    dataset = _dataset(cache, speech_level_db=(-3.0, -3.0), conditions=OFF)
    for index in range(3):
        item = dataset[index]
        peak = max(float(item[key].abs().max()) for key in ("mixture", "targets", "noise"))
        assert item["level_db"] < -3.0 and np.isclose(peak, 0.99, atol=1e-3)


def test_snr_is_as_drawn_for_noisy_items(cache: Path) -> None:
    dataset = _dataset(cache, clean_probability=0.0, conditions=OFF, snr_range_db=(-5.0, 25.0))
    for index in range(len(dataset)):
        item = dataset[index]
        assert -5.0 <= item["snr_db"] <= 25.0 and item["noise_type"] != "clean"
        assert abs(snr_db(item["targets"][0].numpy(), item["noise"].numpy()) - item["snr_db"]) < 0.05
        assert torch.allclose(item["mixture"], item["targets"][0] + item["noise"], atol=1e-5)
        assert item["noise_id"].startswith("noise/moodist/") and "places_church" not in item["noise_id"]


def test_clean_items_have_no_noise_and_mixture_equals_target(cache: Path) -> None:
    conditions = dataclasses.replace(OFF, colouration_probability=1.0, telephone_probability=0.5)
    dataset = _dataset(cache, clean_probability=1.0, conditions=conditions)
    for index in range(4):
        item = dataset[index]
        assert item["noise_type"] == "clean" and item["snr_db"] == float("inf") and item["noise_id"] == ""
        assert not item["noise"].any() and item["targets"].abs().max() > 0
        assert torch.equal(item["mixture"], item["targets"][0])
        assert item["channel"].startswith("eq")


def test_babble_never_uses_the_target_speaker(cache: Path) -> None:
    dataset = _dataset(cache, babble_probability=1.0, clean_probability=0.0, conditions=OFF)
    original = dataset._sentence
    for index in range(3):
        groups: list[str] = []

        def spy(entry: CorpusEntry, rng: np.random.Generator) -> np.ndarray:
            groups.append(entry.group)
            return original(entry, rng)

        dataset._sentence = spy  # type: ignore[method-assign]
        item = dataset[index]
        assert item["noise_type"].endswith("+babble")
        assert len(groups) >= 4 and groups[0] not in groups[1:]  # target first, then 3-4 talkers


def test_items_are_deterministic_for_a_seed(cache: Path) -> None:
    first, again, other = _dataset(cache), _dataset(cache), _dataset(cache, seed=4)
    item = first[2]
    for key in ("mixture", "targets", "noise"):
        assert torch.equal(item[key], again[2][key])
    assert item["snr_db"] == again[2]["snr_db"] and item["speech_id"] == again[2]["speech_id"]
    assert not torch.equal(item["mixture"], other[2]["mixture"])
    first.set_epoch(1)
    assert not torch.equal(item["mixture"], first[2]["mixture"])


def test_measured_rooms_of_the_split_and_validation_split(cache: Path) -> None:
    dataset = _dataset(cache, reverb=ReverbConfig(probability=1.0, source="measured"), conditions=OFF)
    assert [Path(path).stem for path in dataset.rir_source.bank.paths] == ["room_1"]
    assert dataset[0]["reverb"] == "measured"
    validation = _dataset(cache, split="validation")
    assert {e.group for e in validation.speech} == {"speechocean762:spk_d", "speechocean762:spk_e"}
    assert [Path(e.id).stem for e in validation.noise] == ["cafe"]


def test_one_speaker_split_skips_babble(cache: Path) -> None:
    dataset = _dataset(cache, split="test", babble_probability=1.0, clean_probability=0.0, conditions=OFF)
    assert not dataset.babble_possible and _dataset(cache).babble_possible
    assert all("babble" not in dataset[index]["noise_type"] for index in range(2))


def test_silent_noise_gives_a_clean_item(cache: Path, tmp_path: Path) -> None:
    silent = write(tmp_path / "silent.flac", np.zeros(RATE, np.float32))
    noise = [CorpusEntry(id="silent.flac", kind="noise", split="train", group="silent", corpus="c", license="",
                         provenance="", native_sample_rate=RATE, sources=[str(silent)], frames=RATE)]
    config = RealWorldConfig(segment_seconds=0.5, clean_probability=0.0, babble_probability=0.0,
                             reverb=ReverbConfig(probability=0.0), conditions=OFF)
    item = RealWorldEnhancementDataset(_dataset(cache).speech, noise, config, length=1)[0]
    assert item["noise_type"] == "clean" and torch.equal(item["mixture"], item["targets"][0])
