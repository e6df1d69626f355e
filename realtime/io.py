"""File sources and sinks, and the lazy import of sounddevice (microphone and speaker).

A file source is read whole into memory, resampled to the model's rate if it is at another one
(soxr, as ``speechkit enhance`` does), and then delivered callback by callback, either paced on the
clock (as a microphone would) or as fast as possible; a far-end file (echo cancellation) becomes the
second input channel. A file sink writes the output stream with soundfile (``speechkit stream``
resamples a file-to-file result back to the input file's rate).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import RealtimeError


def import_sounddevice() -> Any:
    """sounddevice, or a :class:`RealtimeError` saying how to get it (PortAudio included)."""
    try:
        import sounddevice
    except ImportError as error:
        raise RealtimeError(
            "sounddevice is needed for microphone and speaker streaming: pip install 'speechkit[realtime]'"
        ) from error
    except OSError as error:  # sounddevice imports but finds no PortAudio library
        raise RealtimeError(f"PortAudio is not available ({error}); install libportaudio2") from error
    return sounddevice


def _import_soundfile() -> Any:
    try:
        import soundfile
    except ImportError as error:
        raise RealtimeError("soundfile is needed to read and write audio files: pip install soundfile") from error
    return soundfile


def resample(signal: np.ndarray, rate: int, target_rate: int, length: int | None = None) -> np.ndarray:
    """``signal [channels, T]`` at ``rate`` as ``[channels, T']`` float32 at ``target_rate`` (soxr HQ).

    ``length`` cuts or zero-pads the result to exactly that many samples (default: soxr's length,
    ``T * target_rate / rate`` rounded). Identity when the rates match.
    """
    if rate != target_rate and signal.shape[-1] > 0:
        try:
            import soxr
        except ImportError as error:
            raise RealtimeError("soxr is needed to resample audio files: pip install soxr") from error
        signal = soxr.resample(np.ascontiguousarray(signal.T), rate, target_rate, quality="HQ").T  # [C, T']
    signal = np.ascontiguousarray(signal, dtype=np.float32)
    if length is not None and signal.shape[-1] != length:
        fitted = np.zeros((signal.shape[0], length), dtype=np.float32)
        kept = min(length, signal.shape[-1])
        fitted[:, :kept] = signal[:, :kept]
        signal = fitted
    return signal


def audio_file_info(path: str | os.PathLike) -> tuple[int, int]:
    """``(sample rate, frames)`` of an audio file (to write a file-to-file result at the input's rate)."""
    soundfile = _import_soundfile()
    try:
        info = soundfile.info(str(path))
        return int(info.samplerate), int(info.frames)
    except RuntimeError as error:
        raise RealtimeError(f"{path} is not a readable audio file ({error})") from error


def read_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """A file as ``[channels, T]`` float32 at ``sample_rate`` Hz (resampled if the file is at another rate)."""
    soundfile = _import_soundfile()
    path = Path(path)
    if not path.is_file():
        raise RealtimeError(f"audio file {path} does not exist")
    try:
        data, file_rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # [T, channels]
    except RuntimeError as error:  # soundfile.LibsndfileError derives from RuntimeError
        raise RealtimeError(f"{path} is not a readable audio file ({error})") from error
    if data.shape[0] == 0:
        raise RealtimeError(f"{path} is empty")
    return resample(data.T, int(file_rate), sample_rate)  # [channels, T] at sample_rate


def file_input(
    path: str | os.PathLike,
    sample_rate: int,
    far_end: str | os.PathLike | None,
    channels: int,
    microphones: int | None = None,
) -> np.ndarray:
    """The model input ``[channels, T]`` from a file and an optional far-end file.

    ``channels`` is the model's input channel count and ``microphones`` how many of them come
    from the file (default: 1 when ``channels`` is 2, i.e. an echo canceller's microphone and far
    end, else ``channels``). A single-microphone model takes the file's first channel; an
    M-microphone model the first M channels (a file with fewer is refused). With a far end, the
    signals are cut to the shorter length.
    """
    microphones = (1 if channels == 2 else channels) if microphones is None else microphones
    audio = read_audio(path, sample_rate)  # [C_file, T]
    if microphones > 1 and audio.shape[0] < microphones:
        raise RealtimeError(
            f"the model takes {microphones} microphone channels; {path} has {audio.shape[0]}"
        )
    near = audio[:microphones]  # [M, T]
    if far_end is None:
        if channels != microphones:
            raise RealtimeError(f"the model takes {channels} input channels; pass the far-end signal with --ref")
        return near
    if channels != microphones + 1:
        raise RealtimeError("--ref is only for echo-cancellation models (microphone plus far end)")
    far = read_audio(far_end, sample_rate)[:1]  # [1, T_far]
    length = min(near.shape[-1], far.shape[-1])
    return np.concatenate([near[:, :length], far[:, :length]], axis=0)  # [2, T]


def write_audio(path: str | os.PathLike, signal: np.ndarray, sample_rate: int, overwrite: bool = False) -> Path:
    """Write ``signal [channels, T]`` as a WAV/FLAC file (by extension)."""
    soundfile = _import_soundfile()
    path = Path(path)
    if path.exists() and not overwrite:
        raise RealtimeError(f"{path} exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.ascontiguousarray(signal.T), sample_rate, subtype="FLOAT" if path.suffix.lower() == ".wav" else None)
    return path
