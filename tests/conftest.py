"""Shared fixtures: tiny Conv-TasNet checkpoints, synthetic audio writers, deterministic test models."""
from __future__ import annotations

import dataclasses
import hashlib
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import soundfile
import torch

from speechkit.models.base import SpeechModel


def sha256(path: Path) -> str:
    """Hex digest of a file (to prove inputs are never modified)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def speech_like(seconds: float, rate: int, channels: int = 1, seed: int = 0, level: float = 0.3) -> np.ndarray:
    """A synthetic ``[C, T]`` float32 signal: syllable-modulated harmonics plus a little noise."""
    rng = np.random.default_rng(seed)
    time = np.arange(int(round(seconds * rate))) / rate
    out = []
    for channel in range(channels):
        pitch = 120.0 + 40.0 * channel
        voiced = sum(np.sin(2 * np.pi * pitch * k * time) / k for k in range(1, 6))
        envelope = 0.5 * (1 + np.sin(2 * np.pi * 4.0 * time + channel))
        out.append(level * envelope * voiced / 2.3 + 0.01 * rng.standard_normal(time.shape))
    return np.asarray(out, dtype=np.float32)


class PickleExploit:
    """Unpickling this creates the file ``marker``: loaders must refuse it without running it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))

    @property
    def ran(self) -> bool:
        """Whether something unpickled it."""
        return self.marker.exists()


def write_pickle(path: Path, payload: Any, protocol: int = pickle.DEFAULT_PROTOCOL) -> Path:
    """Pickle ``payload`` into ``path`` (a file no weights-only loader may execute)."""
    with open(path, "wb") as handle:
        pickle.dump(payload, handle, protocol=protocol)
    return path


def write_audio_file(path: Path, audio: np.ndarray, rate: int, subtype: str | None = None) -> Path:
    """Write ``[C, T]`` or ``[T]`` audio with soundfile (format from the extension)."""
    audio = np.asarray(audio)
    frames = audio.T if audio.ndim == 2 else audio  # [C, T] -> [T, C]
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), frames, rate, subtype=subtype)
    return path


# ---------------------------------------------------------------------- deterministic test models
@dataclasses.dataclass(frozen=True)
class GainConfig:
    sample_rate: int = 16000
    gain: float = 0.5


class GainModel(SpeechModel):
    """Multiplies by a constant: chunked processing must reproduce it exactly."""

    name = "test_gain"
    task = "enhancement"
    config_class = GainConfig
    presets: ClassVar = {"tiny": GainConfig()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.config.gain * x)[:, None]  # [B, C, T] -> [B, 1, C, T]


@dataclasses.dataclass(frozen=True)
class BandSplitConfig:
    sample_rate: int = 8000
    split_hz: float = 600.0


class BandSplitModel(SpeechModel):
    """Splits low/high frequencies (FFT mask over the whole chunk) and outputs the louder band first.

    The source order therefore depends on the chunk's content, like a permutation-invariant model.
    """

    name = "test_band_split"
    task = "separation"
    config_class = BandSplitConfig
    presets: ClassVar = {"tiny": BandSplitConfig()}

    @property
    def num_sources(self) -> int:
        return 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        spectrum = torch.fft.rfft(x)  # [B, C, T] -> [B, C, F]
        frequencies = torch.fft.rfftfreq(length, 1.0 / self.sample_rate)
        low_mask = (frequencies < self.config.split_hz).to(x.dtype)
        low = torch.fft.irfft(spectrum * low_mask, n=length)  # [B, C, T]
        high = torch.fft.irfft(spectrum * (1 - low_mask), n=length)  # [B, C, T]
        bands = torch.stack([low, high], dim=1)  # [B, 2, C, T]
        energy = bands.square().sum(dim=(2, 3))  # [B, 2]
        order = torch.argsort(energy, dim=1, descending=True)  # [B, 2]
        return torch.stack([bands[b, order[b]] for b in range(x.shape[0])])  # [B, 2, C, T]


# ---------------------------------------------------------------------- fixtures
#: the recipe configs (``recipes/configs``)
RECIPE_CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"


def smoke_config(run_dir: Path, *overrides: str, **changes: object) -> dict:
    """The synthetic smoke training config (16 items, batch 4, Conv-TasNet tiny at 8 kHz) writing to
    ``run_dir``, with ``key.sub=value`` overrides, then top-level keys replaced by ``changes``."""
    from recipes.trainer import load_config

    config = load_config(RECIPE_CONFIGS / "smoke_synthetic.yaml", [f"run_dir={run_dir}", *overrides])
    config.update(changes)
    return config


def trained_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The model weights saved in ``run_dir/last.pt``."""
    from recipes.trainer import load_train_state

    return load_train_state(run_dir / "last.pt")["model"]


@pytest.fixture(scope="session")
def enhance_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight tiny 16 kHz enhancement Conv-TasNet checkpoint (1 source)."""
    from speechkit.checkpoint import save_checkpoint
    from speechkit.models import build_model

    torch.manual_seed(0)
    model = build_model("conv_tasnet", "tiny", n_src=1, sample_rate=16000)
    path = tmp_path_factory.mktemp("checkpoints") / "tiny_enhance.safetensors"
    return save_checkpoint(model, path, provenance={"note": "random weights for tests"})


@pytest.fixture(scope="session")
def separation_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight tiny 8 kHz two-source Conv-TasNet checkpoint."""
    from speechkit.checkpoint import save_checkpoint
    from speechkit.models import build_model

    torch.manual_seed(1)
    model = build_model("conv_tasnet", "tiny")
    path = tmp_path_factory.mktemp("checkpoints") / "tiny_separate.safetensors"
    return save_checkpoint(model, path)


@pytest.fixture()
def pickle_exploit(tmp_path: Path) -> PickleExploit:
    """An object whose unpickling would create ``tmp_path / "pwned"``."""
    return PickleExploit(tmp_path / "pwned")


@pytest.fixture()
def gain_model() -> GainModel:
    return GainModel(GainConfig())


@pytest.fixture()
def band_split_model() -> BandSplitModel:
    return BandSplitModel(BandSplitConfig())


@pytest.fixture()
def noisy_wav(tmp_path: Path) -> Path:
    """A 0.5 s stereo 22.05 kHz float wav."""
    return write_audio_file(tmp_path / "in" / "noisy.wav", speech_like(0.5, 22050, channels=2), 22050, "FLOAT")
