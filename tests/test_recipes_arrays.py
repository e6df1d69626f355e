"""Microphone-array training data (circular arrays in simulated rooms, measured sub-arrays) and the PCM objective."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recipes.data.minicorpus import MiniCorpus
from test_recipes_data import make_fake_shared_data

pytest.importorskip("pyroomacoustics")


@pytest.fixture(scope="module")
def fake_corpus(tmp_path_factory: pytest.TempPathFactory) -> MiniCorpus:
    root = make_fake_shared_data(tmp_path_factory.mktemp("shared_data"))
    return MiniCorpus.scan(root, cache_root=root / "no_cache", words_per_utterance=3)


def test_circular_array_room_renders_a_direct_path_aligned_with_the_reverberant_response() -> None:
    from recipes.data.rooms import ArrayRoomConfig, circular_array, simulate_array_room

    centre = np.array([1.0, 2.0, 1.5])
    positions = circular_array(centre, 4, 0.1)  # [3, 4]
    assert np.allclose(np.linalg.norm(positions - centre[:, None], axis=0), 0.1)
    config = ArrayRoomConfig(rt60_range=(0.6, 0.6), max_order=10, max_seconds=0.5)
    room = simulate_array_room(np.random.default_rng(0), 16000, 4, 2, config)
    speech, direct = room["speech"], room["direct"]
    assert speech.shape == direct.shape == (4, 8000) and room["noise"].shape == (2, 4, 8000)
    for mic in range(4):
        peak = int(np.argmax(np.abs(direct[mic])))
        assert abs(int(np.argmax(np.abs(speech[mic]))) - peak) <= 1  # the direct path is the strongest arrival
        assert np.sum(direct[mic] ** 2) < 0.8 * np.sum(speech[mic] ** 2)  # reflections carry energy too
    distance = room["parameters"]["talker_distance"]
    assert 0.75 <= distance <= 2.0 + 0.31


@pytest.mark.parametrize("measured", [False, True])
def test_array_dataset_items(fake_corpus: MiniCorpus, measured: bool) -> None:
    from recipes.data.multichannel_datasets import ArrayRoomDataset, ArrayRoomMixingConfig
    from recipes.data.rooms import ArrayRoomConfig

    room = ArrayRoomConfig(rt60_range=(0.2, 0.4), max_order=6, max_seconds=0.3, room_size_max=(6.0, 6.0, 3.0))
    config = ArrayRoomMixingConfig(segment_seconds=0.5, mic_count=4, room=room, diffuse_probability=1.0,
                                   measured_probability=1.0 if measured else 0.0)
    dataset = ArrayRoomDataset.from_minicorpus("train", config, length=2, seed=0, corpus=fake_corpus)
    item = dataset[1]
    assert item["mixture"].shape == (4, 8000) and item["targets"].shape == (1, 1, 8000)
    assert torch.isfinite(item["mixture"]).all() and float(item["targets"].abs().max()) > 0
    assert item["array"].startswith("measured" if measured else "circular")
    assert measured or "diffuse:" in item["noise_id"]
    assert torch.equal(item["mixture"], dataset[1]["mixture"])  # deterministic per (seed, epoch, index)
    residual = item["mixture"][0] - item["targets"][0, 0]
    assert float(residual.pow(2).mean()) > 1e-3 * float(item["targets"].pow(2).mean())  # noise and reverberation


def _noise_file_entry(folder, samples: np.ndarray, name: str):
    """A corpus entry of the 16 kHz noise file ``folder/name`` holding ``samples``."""
    import soundfile as sf

    from recipes.data.manifest import CorpusEntry

    path = folder / name
    sf.write(path, samples.astype(np.float32), 16000, subtype="FLOAT")
    return CorpusEntry(id=f"noise/{name}", kind="noise", split="train", group=name, corpus="test",
                       license="none", provenance="test", native_sample_rate=16000, sources=[str(path)],
                       frames=len(samples), sample_rate=16000)


def _silent_noise_entry(folder, seconds: float = 30.0):
    """A long noise file of exact zeros."""
    return _noise_file_entry(folder, np.zeros(int(seconds * 16000)), "silent.wav")


def test_a_digitally_silent_noise_stops_with_a_one_line_reason(fake_corpus: MiniCorpus, tmp_path) -> None:
    from recipes.data.multichannel_datasets import ArrayRoomDataset, ArrayRoomMixingConfig
    from recipes.data.rooms import ArrayRoomConfig
    from speechkit.errors import AudioError

    room = ArrayRoomConfig(rt60_range=(0.2, 0.3), max_order=4, max_seconds=0.2, room_size_max=(6.0, 6.0, 3.0))
    config = ArrayRoomMixingConfig(segment_seconds=0.25, mic_count=4, room=room, point_noise_range=(1, 1))
    speech = fake_corpus.select("speech", "train", 16000, True)
    with pytest.raises(AudioError, match="digitally silent"):
        ArrayRoomDataset(speech, [_silent_noise_entry(tmp_path)], config, length=1, seed=0)[0]


def test_a_quiet_noise_is_mixed_at_the_requested_snr_not_taken_for_silence(fake_corpus: MiniCorpus, tmp_path) -> None:
    # A real ambience stretch at -79 dBFS through a measured room response arrives near -120 dB: quiet, not
    # silent. It must be scaled to the drawn SNR like any other noise (it once stopped a training run).
    from recipes.data.audio import scale_to_snr, snr_db
    from recipes.data.multichannel_datasets import ArrayRoomDataset, ArrayRoomMixingConfig
    from recipes.data.rooms import ArrayRoomConfig

    rng = np.random.default_rng(0)
    speech_segment = rng.standard_normal((1, 4000)).astype(np.float32) * 0.1
    quiet_segment = rng.standard_normal((1, 4000)).astype(np.float32) * 1e-7  # -140 dB
    assert snr_db(speech_segment, scale_to_snr(speech_segment, quiet_segment, 5.0)) == pytest.approx(5.0, abs=1e-3)

    room = ArrayRoomConfig(rt60_range=(0.2, 0.3), max_order=4, max_seconds=0.2, room_size_max=(6.0, 6.0, 3.0))
    config = ArrayRoomMixingConfig(segment_seconds=0.25, mic_count=4, room=room, diffuse_probability=0.0,
                                   point_noise_range=(1, 1), snr_range_db=(5.0, 5.0))
    speech = fake_corpus.select("speech", "train", 16000, True)
    quiet = _noise_file_entry(tmp_path, rng.standard_normal(16000) * 1e-6, "quiet.wav")
    item = ArrayRoomDataset(speech, [quiet], config, length=1, seed=0)[0]
    assert item["noise_id"] == "noise/quiet.wav"
    speech_image = (item["mixture"] - item["noise"]).numpy()
    assert snr_db(speech_image, item["noise"].numpy()) == pytest.approx(5.0, abs=0.01)


def test_complex_spectral_mapping_is_the_reference_pcm_loss_up_to_a_factor_two() -> None:
    from recipes.training.objectives import build_objective

    torch.manual_seed(0)
    mixture = torch.randn(2, 4, 4000)
    target, estimate = torch.randn(2, 1, 1, 4000), torch.randn(2, 1, 1, 4000)
    objective = build_objective({"name": "complex_spectral_mapping", "n_fft": 512, "hop_length": 256,
                                 "magnitude_weight": 0.0})
    ours = objective.loss(estimate, {"mixture": mixture, "targets": target})

    def stft_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        window = torch.hann_window(512)
        spectra = [torch.view_as_real(torch.stft(x, 512, 256, window=window, return_complex=True)) for x in (a, b)]
        return torch.nn.functional.l1_loss(*spectra)

    reference_mic = mixture[:, 0]
    pcm = 0.5 * stft_l1(estimate[:, 0, 0], target[:, 0, 0]) + 0.5 * stft_l1(
        reference_mic - estimate[:, 0, 0], reference_mic - target[:, 0, 0])
    assert torch.allclose(ours, 2.0 * pcm, rtol=1e-5)


def test_factories_build_train_items_and_a_fixed_set_from_a_corpus_cache(tmp_path) -> None:
    from recipes.train import array_enhancement, fixed_array_enhancement
    from test_recipes_data import make_fake_shared_data
    from test_recipes_realworld import make_cache

    cache = make_cache(tmp_path / "cache")
    shared = make_fake_shared_data(tmp_path / "shared")
    mixing = {"measured_probability": 0.5, "room": {"rt60_range": [0.2, 0.3], "max_order": 4, "max_seconds": 0.2}}
    train = array_enhancement(str(cache), "train", segment_seconds=0.5, length=3, max_floor_db=None, mixing=mixing,
                              measured_rir_root=str(shared))
    assert train[0]["mixture"].shape == (4, 8000) and {train[i]["array"].split()[0] for i in range(3)} <= {
        "measured", "circular"}
    valid = fixed_array_enhancement(str(tmp_path / "fixed"), str(cache), "validation", count=2, segment_seconds=0.5,
                                    max_floor_db=None, mixing={"room": mixing["room"]})
    assert len(valid) == 2 and valid[1]["mixture"].shape == (4, 8000)
    with pytest.raises(Exception, match="measured_rir_root"):
        array_enhancement(str(cache), "train", length=1, max_floor_db=None, mixing={"measured_probability": 0.2},
                          measured_rir_root=str(tmp_path / "no_rirs_here"))
