"""The bundled default enhancer: present, well-formed, and it really enhances the bundled example."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

import speechkit
from speechkit.checkpoint import read_metadata
from speechkit.losses import si_sdr
from speechkit.pretrained import DEFAULT_MODEL, DEFAULT_MODELS, DEFAULT_SEPARATOR, EXAMPLES_DIR, bundled_model

#: the bundled separator's SI-SDR gain on the bundled sentence pair at 1 s offset must exceed this (dB)
SEPARATOR_EXAMPLE_MIN_GAIN_DB = 4.0


def test_default_model_is_bundled_with_a_card() -> None:
    model = bundled_model(DEFAULT_MODEL)
    assert model.card is not None and model.card.read_text(encoding="utf-8").strip()
    assert model.path.stat().st_size < 10 * 2**20
    metadata = read_metadata(model.path)
    assert metadata["model"] == "conv_tasnet" and metadata["sample_rate"] == 16000
    assert metadata["provenance"]["steps_trained"] > 0


def test_default_model_is_causal_streaming_and_low_latency() -> None:
    processor = speechkit.load()
    model = processor.model
    assert model.causal and model.supports_streaming
    assert 1000 * model.algorithmic_latency / model.sample_rate <= 16.0


def test_default_model_improves_the_bundled_real_example() -> None:
    noisy, rate = soundfile.read(EXAMPLES_DIR / "noisy_speech.flac", dtype="float32")
    clean, clean_rate = soundfile.read(EXAMPLES_DIR / "clean_speech.flac", dtype="float32")
    assert rate == clean_rate == 16000
    enhanced = speechkit.load().enhance(noisy, rate)  # [1, T]
    assert enhanced.shape == (1, noisy.shape[-1])
    reference = torch.from_numpy(clean)[None]
    before = si_sdr(torch.from_numpy(noisy)[None], reference).item()
    after = si_sdr(torch.from_numpy(enhanced), reference).item()
    # the example is mixed at 5 dB SNR with held-out dish-washing noise (word clips: not the
    # sentences it was trained on); the trained model gains 2.6 dB there (4,750-step weights: 3.4;
    # the model card gives the values), an untrained one loses
    assert after > before + 2.0, (before, after)


@pytest.mark.parametrize("rate", [8000, 44100])
def test_default_model_accepts_other_rates(rate: int) -> None:
    audio = torch.randn(2, rate // 2).numpy() * 0.1
    out = speechkit.load().enhance(audio, rate)
    assert out.shape == audio.shape


# ------------------------------------------------------------------ the bundled two-speaker separator
def _two_speaker_example() -> tuple[np.ndarray, np.ndarray, int]:
    mixture, rate = soundfile.read(EXAMPLES_DIR / "two_speakers_16k_mix.flac", dtype="float32")
    references = np.stack(
        [soundfile.read(EXAMPLES_DIR / f"two_speakers_16k_s{index}.flac", dtype="float32")[0] for index in (1, 2)]
    )  # [2, T]
    return mixture, references, rate


def test_default_separator_is_bundled_with_a_card() -> None:
    model = bundled_model(DEFAULT_SEPARATOR)
    assert model.card is not None and "Held-out test results" in model.card.read_text(encoding="utf-8")
    assert model.path.stat().st_size < 10 * 2**20
    metadata = read_metadata(model.path)
    assert metadata["model"] == "conv_tasnet" and metadata["sample_rate"] == 16000
    assert metadata["config"]["n_src"] == 2 and metadata["provenance"]["steps_trained"] > 0
    assert DEFAULT_MODELS["separate"] == DEFAULT_SEPARATOR


def test_default_separator_separates_the_bundled_real_example() -> None:
    mixture, references, rate = _two_speaker_example()
    assert rate == 16000 and mixture.shape[-1] == references.shape[-1]
    np.testing.assert_allclose(references.sum(axis=0), mixture, atol=1e-3)  # the mixture is their sum
    estimates = speechkit.load(DEFAULT_SEPARATOR).separate(mixture, rate)  # [S, C, T]
    assert estimates.shape == (2, 1, mixture.shape[-1])
    estimate = torch.from_numpy(np.asarray(estimates)[:, 0])  # [2, T]
    reference = torch.from_numpy(references)
    after = max(si_sdr(estimate, reference).mean().item(), si_sdr(estimate.flip(0), reference).mean().item())
    before = si_sdr(torch.from_numpy(mixture).expand(2, -1), reference).mean().item()
    # two held-out read sentences, 95 % overlap: measured +10.0 dB (the card gives it; +5.2 with the
    # 19,500-step weights, +2.8 with the 23,500-step ones: single examples swing); the 8 kHz
    # word-trained separator that was the default before loses 1.5 dB here, an untrained one gains nothing
    assert after > before + 3.0, (before, after)


def test_default_separator_separates_real_sentences_of_the_bundled_example() -> None:
    mixture, references, rate = _two_speaker_example()
    assert rate == 16000 and mixture.shape[-1] == references.shape[-1]
    np.testing.assert_allclose(references.sum(axis=0), mixture, atol=1e-3)  # the mixture is their sum
    # the two held-out read sentences with the second talker starting 1 s later (about 75 %
    # overlap, the middle of the training range); the bundled mixture itself overlaps 95 %
    offset = rate
    references = 0.5 * np.stack([np.pad(references[0], (0, offset)), np.pad(references[1], (offset, 0))])  # [2, T']
    mixture = references.sum(axis=0)
    estimates = speechkit.load(DEFAULT_SEPARATOR).separate(mixture, rate)  # [S, C, T']
    assert estimates.shape == (2, 1, mixture.shape[-1])
    estimate = torch.from_numpy(np.asarray(estimates)[:, 0])  # [2, T']
    reference = torch.from_numpy(references)
    after = max(si_sdr(estimate, reference).mean().item(), si_sdr(estimate.flip(0), reference).mean().item())
    before = si_sdr(torch.from_numpy(mixture).expand(2, -1), reference).mean().item()
    # measured +8.2 dB (the card gives it); the 8 kHz word-trained separator that was the default
    # before gains 2.8 dB here, an untrained one nothing
    assert after > before + SEPARATOR_EXAMPLE_MIN_GAIN_DB, (before, after)


def test_separate_command_defaults_to_the_bundled_separator(tmp_path) -> None:
    from speechkit.cli import EXIT_OK, main

    source = tmp_path / "two_speakers_mix.flac"
    source.write_bytes((EXAMPLES_DIR / "two_speakers_16k_mix.flac").read_bytes())
    assert main(["separate", str(source), "--no-progress"]) == EXIT_OK
    outputs = sorted(path.name for path in tmp_path.glob("two_speakers_mix_s*"))  # the input's format
    assert outputs == ["two_speakers_mix_s1.flac", "two_speakers_mix_s2.flac"]
    assert soundfile.info(tmp_path / outputs[0]).samplerate == 16000


# ------------------------------------------------------------------ the bundled echo canceller
def test_default_echo_canceller_is_the_trained_network_behind_the_linear_stage() -> None:
    from speechkit.pretrained import DEFAULT_ECHO_CANCELLER, bundled_echo_canceller

    path = bundled_echo_canceller()
    assert path is not None and path.stem == DEFAULT_ECHO_CANCELLER
    model = bundled_model(DEFAULT_ECHO_CANCELLER)
    assert model.card is not None and "Held-out results" in model.card.read_text(encoding="utf-8")
    assert model.path.stat().st_size < 2**20
    metadata = read_metadata(model.path)
    assert metadata["model"] == "complex_d3net_aec" and metadata["sample_rate"] == 16000
    provenance = metadata["provenance"]
    assert metadata["config"]["linear_stage"] and provenance.get("total_steps", provenance["steps_trained"]) >= 4250
    network = speechkit.load_echo_canceller().model
    assert network.num_parameters() == 45196 and network.supports_streaming
    assert 1000 * network.algorithmic_latency / network.sample_rate == 32.0


def test_default_echo_canceller_cancels_the_bundled_echo_example() -> None:
    """3.5 s of a far-end talker's echo alone, then a near-end talker too (test-split speakers, measured room)."""
    mic, rate = soundfile.read(EXAMPLES_DIR / "echo_mic.flac", dtype="float32")
    far_end, _ = soundfile.read(EXAMPLES_DIR / "echo_far_end.flac", dtype="float32")
    near_end, _ = soundfile.read(EXAMPLES_DIR / "echo_near_end.flac", dtype="float32")
    output = np.asarray(speechkit.load_echo_canceller().cancel_echo(mic, far_end, rate))  # [T]
    single_talk, talk = slice(rate // 2, int(3.5 * rate)), slice(int(3.5 * rate), None)
    removed = 10 * np.log10(np.sum(mic[single_talk] ** 2) / np.sum(output[single_talk] ** 2))
    reference = torch.from_numpy(near_end[talk])[None]
    before = si_sdr(torch.from_numpy(mic[talk])[None], reference).item()
    after = si_sdr(torch.from_numpy(output[talk])[None], reference).item()
    # the linear stage alone removes 34 dB and reaches 18.7 dB SI-SDR here; an untrained network damages it
    assert removed > 35.0 and after > before + 10.0, (removed, before, after)
