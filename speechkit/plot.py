"""Before/after spectrogram figures drawn with matplotlib (the ``plot`` extra).

:func:`write_spectrogram_figure` draws one panel per signal (e.g. noisy, enhanced, clean
reference; or mixture, speaker 1, speaker 2), top to bottom, with time in seconds, frequency in
kHz, a title per panel and one shared colour bar in dBFS, so the panels can be compared. The PNG is
written atomically and is byte-identical for identical inputs. matplotlib is used through its
object API (no ``pyplot``, no global backend switch).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._files import publish, temporary_sibling
from ._optional import require
from .errors import AudioError, OutputExistsError

#: panel titles of an enhancement figure, top to bottom (the third when a clean reference is drawn)
ENHANCEMENT_TITLES = ("noisy", "enhanced", "clean reference")
#: dB below the loudest bin of the figure that the colour scale shows
DYNAMIC_RANGE_DB = 80.0
#: analysis window in seconds (rounded to a power-of-two FFT size)
WINDOW_SECONDS = 0.032
#: at most this many frames per panel (the hop grows for long signals)
MAX_FRAMES = 1200


def separation_titles(num_sources: int) -> list[str]:
    """Panel titles of a separation figure: ``mixture``, ``speaker 1``, ``speaker 2``, ..."""
    return ["mixture", *(f"speaker {index + 1}" for index in range(num_sources))]


def spectrogram_db(signal: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """Spectrogram in dBFS ``[n_fft // 2 + 1, frames]`` of a mono signal ``[T]`` (Hann window, no padding).

    Scaled so that a full-scale sine reads 0 dBFS in its bin.
    """
    samples = np.asarray(signal, dtype=np.float64).reshape(-1)
    if samples.size < n_fft:
        samples = np.pad(samples, (0, n_fft - samples.size))  # [T] -> [n_fft]
    window = np.hanning(n_fft + 2)[1:-1]
    frames = np.lib.stride_tricks.sliding_window_view(samples, n_fft)[::hop_length]  # [N, n_fft]
    spectrum = np.fft.rfft(frames * window, axis=-1) / (window.sum() / 2.0)  # [N, F]
    return 20.0 * np.log10(np.abs(spectrum.T) + 1e-10)  # [F, N]


def write_spectrogram_figure(
    path: str | os.PathLike,
    signals: Sequence[np.ndarray],
    sample_rate: int,
    titles: Sequence[str],
    force: bool = False,
    heading: str | None = None,
) -> Path:
    """Draw the spectrograms of ``signals`` (each ``[T]`` or ``[C, T]``, first channel) into a PNG.

    Args:
        path: destination ``.png``, written atomically.
        signals: the signals, top to bottom, all at ``sample_rate``.
        sample_rate: their sample rate in Hz.
        titles: one title per signal.
        force: overwrite an existing ``path``.
        heading: optional figure title (e.g. the file name).

    Raises:
        MissingDependencyError: matplotlib is not installed (``pip install 'speechkit[plot]'``).
        OutputExistsError: ``path`` exists and ``force`` is False.
        AudioError: no signals, or a title count that does not match.
    """
    require("matplotlib", "plot", "drawing spectrograms")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not signals or len(titles) != len(signals):
        raise AudioError(f"need one title per signal, got {len(signals)} signal(s) and {len(titles)} title(s)")
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists; pass --force (force=True) to overwrite it")
    mono = [np.asarray(signal, dtype=np.float32).reshape(-1, np.shape(signal)[-1])[0] for signal in signals]
    n_fft = 1 << max(6, int(round(np.log2(WINDOW_SECONDS * sample_rate))))
    longest = max(signal.size for signal in mono)
    hop_length = max(n_fft // 4, int(np.ceil(longest / MAX_FRAMES)))
    spectrograms = [spectrogram_db(signal, n_fft, hop_length) for signal in mono]
    top = max(float(spectrogram.max()) for spectrogram in spectrograms)
    figure = Figure(figsize=(10.0, 0.8 + 2.2 * len(signals)), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(signals), 1, sharex=True, squeeze=False)[:, 0]
    image = None
    for axis, spectrogram, signal, title in zip(axes, spectrograms, mono, titles):
        duration = max(signal.size, n_fft) / sample_rate
        image = axis.imshow(
            spectrogram, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
            extent=(0.0, duration, 0.0, sample_rate / 2000.0), vmin=top - DYNAMIC_RANGE_DB, vmax=top,
        )
        axis.set_title(title, loc="left", fontsize=11)
        axis.set_ylabel("frequency (kHz)")
    axes[-1].set_xlabel("time (s)")
    axes[0].set_xlim(0.0, max(longest, n_fft) / sample_rate)
    figure.colorbar(image, ax=list(axes), label="level (dBFS)", shrink=0.9)
    if heading:
        figure.suptitle(heading, fontsize=12)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = temporary_sibling(path, suffix=".partial.png")
    try:
        figure.savefig(tmp_name, format="png", metadata={"Software": None})
        publish(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path


def write_files_figure(
    path: str | os.PathLike,
    files: Sequence[str | os.PathLike],
    titles: Sequence[str],
    seconds: float,
    heading: str | None = None,
) -> Path:
    """:func:`write_spectrogram_figure` of the first ``seconds`` of audio files (first channel each),
    all drawn at the first file's rate (others are resampled), overwriting ``path``."""
    import soundfile
    import soxr

    signals = []
    rate = 0
    for index, file in enumerate(files):
        file_rate = int(soundfile.info(str(file)).samplerate)
        audio, _ = soundfile.read(str(file), frames=int(seconds * file_rate), dtype="float32", always_2d=True)
        channel = audio[:, 0]  # [T, C] -> first channel [T]
        if index == 0:
            rate = file_rate
        elif file_rate != rate and channel.size:
            channel = soxr.resample(channel, file_rate, rate).astype(np.float32)
        signals.append(channel)
    return write_spectrogram_figure(path, signals, rate, list(titles), force=True, heading=heading)

