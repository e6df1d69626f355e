"""Identical inputs give byte-identical output files (no timestamps in headers)."""
from __future__ import annotations

import time

import pytest

from speechkit.cli import EXIT_OK, main


@pytest.mark.parametrize("extension", [".wav", ".flac"])
def test_two_enhancements_of_the_same_file_are_byte_identical(tmp_path, enhance_checkpoint, noisy_wav, extension):
    outputs = [tmp_path / f"run{index}{extension}" for index in range(2)]
    for index, output in enumerate(outputs):
        if index:
            time.sleep(1.1)  # libsndfile's float-WAV PEAK chunk stores a timestamp in seconds
        assert main(["enhance", str(noisy_wav), "-o", str(output), "--model", str(enhance_checkpoint),
                     "--no-progress"]) == EXIT_OK
    first, second = (output.read_bytes() for output in outputs)
    assert first == second
    assert b"PEAK" not in first[:512]  # the float WAV header holds no PEAK chunk (and so no timestamp)
