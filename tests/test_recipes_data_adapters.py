"""Corpus adapters against tiny fake directory trees with the real layouts."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from recipes.data.adapters import (
    CorpusDataset,
    dns_items,
    librimix_items,
    voicebank_demand_items,
    wham_items,
    whamr_items,
    wsj0mix_items,
)
from speechkit.errors import ConfigError


def _wav(path: Path, seconds: float = 0.1, rate: int = 8000, value: float = 0.1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.full(int(seconds * rate), value, dtype=np.float32), rate, subtype="FLOAT")
    return path


def _folders(base: Path, folders: list[str], names: list[str], rate: int = 8000) -> None:
    for number, folder in enumerate(folders):
        for name in names:
            _wav(base / folder / name, rate=rate, value=0.01 * (number + 1))


def test_librimix_reads_csv_and_reroots_foreign_paths(tmp_path: Path) -> None:
    base = tmp_path / "Libri2Mix" / "wav8k" / "min"
    names = ["a_b.wav", "c_d.wav"]
    _folders(base / "dev", ["mix_both", "s1", "s2", "noise"], names)
    (base / "metadata").mkdir(parents=True)
    with open(base / "metadata" / "mixture_dev_mix_both.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["mixture_ID", "mixture_path", "source_1_path", "source_2_path", "noise_path", "length"])
        for name in names:
            foreign = "/elsewhere/Libri2Mix/wav8k/min/dev"
            writer.writerow([name[:-4], f"{foreign}/mix_both/{name}", f"{foreign}/s1/{name}",
                             str(base / "dev" / "s2" / name), f"{foreign}/noise/{name}", 800])
    items = librimix_items(tmp_path / "Libri2Mix", "dev", "both", 8000)
    assert [item.id for item in items] == ["a_b", "c_d"]
    assert items[0].references[0] == base / "dev" / "s1" / "a_b.wav" and items[0].noise is not None
    assert len(librimix_items(tmp_path / "Libri2Mix", "dev", "both", 8000)[0].references) == 2
    item = CorpusDataset(items)[0]
    assert item["mixture"].shape == (1, 800) and item["targets"].shape == (2, 1, 800)
    with pytest.raises(ConfigError, match="mixture_dev_mix_clean.csv"):
        librimix_items(tmp_path / "Libri2Mix", "dev", "clean", 8000)


def test_librimix_names_missing_column(tmp_path: Path) -> None:
    metadata = tmp_path / "wav16k" / "max" / "metadata"
    metadata.mkdir(parents=True)
    (metadata / "mixture_test_mix_single.csv").write_text("mixture_ID,mixture_path,source_1_path,length\n")
    with pytest.raises(ConfigError, match="noise_path"):
        librimix_items(tmp_path, "test", "single", 16000, "max")


def test_wham_tasks_and_missing_file(tmp_path: Path) -> None:
    base = tmp_path / "wav8k" / "min" / "cv"
    _folders(base, ["mix_clean", "mix_both", "mix_single", "s1", "s2", "noise"], ["x.wav", "y.wav"])
    assert len(wham_items(tmp_path, "cv", "sep_noisy")[0].references) == 2
    enhancement = wham_items(tmp_path, "cv", "enh_both")
    assert enhancement[0].references[0].parent.name == "mix_clean"
    (base / "s2" / "y.wav").unlink()
    with pytest.raises(ConfigError, match=r"s2/y\.wav is missing"):
        wham_items(tmp_path, "cv", "sep_clean")
    with pytest.raises(ConfigError, match="wav8k/min/tt"):
        wham_items(tmp_path, "tt")


def test_whamr_folders(tmp_path: Path) -> None:
    base = tmp_path / "wav16k" / "max" / "tt"
    folders = ["mix_both_reverb", "mix_single_reverb", "s1_anechoic", "s2_anechoic", "s1_reverb", "noise"]
    _folders(base, folders, ["z.wav"], rate=16000)
    items = whamr_items(tmp_path, "tt", "both", True, "anechoic", sample_rate=16000, mode="max")
    assert [p.parent.name for p in items[0].references] == ["s1_anechoic", "s2_anechoic"]
    single = whamr_items(tmp_path, "tt", "single", True, "reverb", sample_rate=16000, mode="max")
    assert [p.parent.name for p in single[0].references] == ["s1_reverb"]
    with pytest.raises(ConfigError, match="mix_clean_anechoic"):
        whamr_items(tmp_path, "tt", "clean", False, sample_rate=16000, mode="max")


def test_wsj0_3mix(tmp_path: Path) -> None:
    base = tmp_path / "wav8k" / "min" / "tr"
    _folders(base, ["mix", "s1", "s2", "s3"], ["m.wav"])
    item = CorpusDataset(wsj0mix_items(tmp_path, 3, "tr"))[0]
    assert item["targets"].shape == (3, 1, 800)
    shutil.rmtree(base / "s3")
    with pytest.raises(ConfigError, match="s3"):
        wsj0mix_items(tmp_path, 3, "tr")


def test_voicebank_demand(tmp_path: Path) -> None:
    _folders(tmp_path, ["noisy_testset_wav", "clean_testset_wav"], ["p232_001.wav", "p232_002.wav"], rate=48000)
    items = voicebank_demand_items(tmp_path, "test")
    assert [item.id for item in items] == ["p232_001", "p232_002"]
    dataset = CorpusDataset(items, sample_rate=16000, segment_seconds=0.2)
    assert dataset[0]["mixture"].shape == (1, 3200)  # 0.1 s padded to 0.2 s at 16 kHz
    with pytest.raises(ConfigError, match="clean_trainset_28spk_wav"):
        _folders(tmp_path, ["noisy_trainset_28spk_wav"], ["p226_001.wav"], rate=48000)
        voicebank_demand_items(tmp_path, "train")


def test_dns_fileid_matching(tmp_path: Path) -> None:
    _wav(tmp_path / "noisy" / "book_00001_chp_0001_reader_00001_0_snr5_tl-25_fileid_7.wav", rate=16000)
    _wav(tmp_path / "clean" / "clean_fileid_7.wav", rate=16000)
    _wav(tmp_path / "noise" / "noise_fileid_7.wav", rate=16000)
    items = dns_items(tmp_path)
    assert items[0].id == "fileid_7" and items[0].noise is not None
    _wav(tmp_path / "noisy" / "other_snr0_fileid_8.wav", rate=16000)
    with pytest.raises(ConfigError, match="clean_fileid_8.wav"):
        dns_items(tmp_path)
    with pytest.raises(ConfigError, match="noisy"):
        dns_items(tmp_path / "nothing")
