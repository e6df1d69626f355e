"""LibriSpeech-, VCTK- and DNS-style folder adapters (speech_folders.py) and the realworld factory's layouts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from recipes.data.minicorpus import hash_split, load_speech
from recipes.data.speech_folders import (
    dns_speaker,
    folder_corpora,
    noise_entries,
    scan_dns,
    scan_librispeech,
    scan_noise_folder,
    scan_vctk,
)
from recipes.train import realworld_enhancement
from speechkit.errors import ConfigError

from test_recipes_realworld import make_cache, speechlike

RATE = 16000
SPLITS = ("train", "validation", "test")


def _write(path: Path, seconds: float = 0.3, rate: int = RATE, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, speechlike(np.random.default_rng(seed), seconds, rate), rate)
    return path


def make_librispeech(root: Path, speakers: range = range(100, 140)) -> Path:
    """``<root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` plus transcripts."""
    for speaker in speakers:
        subset = "dev-clean" if speaker % 10 == 0 else "train-clean-100"
        chapter = root / subset / str(speaker) / "7"
        for utterance in range(2):
            _write(chapter / f"{speaker}-7-{utterance:04d}.flac", seed=speaker)
        (chapter / f"{speaker}-7.trans.txt").write_text("0000 HELLO\n")
    return root


def make_noise_folder(root: Path, count: int = 10) -> Path:
    rng = np.random.default_rng(9)
    for number in range(count):
        path = root / ("sub" if number % 2 else "") / f"n{number}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, 0.1 * rng.standard_normal(RATE // 2), RATE)
    return root


@pytest.fixture(scope="module")
def librispeech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_librispeech(tmp_path_factory.mktemp("LibriSpeech"))


@pytest.fixture(scope="module")
def noise_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_noise_folder(tmp_path_factory.mktemp("noise"))


def _assert_speaker_disjoint(entries: list) -> None:
    by_group: dict[str, set[str]] = {}
    for entry in entries:
        by_group.setdefault(entry.group, set()).add(entry.split)
    assert all(len(splits) == 1 for splits in by_group.values())
    assert {split for splits in by_group.values() for split in splits} == set(SPLITS)


def test_librispeech_entries_split_by_speaker_hash(librispeech: Path) -> None:
    entries = scan_librispeech(librispeech, min_seconds=0.2)
    assert len(entries) == 80 and all(entry.kind == "speech" and entry.corpus == "librispeech" for entry in entries)
    entry = next(entry for entry in entries if entry.id == "train-clean-100/101/7/101-7-0001.flac")
    assert entry.group == "librispeech:101" and entry.split == hash_split("librispeech:101")
    assert entry.native_sample_rate == RATE and entry.frames == int(0.3 * RATE) and entry.license == "CC-BY-4.0"
    assert Path(entry.sources[0]).is_file()
    _assert_speaker_disjoint(entries)
    assert any(entry.id.startswith("dev-clean/") and entry.split == "train" for entry in entries)  # subsets ignored
    assert scan_librispeech(librispeech) == []  # 0.3 s files are below the default 1 s


def test_librispeech_errors_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nowhere") as error:
        scan_librispeech(tmp_path / "nowhere")
    assert "\n" not in str(error.value)
    _write(tmp_path / "flat" / "1-2-3.flac")
    with pytest.raises(ConfigError, match="<subset>/<speaker>/<chapter>"):
        scan_librispeech(tmp_path / "flat")
    make_librispeech(tmp_path / "short", range(1, 3))
    with pytest.raises(ConfigError, match="at least 1.0 s"):
        folder_corpora("librispeech", tmp_path / "short", make_noise_folder(tmp_path / "noise", 2))


def test_vctk_both_layouts_one_microphone_resampled_on_load(tmp_path: Path) -> None:
    new = tmp_path / "VCTK-Corpus-0.92"
    for speaker in ("p225", "p226", "s5"):
        for microphone in ("mic1", "mic2"):
            _write(new / "wav48_silence_trimmed" / speaker / f"{speaker}_001_{microphone}.flac", rate=48000)
    entries = scan_vctk(new, min_seconds=0.2)
    assert [entry.id for entry in entries] == [
        f"wav48_silence_trimmed/{s}/{s}_001_mic1.flac" for s in ("p225", "p226", "s5")]
    assert [entry.group for entry in entries] == ["vctk:p225", "vctk:p226", "vctk:s5"]
    assert entries[0].native_sample_rate == 48000 and entries[0].split == hash_split("vctk:p225")
    assert len(scan_vctk(new, microphone="mic2", min_seconds=0.2)) == 3
    audio = load_speech(entries[0], RATE)  # resampled from the file's 48 kHz
    assert audio.shape[0] == 1 and abs(audio.shape[1] - int(0.3 * RATE)) <= 2
    old = tmp_path / "VCTK-Corpus"
    _write(old / "wav48" / "p227" / "p227_003.wav", rate=48000)
    assert [entry.group for entry in scan_vctk(old, min_seconds=0.2)] == ["vctk:p227"]
    with pytest.raises(ConfigError, match="wav48_silence_trimmed.*wav48"):
        scan_vctk(tmp_path)
    (tmp_path / "empty" / "wav48").mkdir(parents=True)
    with pytest.raises(ConfigError, match="no .*wav48/<speaker>/<speaker>_<nnn>.wav files"):
        scan_vctk(tmp_path / "empty")


def test_dns_speakers_from_reader_ids_and_noise_folder(tmp_path: Path) -> None:
    root = tmp_path / "datasets"
    for name in ("book_00000_chp_0009_reader_06709_0.wav", "book_00012_chp_0001_reader_06709_1.wav",
                 "book_00003_chp_0002_reader_00042_0.wav"):
        _write(root / "clean" / "read_speech" / name)
    _write(root / "clean" / "clean_fileid_7.wav")
    make_noise_folder(root / "noise", 4)
    entries = scan_dns(root, min_seconds=0.2)
    groups = {entry.id: entry.group for entry in entries}
    assert groups == {
        "clean/clean_fileid_7.wav": "dns:clean_fileid_7",  # no reader: its own group
        "clean/read_speech/book_00000_chp_0009_reader_06709_0.wav": "dns:reader_6709",
        "clean/read_speech/book_00003_chp_0002_reader_00042_0.wav": "dns:reader_42",
        "clean/read_speech/book_00012_chp_0001_reader_06709_1.wav": "dns:reader_6709",
    }
    assert dns_speaker(Path("x_reader_00042_3.wav")) == "reader_42"
    corpora = folder_corpora("dns", root, min_speech_seconds=0.2)
    noise = [entry for entry in corpora.entries if entry.kind == "noise"]
    assert sorted(entry.id for entry in noise) == ["n0.wav", "n2.wav", "sub/n1.wav", "sub/n3.wav"]
    assert all(entry.split == hash_split(f"dns_noise:{entry.id}") for entry in noise)
    with pytest.raises(ConfigError, match="clean"):
        scan_dns(tmp_path / "nothing")
    (tmp_path / "bare" / "clean").mkdir(parents=True)
    with pytest.raises(ConfigError, match="holds no .wav or .flac"):
        scan_dns(tmp_path / "bare")


def test_noise_folder_and_cache_noise(noise_folder: Path, tmp_path: Path) -> None:
    entries = scan_noise_folder(noise_folder)
    assert len(entries) == 10 and {entry.kind for entry in entries} == {"noise"}
    assert all(entry.split == hash_split(f"noise:{entry.id}") and entry.frames == RATE // 2 for entry in entries)
    assert {entry.split for entry in entries} == set(SPLITS)
    assert noise_entries(noise_folder) == entries
    cache = make_cache(tmp_path / "cache")
    from_cache = noise_entries(cache)
    assert {entry.kind for entry in from_cache} == {"noise", "rir"} and len(from_cache) == 7  # church left out
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "notes.txt").write_text("not audio")
    with pytest.raises(ConfigError, match="holds no .wav or .flac"):
        scan_noise_folder(tmp_path / "empty")
    with pytest.raises(ConfigError, match="expected folder .*missing"):
        scan_noise_folder(tmp_path / "missing")


def test_folder_corpora_needs_noise_and_a_known_layout(librispeech: Path, noise_folder: Path) -> None:
    with pytest.raises(ConfigError, match="noise_root"):
        folder_corpora("librispeech", librispeech, min_speech_seconds=0.2)
    with pytest.raises(ConfigError, match="layout must be one of"):
        folder_corpora("timit", librispeech)
    corpora = folder_corpora("librispeech", librispeech, noise_folder, min_speech_seconds=0.2)
    assert corpora.root == librispeech and len(corpora.select("speech", "validation")) == 10
    assert corpora.select("noise", "train") and not corpora.select("rir", "train")


def test_factory_runs_on_a_librispeech_folder(librispeech: Path, noise_folder: Path, monkeypatch) -> None:
    import recipes.data.speech_folders as speech_folders

    original = speech_folders.folder_corpora
    monkeypatch.setattr(speech_folders, "folder_corpora",
                        lambda layout, root, noise=None: original(layout, root, noise, min_speech_seconds=0.2))
    dataset = realworld_enhancement(str(librispeech), "validation", segment_seconds=0.25, length=3, seed=1,
                                    max_floor_db=None, mixing={"reverb": {"probability": 0.0}},
                                    layout="librispeech", noise_root=str(noise_folder))
    assert dataset.config.reverb.source == "simulated"  # no measured RIRs in a speech folder
    assert {entry.split for entry in dataset.speech} == {"validation"}
    assert {entry.split for entry in dataset.noise} == {"validation"}
    item = dataset[0]
    assert item["mixture"].shape == (1, 4000) and item["targets"].shape == (1, 1, 4000)
    assert torch.isfinite(item["mixture"]).all()
    with pytest.raises(ConfigError, match="layout must be one of"):
        realworld_enhancement(str(librispeech), layout="folders")


def test_factory_cache_layout_unchanged_and_noise_root_adds_noise(tmp_path: Path, noise_folder: Path) -> None:
    from recipes.data.realworld import realworld_dataset
    from recipes.train import _realworld_config

    cache = make_cache(tmp_path / "cache")
    mixing = {"reverb": {"probability": 0.0}}
    dataset = realworld_enhancement(str(cache), "train", segment_seconds=0.25, length=3, seed=5, mixing=mixing)
    reference = realworld_dataset(cache, "train", _realworld_config(RATE, 0.25, mixing), 3, 5)
    assert dataset.config == reference.config and dataset.config.reverb.source == "both"
    assert torch.equal(dataset[1]["mixture"], reference[1]["mixture"])
    extended = realworld_enhancement(str(cache), "train", segment_seconds=0.25, length=3, seed=5, mixing=mixing,
                                     noise_root=str(noise_folder))
    added = [entry for entry in extended.noise if entry.corpus == "noise"]
    assert added and len(extended.noise) == len(dataset.noise) + len(added)
    assert all(entry.split == "train" for entry in extended.noise)
