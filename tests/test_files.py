"""The one file path (speechkit.files.run_file): reader pairing, atomic outputs, used by enhance, separate and aec."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

import speechkit.api
import speechkit.echo
import speechkit.files
from speechkit.audio import AtomicAudioWriter
from speechkit.files import run_file
from speechkit.models import build_model


class _Recorder:
    """A pipeline that returns its primary block as every source and records what it was given."""

    output_channels = 1
    runner = None

    def __init__(self, fail_at: int | None = None, sources: int = 1) -> None:
        self.calls: list[tuple[int, int | None]] = []
        self.fail_at = fail_at
        self.sources = sources

    def push(self, block: np.ndarray, *others: np.ndarray | None) -> np.ndarray:
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise RuntimeError("model failed")
        other = others[0] if others else None
        self.calls.append((block.shape[-1], None if other is None else other.shape[-1]))
        return np.stack([block] * self.sources)  # [1, n] -> [S, C=1, n]

    def finish(self) -> np.ndarray:
        return np.full((1, 1, 2), 0.5, dtype=np.float32)


def _blocks(sizes: list[int], value: float) -> list[np.ndarray]:
    return [np.full((1, size), value, dtype=np.float32) for size in sizes]


def test_run_file_pairs_readers_writes_and_commits(tmp_path):
    pipeline = _Recorder()
    writer = AtomicAudioWriter(tmp_path / "out.wav", 8000, 1)
    progress: list[int] = []
    run_file([iter(_blocks([4, 4, 3], 0.25)), iter(_blocks([5, 5], 0.0))], pipeline, [writer], progress.append)
    assert pipeline.calls == [(4, 5), (4, 5), (3, None)]  # the second reader ended: None
    assert progress == [4, 4, 3]
    written, _ = soundfile.read(tmp_path / "out.wav", dtype="float32")
    np.testing.assert_array_equal(written, [0.25] * 11 + [0.5, 0.5])


def test_run_file_discards_every_output_on_error(tmp_path):
    writers = [AtomicAudioWriter(tmp_path / f"s{index}.wav", 8000, 1) for index in (1, 2)]
    with pytest.raises(RuntimeError, match="model failed"):
        run_file([iter(_blocks([4, 4, 4], 0.1))], _Recorder(fail_at=2, sources=2), writers)
    assert list(tmp_path.iterdir()) == []  # neither output nor any temporary file is left


def test_enhance_separate_and_echo_files_all_go_through_run_file(tmp_path, monkeypatch):
    calls: list[int] = []

    def counting(readers, pipeline, writers, progress=None):
        calls.append(len(readers))
        return speechkit.files.run_file(readers, pipeline, writers, progress)

    monkeypatch.setattr(speechkit.api, "run_file", counting)
    monkeypatch.setattr(speechkit.echo, "run_file", counting)
    rng = np.random.default_rng(0)
    signal = (0.1 * rng.standard_normal(4000)).astype(np.float32)
    soundfile.write(tmp_path / "in.wav", signal, 8000, subtype="FLOAT")
    torch.manual_seed(0)
    enhancer = speechkit.api.Processor(build_model("conv_tasnet", "tiny", n_src=1))
    enhancer.enhance_file(tmp_path / "in.wav", tmp_path / "enhanced.wav")
    separator = speechkit.api.Processor(build_model("conv_tasnet", "tiny"))
    separator.separate_file(tmp_path / "in.wav", tmp_path / "separated")
    canceller = speechkit.api.Processor(build_model("complex_d3net_aec", "tiny"))
    rate = canceller.sample_rate
    soundfile.write(tmp_path / "mic.wav", signal, rate, subtype="FLOAT")
    soundfile.write(tmp_path / "far.wav", signal[:3500], rate, subtype="FLOAT")
    result = canceller.cancel_echo_file(tmp_path / "mic.wav", tmp_path / "far.wav", tmp_path / "near.wav",
                                        delay_seconds=0.0)
    assert calls == [1, 1, 2]  # enhance and separate read one file, echo cancellation two
    assert soundfile.info(result.outputs[0]).frames == 4000
    assert len(list((tmp_path / "separated").iterdir())) == 2
