"""File sources and sinks, and the lazy import of sounddevice (microphone and speaker).

A file source is read whole into memory, resampled to the model's rate if it is at another one
(soxr, as ``speechkit enhance`` does), and then delivered callback by callback, either paced on the
clock (as a microphone would) or as fast as possible. Which channels of the file feed the model is
decided by the one channel policy of :mod:`speechkit.channels` and the model's input layout, as for
``speechkit enhance``; a far-end file (echo cancellation) becomes the channel after the microphones.
A file sink is written by speechkit's offline writer (atomic, soft-limited above -1 dBFS;
``speechkit stream`` resamples a file-to-file result back to the input file's rate).
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speechkit.tasks import InputLayout

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


def select_input_channels(
    layout: InputLayout, audio_channels: int, mics: Sequence[int] | None, source: str
) -> list[int]:
    """The channels of an input with ``audio_channels`` channels that feed the model's microphones.

    The one policy of :func:`speechkit.channels.select_channels` (as ``speechkit enhance``): an
    M-microphone model takes ``mics`` (exactly M, in array order) or the first M channels; an echo
    canceller its microphone. The engine runs one stream, so a one-microphone model takes one
    channel: an input with several needs ``mics`` naming one (offline inference would process each
    channel on its own).

    Raises:
        RealtimeError: the input does not fit the layout (the reason names the expected layout).
    """
    from speechkit.channels import select_channels  # torch-free
    from speechkit.errors import ConfigError

    try:
        selected = select_channels(audio_channels, layout, mics)
    except ConfigError as error:
        raise RealtimeError(f"{source}: {error}") from None
    if len(selected) != layout.num_microphones:
        raise RealtimeError(
            f"{source} has {audio_channels} channels but the model expects {layout.describe()} and the realtime "
            "engine runs one stream; choose the channel with --mics N"
        )
    return selected


def file_input(
    path: str | os.PathLike,
    sample_rate: int,
    far_end: str | os.PathLike | None,
    layout: InputLayout,
    mics: Sequence[int] | None = None,
    far_end_channel: int | None = None,
) -> np.ndarray:
    """The model input ``[C_in, T]`` from a file and an optional far-end file.

    The microphone channels come from the file by :func:`select_input_channels` (``layout`` is the
    model's input layout, ``mics`` the ``--mics`` selection); the far end, which follows them, from
    the first channel of ``far_end`` (both signals are then cut to the shorter length), or from
    channel ``far_end_channel`` of the file itself (a two-channel capture: microphone and loopback).
    """
    audio = read_audio(path, sample_rate)  # [C_file, T]
    if far_end_channel is not None:
        if layout.far_end_channel is None:
            raise RealtimeError("--ref-channel is only for echo-cancellation models (microphone plus far end)")
        if not 0 <= far_end_channel < audio.shape[0]:
            raise RealtimeError(
                f"{path} has {audio.shape[0]} channel(s); there is no channel {far_end_channel} for the far end"
            )
        others = [channel for channel in range(audio.shape[0]) if channel != far_end_channel]
        microphones = others if mics is None else list(mics)
        if far_end_channel in microphones:
            raise RealtimeError(f"channel {far_end_channel} cannot be both a microphone and the far end")
        if mics is None and len(others) > layout.num_microphones:
            raise RealtimeError(
                f"{path} has {audio.shape[0]} channels; name the microphone channel(s) with --mics besides the far end"
            )
        near = audio[select_input_channels(layout, audio.shape[0], microphones, str(path))]  # [M, T]
        return np.concatenate([near, audio[far_end_channel : far_end_channel + 1]], axis=0)  # [M + 1, T]
    near = audio[select_input_channels(layout, audio.shape[0], mics, str(path))]  # [M, T]
    if far_end is None:
        if layout.far_end_channel is not None:
            raise RealtimeError(f"the model expects {layout.describe()}; pass the far-end signal with --ref")
        return near
    if layout.far_end_channel is None:
        raise RealtimeError("--ref is only for echo-cancellation models (microphone plus far end)")
    far = read_audio(far_end, sample_rate)[:1]  # [1, T_far]
    length = min(near.shape[-1], far.shape[-1])
    return np.concatenate([near[:, :length], far[:, :length]], axis=0)  # [M + 1, T]


def write_audio(path: str | os.PathLike, signal: np.ndarray, sample_rate: int, overwrite: bool = False) -> Path:
    """Write ``signal [channels, T]`` as an audio file (format by extension, as ``speechkit enhance``).

    The offline writer (:class:`speechkit.audio.AtomicAudioWriter`, torch-free) does it: atomic,
    and samples beyond -1 dBFS soft-limited by :func:`speechkit.audio.soft_limit` rather than
    clipped, with one :class:`speechkit.files.AudioWarning` line when the signal exceeded full scale.
    """
    from speechkit.audio import AtomicAudioWriter  # torch-free
    from speechkit.files import AudioWarning

    with AtomicAudioWriter(path, sample_rate, signal.shape[0], force=overwrite) as writer:
        writer.write(np.asarray(signal, dtype=np.float32))
    for message in writer.warnings():
        warnings.warn(message, AudioWarning, stacklevel=2)
    return writer.path
