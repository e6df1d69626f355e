"""Mini corpus splits, deterministic dynamic mixing and fixed sets, on a synthetic fake data tree."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from recipes.data.audio import babble_noise, impact_noise, snr_db, traffic_noise
from recipes.data.datasets import EnhancementConfig, EnhancementDataset, ReverbConfig
from recipes.data.fixedset import FixedSetDataset, write_fixed_set
from recipes.data.minicorpus import (
    MiniCorpus,
    default_data_root,
    load_noise_segment,
    procedural_noise_entries,
    read_manifest,
    write_manifest,
)
from speechkit.errors import ConfigError, OutputExistsError

SPEAKERS = ["c22d3f18"] + [f"{number:08x}" for number in range(1, 40)]
WORDS = ["yes", "no", "up"]


def _tone_word(rng: np.random.Generator, sample_rate: int, seconds: float) -> np.ndarray:
    time = np.arange(int(seconds * sample_rate)) / sample_rate
    envelope = np.sin(np.pi * time / seconds) ** 2
    pitch = rng.uniform(100, 250)
    voiced = sum(np.sin(2 * np.pi * pitch * k * time) / k for k in range(1, 6))
    padded = np.zeros(int((seconds + 0.2) * sample_rate))
    padded[int(0.1 * sample_rate): int(0.1 * sample_rate) + time.size] = 0.3 * envelope * voiced
    return padded


def make_fake_shared_data(root: Path) -> Path:
    """A tiny tree with the layout of ``../shared/data`` (synthetic audio)."""
    rng = np.random.default_rng(0)
    for speaker in SPEAKERS:
        for word in WORDS:
            path = root / "speech_commands" / word / f"{speaker}_nohash_0.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(path, _tone_word(rng, 16000, 0.3), 16000)
    background = root / "noise" / "speech_commands_background"
    background.mkdir(parents=True)
    for name in ("doing_the_dishes", "running_tap", "exercise_bike", "white_noise"):
        soundfile.write(background / f"{name}.flac", 0.1 * rng.standard_normal(16000 * 2), 16000)
    for category in ("cafe", "street"):
        folder = root / "noise" / "cafe_street_train" / category
        folder.mkdir(parents=True)
        for number in range(15):
            soundfile.write(folder / f"clip_{number}.flac", 0.1 * rng.standard_normal(16000), 16000)
    rirs = root / "rirs" / "office_32ch_linear"
    rirs.mkdir(parents=True)
    for source in range(1, 4):
        response = np.zeros((4800, 8))
        response[100 + 10 * source] = 1.0
        response[200:] += 0.01 * rng.standard_normal((4600, 8)) * np.exp(-np.arange(4600) / 500)[:, None]
        soundfile.write(rirs / f"rir_source_{source}.wav", response, 48000, subtype="FLOAT")
    fsdd = root / "fsdd"
    fsdd.mkdir()
    for speaker in ("george", "theo", "yweweler"):
        for digit in range(3):
            soundfile.write(fsdd / f"{digit}_{speaker}_0.flac", _tone_word(rng, 8000, 0.3), 8000)
    return root


@pytest.fixture(scope="module")
def fake_corpus(tmp_path_factory: pytest.TempPathFactory) -> MiniCorpus:
    root = make_fake_shared_data(tmp_path_factory.mktemp("shared_data"))
    return MiniCorpus.scan(root, cache_root=root / "no_cache", words_per_utterance=3)


def test_scan_reports_missing_asterisk(fake_corpus: MiniCorpus) -> None:
    assert any("asterisk" in message for message in fake_corpus.missing)


def test_scan_missing_root_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does_not_exist"):
        MiniCorpus.scan(tmp_path / "does_not_exist")


def test_splits_are_disjoint_by_speaker_and_noise_file(fake_corpus: MiniCorpus) -> None:
    for kind in ("speech", "noise"):
        groups = {split: {e.group for e in fake_corpus.select(kind, split)} for split in ("train", "validation", "test")}
        assert not groups["train"] & groups["validation"]
        assert not groups["train"] & groups["test"]
        assert not groups["validation"] & groups["test"]
        assert groups["train"]
    test_speakers = {e.group for e in fake_corpus.select("speech", "test")}
    assert "speech_commands:c22d3f18" in test_speakers
    test_noises = {e.group for e in fake_corpus.select("noise", "test")}
    assert "doing_the_dishes.flac" in test_noises
    assert all(e.corpus != "synthetic" for e in fake_corpus.select("noise", "test"))
    assert any(e.corpus == "synthetic" for e in fake_corpus.select("noise", "train"))


def test_manifest_round_trip_and_band_limited_flag(fake_corpus: MiniCorpus, tmp_path: Path) -> None:
    manifest = fake_corpus.manifest(16000)
    write_manifest(manifest, tmp_path / "manifest.jsonl")
    loaded = read_manifest(tmp_path / "manifest.jsonl")
    assert loaded == manifest
    by_corpus = {e.corpus: e for e in loaded}
    assert by_corpus["fsdd"].band_limited and not by_corpus["speech_commands"].band_limited
    assert all(e.license and e.provenance for e in loaded)
    assert not any(e.band_limited for e in fake_corpus.manifest(8000))


def test_utterances_concatenate_words_of_one_speaker(fake_corpus: MiniCorpus) -> None:
    from recipes.data.minicorpus import load_speech

    entry = fake_corpus.select("speech", "test", corpora=("speech_commands",))[0]
    assert len(entry.sources) == 3 and len({Path(s).name.split("_")[0] for s in entry.sources}) == 1
    audio = load_speech(entry, 16000)
    assert audio.shape[0] == 1 and 0.9 * 16000 < audio.shape[1] < 3 * 0.5 * 16000


def _enhancement(corpus: MiniCorpus, seed: int = 3, reverb: float = 0.0) -> EnhancementDataset:
    config = EnhancementConfig(segment_seconds=0.5, reverb=ReverbConfig(probability=reverb))
    return EnhancementDataset.from_minicorpus("train", config, length=8, seed=seed, corpus=corpus)


def test_enhancement_item_shapes_and_determinism(fake_corpus: MiniCorpus) -> None:
    first, again, other_seed = _enhancement(fake_corpus), _enhancement(fake_corpus), _enhancement(fake_corpus, 4)
    item = first[2]
    assert item["mixture"].shape == (1, 8000) and item["targets"].shape == (1, 1, 8000)
    assert item["mixture"].dtype == torch.float32
    assert torch.equal(item["mixture"], again[2]["mixture"])
    assert torch.equal(item["targets"], again[2]["targets"])
    assert not torch.equal(item["mixture"], first[3]["mixture"])
    assert not torch.equal(item["mixture"], other_seed[2]["mixture"])
    first.set_epoch(1)
    assert not torch.equal(item["mixture"], first[2]["mixture"])


def test_enhancement_snr_is_exact(fake_corpus: MiniCorpus) -> None:
    dataset = _enhancement(fake_corpus)
    for index in range(len(dataset)):
        item = dataset[index]
        measured = snr_db(item["targets"][0].numpy(), item["noise"].numpy())
        assert abs(measured - item["snr_db"]) < 0.1
        assert -5.0 <= item["snr_db"] <= 15.0
        assert torch.allclose(item["mixture"], item["targets"][0] + item["noise"], atol=1e-6)
        assert item["mixture"].abs().max() <= 0.99 + 1e-6


def test_enhancement_reverb_uses_measured_rirs(fake_corpus: MiniCorpus) -> None:
    item = _enhancement(fake_corpus, reverb=1.0)[0]
    assert item["reverb"] == "measured"
    assert not torch.allclose(item["mixture"], item["targets"][0] + item["noise"], atol=1e-4)


def test_fixed_set_round_trip(fake_corpus: MiniCorpus, tmp_path: Path) -> None:
    dataset = _enhancement(fake_corpus)
    write_fixed_set(dataset, tmp_path / "valid", 16000, count=3, source={"seed": 3})
    fixed = FixedSetDataset(tmp_path / "valid")
    assert len(fixed) == 3
    for index in range(3):
        original, loaded = dataset[index], fixed[index]
        for key in ("mixture", "targets", "noise"):
            assert loaded[key].shape == original[key].shape
            assert torch.equal(loaded[key], original[key])
        assert loaded["snr_db"] == original["snr_db"] and loaded["speech_id"] == original["speech_id"]
    with pytest.raises(OutputExistsError):
        write_fixed_set(dataset, tmp_path / "valid", 16000, count=1)
    with pytest.raises(ConfigError, match="index.json"):
        FixedSetDataset(tmp_path)


def test_real_shared_data_split_requirements() -> None:
    root = default_data_root()
    if root is None:
        pytest.skip("../shared/data is not available (only on development machines and CI)")
    corpus = MiniCorpus.scan(root, include_asterisk=False)
    groups = {split: {e.group for e in corpus.select("speech", split)} for split in ("train", "validation", "test")}
    assert "speech_commands:c22d3f18" in groups["test"]
    assert not groups["train"] & groups["test"] and not groups["validation"] & groups["test"]
    assert "doing_the_dishes.flac" in {e.group for e in corpus.select("noise", "test")}


def test_separation_speakers_overlap_and_determinism(fake_corpus: MiniCorpus) -> None:
    from recipes.data.datasets import SeparationConfig, SeparationDataset, pad_sources_collate

    config = SeparationConfig(sample_rate=8000, segment_seconds=0.5, speaker_counts=(2, 3, 4),
                              noise_probability=1.0, snr_range_db=(5.0, 5.0))
    dataset = SeparationDataset.from_minicorpus("train", config, length=6, seed=1, corpus=fake_corpus)
    items = [dataset[index] for index in range(6)]
    for item in items:
        count = item["source_count"]
        assert item["targets"].shape == (count, 1, 4000) and 2 <= count <= 4
        assert len(set(i.split("/")[1] for i in item["speech_ids"].split("|"))) == count
        assert torch.allclose(item["mixture"], item["targets"].sum(0) + item["noise"], atol=1e-5)
        assert abs(snr_db(item["targets"].sum(0).numpy(), item["noise"].numpy()) - 5.0) < 0.1
    assert torch.equal(dataset[4]["targets"], items[4]["targets"])
    batch = pad_sources_collate(items[:4])
    most = max(item["source_count"] for item in items[:4])
    assert batch["targets"].shape == (4, most, 1, 4000)


def test_overlap_layout() -> None:
    from recipes.data.mixing import overlap_layout

    full = overlap_layout(3, 1000, 1.0)
    assert full.starts == (0, 0, 0) and full.lengths == (1000, 1000, 1000)
    half = overlap_layout(2, 1500, 0.5)
    assert half.starts == (0, 500) and half.lengths == (1000, 1000)


def test_dereverberation_early_target(fake_corpus: MiniCorpus) -> None:
    from recipes.data.datasets import DereverberationDataset

    config = EnhancementConfig(segment_seconds=0.5, reverb=ReverbConfig(probability=1.0, source="measured"),
                               noise_probability=0.0)
    dataset = DereverberationDataset(fake_corpus.select("speech", "train"), fake_corpus.select("noise", "train"),
                                     config, length=2, seed=0, rirs=fake_corpus.select("rir"))
    item = dataset[0]
    assert item["reverb"] == "measured" and item["snr_db"] == float("inf")
    assert not torch.allclose(item["mixture"], item["targets"][0], atol=1e-4)
    with pytest.raises(ConfigError):
        DereverberationDataset(fake_corpus.select("speech", "train"), fake_corpus.select("noise", "train"),
                               EnhancementConfig(), rirs=fake_corpus.select("rir"))


@pytest.mark.slow
def test_simulated_room_reverb(fake_corpus: MiniCorpus) -> None:
    pytest.importorskip("pyroomacoustics")
    from recipes.data.datasets import MultichannelConfig, MultichannelDataset
    from recipes.data.rooms import ShoeboxConfig

    room = ShoeboxConfig(rt60_range=(0.2, 0.3), max_order=6, room_size_max=(5.0, 5.0, 3.0))
    config = MultichannelConfig(segment_seconds=0.5, mic_count=3, array="simulated", target_channels="all",
                                reverb=ReverbConfig(probability=1.0, shoebox=room))
    dataset = MultichannelDataset.from_minicorpus("train", config, length=2, seed=0, corpus=fake_corpus)
    item = dataset[1]
    assert item["mixture"].shape == (3, 8000) and item["targets"].shape == (1, 3, 8000)
    assert item["array"].startswith("shoebox") and torch.equal(item["mixture"], dataset[1]["mixture"])


def test_multichannel_measured_array(fake_corpus: MiniCorpus) -> None:
    from recipes.data.datasets import MultichannelConfig, MultichannelDataset

    config = MultichannelConfig(segment_seconds=0.5, mic_count=4, mic_stride=2, snr_range_db=(0.0, 0.0))
    dataset = MultichannelDataset.from_minicorpus("train", config, length=2, seed=0, corpus=fake_corpus)
    item = dataset[0]
    assert item["mixture"].shape == (4, 8000) and item["targets"].shape == (1, 1, 8000)
    with pytest.raises(ConfigError, match="does not fit"):
        MultichannelDataset.from_minicorpus("train", MultichannelConfig(mic_count=8, mic_stride=2),
                                            length=1, corpus=fake_corpus)[0]


def test_echo_scenarios_are_consistent(fake_corpus: MiniCorpus) -> None:
    from recipes.data.datasets import EchoDataset
    from recipes.data.echo import EchoConfig

    seen = set()
    for scenario in ("far_end_single_talk", "near_end_single_talk", "double_talk"):
        config = EchoConfig(segment_seconds=0.5, scenario_weights={scenario: 1.0}, rir_source="measured",
                            noise_probability=0.0, echo_path_change_probability=0.5)
        dataset = EchoDataset.from_minicorpus("train", config, length=3, seed=2, corpus=fake_corpus)
        for index in range(3):
            item = dataset[index]
            seen.add(item["scenario"])
            assert item["scenario"] == scenario
            assert item["mixture"].shape == (2, 8000) and item["targets"].shape == (1, 1, 8000)
            assert torch.allclose(item["mic"], item["near_end"] + item["echo"] + item["noise"], atol=1e-6)
            assert torch.equal(item["mixture"][1:], item["far_end"])
            assert item["far_id"].split("/")[1] != item["near_id"].split("/")[1]
            if scenario == "far_end_single_talk":
                assert torch.count_nonzero(item["near_end"]) == 0 and item["echo"].abs().max() > 0
            elif scenario == "near_end_single_talk":
                assert torch.count_nonzero(item["far_end"]) == 0 and torch.count_nonzero(item["echo"]) == 0
            else:
                ser = snr_db(item["near_end"].numpy(), item["echo"].numpy())
                assert abs(ser - item["ser_db"]) < 0.1
    assert len(seen) == 3


def test_loudspeaker_models_and_delay() -> None:
    from recipes.data.echo import asymmetric_sigmoid, delay, hard_clip

    signal = np.linspace(-1, 1, 101, dtype=np.float32)[None]
    assert np.max(np.abs(hard_clip(signal, 0.5))) == pytest.approx(0.5, abs=1e-6)
    bent = asymmetric_sigmoid(signal)
    assert np.max(np.abs(bent)) == pytest.approx(1.0, abs=1e-5) and not np.allclose(bent, signal, atol=0.05)
    delayed = delay(signal, 10)
    assert np.all(delayed[:, :10] == 0) and np.array_equal(delayed[:, 10:], signal[:, :-10])


def test_prepare_data_cli_manifest_and_fixed_sets(tmp_path: Path, fake_corpus: MiniCorpus) -> None:
    from recipes.data.fixedset import TASKS
    from recipes.prepare_data import main

    root = make_fake_shared_data(tmp_path / "shared")
    cache = tmp_path / "cache"
    common = ["--data-root", str(root), "--cache", str(cache)]
    assert main(common + ["manifest", "--materialize", "--no-asterisk"]) == 0
    manifest = cache / "minicorpus" / "manifest_16k.jsonl"
    entries = read_manifest(manifest)
    speech = [e for e in entries if e.kind == "speech"]
    assert all(Path(e.audio).is_file() for e in speech)
    assert {e.band_limited for e in speech if e.corpus == "fsdd"} == {True}
    for task in TASKS:
        out = tmp_path / "fixed" / task
        args = common + ["fixed", "--task", task, "--split", "test", "--count", "2",
                         "--segment-seconds", "0.5", "--manifest", str(manifest), "--out", str(out)]
        assert main(args) == 0
        fixed = FixedSetDataset(out)
        assert len(fixed) == 2 and fixed.index["source"]["task"] == task
        assert fixed[0]["mixture"].shape[-1] == 8000
        assert main(args) == 1  # exists already: one-line error, no traceback


def test_dataloader_workers_match_direct_indexing(fake_corpus: MiniCorpus) -> None:
    from torch.utils.data import DataLoader

    dataset = _enhancement(fake_corpus, seed=9)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    direct = torch.stack([dataset[index]["mixture"] for index in range(len(dataset))])
    assert torch.equal(torch.cat([batch["mixture"] for batch in batches]), direct)


def test_dereverberation_from_minicorpus_uses_its_own_default(fake_corpus: MiniCorpus) -> None:
    from recipes.data.datasets import DereverberationDataset

    dataset = DereverberationDataset.from_minicorpus("train", length=1, corpus=fake_corpus)
    assert dataset.config.reverb.probability == 1.0


@pytest.mark.parametrize("kind", ["impacts", "traffic"])
def test_procedural_noise_is_unit_power_deterministic_and_finite(kind: str) -> None:
    generate = impact_noise if kind == "impacts" else traffic_noise
    first = generate(np.random.default_rng(3), 16000)
    assert first.shape == (1, 16000) and first.dtype == np.float32
    assert np.isfinite(first).all() and abs(float(np.mean(first**2)) - 1.0) < 1e-3
    assert np.array_equal(first, generate(np.random.default_rng(3), 16000))
    assert not np.array_equal(first, generate(np.random.default_rng(4), 16000))


def test_babble_sums_talkers_and_needs_words() -> None:
    rng = np.random.default_rng(0)
    words = [np.sin(np.arange(3000) * frequency)[None].astype(np.float32) for frequency in (0.05, 0.1, 0.2)]
    babble = babble_noise(rng, 8000, words, talkers=4)
    assert babble.shape == (1, 8000) and abs(float(np.mean(babble**2)) - 1.0) < 1e-3
    with pytest.raises(Exception, match="at least one word"):
        babble_noise(rng, 8000, [], talkers=2)


def test_procedural_noise_entries_are_training_only_and_use_training_speakers(fake_corpus: MiniCorpus) -> None:
    entries = procedural_noise_entries(fake_corpus.entries)
    assert {entry.split for entry in entries} == {"train"}
    assert {entry.synthetic["kind"] for entry in entries} == {"babble", "impacts", "traffic"}
    held_out = {
        source for entry in fake_corpus.entries
        if entry.kind == "speech" and entry.split != "train" for source in entry.sources
    }
    babble = [entry for entry in entries if entry.synthetic["kind"] == "babble"]
    assert babble and not held_out & set(babble[0].sources)
    for entry in entries[::5]:
        segment = load_noise_segment(entry, 16000, 4000, np.random.default_rng(1))
        assert segment.shape == (1, 4000) and np.isfinite(segment).all()
    scanned = MiniCorpus.scan(
        Path(fake_corpus.entries[0].sources[0]).parents[2], cache_root=Path("/nonexistent"),
        words_per_utterance=3, procedural_noise=True,
    )
    assert len(scanned.select("noise", "train")) == len(fake_corpus.select("noise", "train")) + len(entries)
    assert scanned.select("noise", "test") == fake_corpus.select("noise", "test")


def test_fixed_set_with_uniform_noise_spreads_over_noise_files(fake_corpus: MiniCorpus, tmp_path: Path) -> None:
    import json

    from recipes.data.fixedset import build_fixed_set

    path = build_fixed_set("enhancement", "validation", tmp_path / "uniform", 12, fake_corpus, uniform_noise=True)
    index = json.loads((path / "index.json").read_text())
    assert index["source"]["noise_weights"] == "uniform"
    noises = {json.loads(line)["meta"]["noise_id"] for line in (path / "items.jsonl").read_text().splitlines()}
    assert len(noises) > 2  # the fake validation split has one long file and a few one-second clips


def test_fixed_set_factory_builds_once_and_limits(fake_corpus: MiniCorpus, tmp_path: Path, monkeypatch) -> None:
    """recipes.train fixed-set factories: build on rank 0 only when index.json is missing, then read (a limit
    gives a subset that keeps the sample rate)."""
    from recipes.train import _fixed_set

    monkeypatch.delenv("RANK", raising=False)
    builds = []

    def build(folder: Path) -> None:
        builds.append(folder)
        write_fixed_set(_enhancement(fake_corpus), folder, 16000, count=3)

    assert len(_fixed_set(str(tmp_path / "set"), build, None)) == 3
    limited = _fixed_set(str(tmp_path / "set"), build, 2)
    assert builds == [tmp_path / "set"] and len(limited) == 2 and limited.sample_rate == 16000
    assert len(_fixed_set(str(tmp_path / "set"), build, 5)) == 3


def _decay_with_floor(floor_db: float | None, mics: int = 3, rate: int = 16000) -> np.ndarray:
    """``[mics, 0.5 s]``: an exponential decay (T60 40 ms) plus, optionally, a flat white floor."""
    rng = np.random.default_rng(0)
    time = np.arange(rate // 2) / rate
    response = rng.standard_normal((mics, time.size)) * 10 ** (-3 * time / 0.04)  # -60 dB at 40 ms
    if floor_db is not None:
        response += rng.standard_normal((mics, time.size)) * 10 ** (floor_db / 20)
    return response


def test_measured_response_ends_where_its_decay_meets_the_noise_floor() -> None:
    from recipes.data.rooms import truncate_at_noise_floor

    response = _decay_with_floor(-30.0)
    truncated = truncate_at_noise_floor(response, 16000)
    # the decay reaches -30 dB (+3 dB margin) at about 18 ms: everything after is the floor
    assert 0.010 * 16000 <= truncated.shape[-1] <= 0.030 * 16000, truncated.shape
    assert truncated.shape[0] == 3  # every mic cut at the same sample
    np.testing.assert_array_equal(truncated[:, :100], response[:, :100])  # the direct part is untouched
    assert abs(truncated[:, -1]).max() < 1e-2 * abs(response[:, -1]).max() + 1e-12  # faded out
    removed = 1 - (truncated**2).sum() / (response**2).sum()
    assert removed > 0.1  # 480 ms of a -30 dB floor: about 15 % of the energy (decay: ~46 samples at 0 dB)


def test_a_response_still_decaying_at_its_end_is_kept_whole() -> None:
    from recipes.data.rooms import truncate_at_noise_floor

    response = _decay_with_floor(None)
    np.testing.assert_array_equal(truncate_at_noise_floor(response, 16000), response)
    slow = np.exp(-np.arange(8000) / 2000.0)[None] * np.cos(np.arange(8000))[None]  # decays through the end
    np.testing.assert_array_equal(truncate_at_noise_floor(slow, 16000), slow)


def test_a_silent_noise_segment_is_redrawn_and_a_silent_file_stays_silent(tmp_path: Path) -> None:
    import soundfile

    from recipes.data.manifest import CorpusEntry
    from recipes.data.mixing import mix_at_snr
    from speechkit.errors import AudioError

    gap = np.zeros(16000, dtype=np.float32)
    gap[12000:] = 0.1 * np.random.default_rng(0).standard_normal(4000)  # a recording silent for 3/4 of its length
    soundfile.write(tmp_path / "gap.wav", gap, 16000)
    soundfile.write(tmp_path / "zeros.wav", np.zeros(16000, dtype=np.float32), 16000)

    def entry(name: str) -> CorpusEntry:
        return CorpusEntry(id=name, kind="noise", split="train", group=name, corpus="t", license="-", provenance="-",
                           native_sample_rate=16000, sources=[str(tmp_path / name)], frames=16000)

    for seed in range(6):
        segment = load_noise_segment(entry("gap.wav"), 16000, 2000, np.random.default_rng(seed))
        assert segment.shape == (1, 2000) and float(np.mean(segment**2)) > 1e-6
    silent = load_noise_segment(entry("zeros.wav"), 16000, 2000, np.random.default_rng(0))
    assert silent.shape == (1, 2000) and not silent.any()  # the caller decides (clean item, or refused:)
    with pytest.raises(AudioError, match="digitally silent"):
        mix_at_snr(np.ones((1, 2000), np.float32), silent, 0.0)
