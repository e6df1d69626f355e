"""Spectrogram images as PNG, with numpy and zlib only (no plotting library).

:func:`write_spectrogram_png` stacks the spectrograms of several signals (e.g. before and after
enhancement) vertically, on one shared dB scale so they can be compared, low frequencies at the
bottom of each panel, panels separated by a white band.
"""
from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._files import publish, temporary_sibling
from .errors import AudioError

#: colour map anchors (dark blue -> purple -> orange -> light yellow), RGB in 0..255
COLORMAP_ANCHORS = np.array(
    [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]],
    dtype=np.float64,
)
COLORMAP_ANCHORS.setflags(write=False)
SEPARATOR_PIXELS = 4


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of an RGB image ``[height, width, 3]`` of uint8 (8-bit truecolour, no filter)."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels [H, W, 3], got {pixels.dtype} {tuple(pixels.shape)}")
    height, width, _ = pixels.shape
    rows = np.concatenate([np.zeros((height, 1), dtype=np.uint8), pixels.reshape(height, width * 3)], axis=1)  # [H, 1 + 3W]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9)) + chunk(b"IEND", b"")


def colorize(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] ``[H, W]`` to RGB uint8 ``[H, W, 3]``."""
    position = np.clip(values, 0.0, 1.0) * (len(COLORMAP_ANCHORS) - 1)
    lower = np.floor(position).astype(int).clip(0, len(COLORMAP_ANCHORS) - 2)
    fraction = (position - lower)[..., None]  # [H, W] -> [H, W, 1]
    rgb = COLORMAP_ANCHORS[lower] * (1 - fraction) + COLORMAP_ANCHORS[lower + 1] * fraction  # [H, W, 3]
    return np.round(rgb).astype(np.uint8)


def log_spectrogram(signal: np.ndarray, n_fft: int = 512, hop_length: int = 128) -> np.ndarray:
    """Power spectrogram in dB ``[n_fft // 2 + 1, frames]`` of a mono signal ``[T]``."""
    import torch

    samples = torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32))
    if samples.numel() < n_fft:
        samples = torch.nn.functional.pad(samples, (0, n_fft - samples.numel()))  # [T] -> [n_fft]
    spectrum = torch.stft(
        samples, n_fft=n_fft, hop_length=hop_length, window=torch.hann_window(n_fft), center=False, return_complex=True
    )  # [T] -> [F, N]
    power = spectrum.abs().square().numpy()
    return 10.0 * np.log10(power + 1e-12)


def write_spectrogram_png(
    path: str | os.PathLike,
    signals: Sequence[np.ndarray],
    sample_rate: int,
    dynamic_range_db: float = 80.0,
    max_width: int = 1200,
) -> Path:
    """Write one PNG with the spectrograms of ``signals`` (each ``[T]`` or ``[C, T]``, first channel used).

    Args:
        path: destination ``.png`` (written atomically).
        signals: the signals, top to bottom.
        sample_rate: their sample rate (sets the FFT size: about 32 ms windows).
        dynamic_range_db: dB below the loudest bin shown as black (shared by all panels).
        max_width: maximum image width in pixels (the hop grows for long signals).
    """
    if not signals:
        raise AudioError("no signals to draw")
    mono = [np.asarray(signal, dtype=np.float32).reshape(-1, np.asarray(signal).shape[-1])[0] for signal in signals]
    n_fft = 1 << max(6, int(round(np.log2(0.032 * sample_rate))))
    longest = max(len(signal) for signal in mono)
    hop_length = max(n_fft // 4, int(np.ceil(longest / max_width)))
    spectrograms = [log_spectrogram(signal, n_fft, hop_length) for signal in mono]
    top = max(float(spectrogram.max()) for spectrogram in spectrograms)
    width = max(spectrogram.shape[1] for spectrogram in spectrograms)
    panels = []
    for index, spectrogram in enumerate(spectrograms):
        scaled = (spectrogram - (top - dynamic_range_db)) / dynamic_range_db  # [F, N] in about [0, 1]
        scaled = np.pad(scaled, ((0, 0), (0, width - scaled.shape[1])))  # [F, N] -> [F, width]
        panels.append(colorize(scaled[::-1]))  # low frequencies at the bottom
        if index < len(spectrograms) - 1:
            panels.append(np.full((SEPARATOR_PIXELS, width, 3), 255, dtype=np.uint8))
    image = np.concatenate(panels, axis=0)  # [sum H, width, 3]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = temporary_sibling(path, suffix=".partial.png")
    try:
        with open(tmp_name, "wb") as handle:
            handle.write(encode_png(image))
        publish(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path
