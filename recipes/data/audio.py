"""Small numpy audio helpers shared by the data modules: reading, resampling, levels, trimming.

Everything here works on float32 numpy arrays shaped ``[channels, samples]`` unless stated.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import soxr

from speechkit.errors import AudioError

EPSILON = 1e-12

#: mean power at or below which a signal is digitally silent (-200 dB). Quiet is not silent: a real
#: ambience segment at -79 dBFS heard through a measured room response arrives near -120 dB, and
#: :func:`scale_to_snr` must still scale it; only a segment of (nearly) exact zeros has no gain.
SILENT_POWER = 1e-20


def read_audio(
    path: str | Path,
    sample_rate: int | None = None,
    start: int = 0,
    stop: int | None = None,
) -> np.ndarray:
    """Read ``path`` as float32 ``[channels, samples]``, optionally a frame range, resampled.

    Args:
        path: audio file readable by soundfile (wav, flac...).
        sample_rate: resample to this rate with soxr; None keeps the file's rate.
        start: first frame to read (at the file's own rate).
        stop: one past the last frame to read (file rate); None reads to the end.

    Raises:
        AudioError: the file is missing or unreadable.
    """
    try:
        data, file_rate = soundfile.read(
            str(path), start=start, stop=stop, dtype="float32", always_2d=True
        )
    except (OSError, RuntimeError, soundfile.LibsndfileError) as error:
        raise AudioError(f"Cannot read audio file {path}: {error}.") from error
    audio = np.ascontiguousarray(data.T)  # [samples, channels] -> [channels, samples]
    if sample_rate is not None and sample_rate != file_rate:
        audio = resample(audio, file_rate, sample_rate)
    return audio


def audio_info(path: str | Path) -> tuple[int, int, int]:
    """Return ``(frames, sample_rate, channels)`` of an audio file without decoding it."""
    try:
        info = soundfile.info(str(path))
    except (OSError, RuntimeError, soundfile.LibsndfileError) as error:
        raise AudioError(f"Cannot read audio file {path}: {error}.") from error
    return int(info.frames), int(info.samplerate), int(info.channels)


def resample(audio: np.ndarray, input_rate: int, output_rate: int) -> np.ndarray:
    """Resample ``audio[channels, samples]`` from ``input_rate`` to ``output_rate`` (soxr HQ)."""
    if input_rate == output_rate:
        return audio.astype(np.float32, copy=False)
    resampled = soxr.resample(audio.T, input_rate, output_rate, quality="HQ")  # [samples', channels]
    return np.ascontiguousarray(resampled.T, dtype=np.float32)  # -> [channels, samples']


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int, subtype: str = "FLOAT") -> None:
    """Write ``audio[channels, samples]`` to ``path`` (WAV float32 by default, lossless round trip)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.asarray(audio, dtype=np.float32).T, sample_rate, subtype=subtype)


def power(signal: np.ndarray) -> float:
    """Mean power of ``signal`` (all channels together)."""
    return float(np.mean(np.square(signal, dtype=np.float64)))


def snr_db(signal: np.ndarray, noise: np.ndarray) -> float:
    """Signal-to-noise ratio in dB of two arrays of the same shape."""
    return 10.0 * np.log10((power(signal) + EPSILON) / (power(noise) + EPSILON))


def scale_to_snr(signal: np.ndarray, noise: np.ndarray, target_snr_db: float) -> np.ndarray:
    """Return ``noise`` scaled so that ``snr_db(signal, scaled_noise) == target_snr_db``.

    Raises:
        AudioError: the noise is digitally silent (:data:`SILENT_POWER`), so no gain reaches the
            requested SNR.
    """
    noise_power = power(noise)
    if noise_power <= SILENT_POWER:
        raise AudioError("The noise segment is digitally silent, so no gain reaches the requested SNR.")
    wanted_noise_power = power(signal) / (10.0 ** (target_snr_db / 10.0))
    return (noise * np.sqrt(wanted_noise_power / noise_power)).astype(np.float32)


def rms_db(signal: np.ndarray) -> float:
    """Root-mean-square level of ``signal`` in dB full scale."""
    return 10.0 * np.log10(power(signal) + EPSILON)


def trim_silence(
    audio: np.ndarray,
    sample_rate: int,
    threshold_db: float = -40.0,
    margin_seconds: float = 0.05,
    frame_seconds: float = 0.01,
) -> np.ndarray:
    """Cut leading and trailing silence of ``audio[channels, samples]``, keeping a small margin.

    A frame counts as active when its RMS is within ``threshold_db`` of the loudest frame.
    Silent input is returned unchanged.
    """
    frame_length = max(1, int(round(frame_seconds * sample_rate)))
    frame_count = audio.shape[-1] // frame_length
    if frame_count == 0:
        return audio
    frames = audio[:, : frame_count * frame_length].reshape(
        audio.shape[0], frame_count, frame_length
    )  # [channels, samples] -> [channels, frames, frame_length]
    frame_power = np.mean(np.square(frames), axis=(0, 2))  # -> [frames]
    peak = float(frame_power.max())
    if peak <= EPSILON:
        return audio
    active = np.flatnonzero(frame_power >= peak * 10.0 ** (threshold_db / 10.0))
    margin = int(round(margin_seconds * sample_rate))
    begin = max(0, int(active[0]) * frame_length - margin)
    end = min(audio.shape[-1], (int(active[-1]) + 1) * frame_length + margin)
    return audio[:, begin:end]


def fit_length(audio: np.ndarray, length: int, offset: int = 0) -> np.ndarray:
    """Place ``audio[channels, samples]`` at ``offset`` in a zero signal of ``length`` samples.

    Parts falling outside ``[0, length)`` are cut; the rest is zero.
    """
    output = np.zeros((audio.shape[0], length), dtype=np.float32)
    begin = max(0, offset)
    end = min(length, offset + audio.shape[-1])
    if end > begin:
        output[:, begin:end] = audio[:, begin - offset : end - offset]
    return output


def convolve(audio: np.ndarray, impulse_response: np.ndarray) -> np.ndarray:
    """Convolve mono ``audio[1, T]`` with ``impulse_response[M, L]``; output ``[M, T]`` (truncated)."""
    from scipy.signal import fftconvolve  # scipy is a train-extra dependency

    length = audio.shape[-1]
    output = fftconvolve(audio, impulse_response, axes=-1)  # [1, T] * [M, L] -> [M, T + L - 1]
    return np.ascontiguousarray(output[:, :length], dtype=np.float32)  # -> [M, T]


def coloured_noise(rng: np.random.Generator, length: int, exponent: float) -> np.ndarray:
    """Gaussian noise ``[1, length]`` with power spectrum proportional to ``1 / f**exponent``.

    ``exponent`` 0 is white, 1 pink, 2 brown (red), -1 blue, -2 violet. Normalised to unit power.
    """
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequencies = np.arange(spectrum.shape[0], dtype=np.float64)
    frequencies[0] = 1.0
    spectrum = spectrum / frequencies ** (exponent / 2.0)
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n=length)
    noise = noise / (np.sqrt(np.mean(noise**2)) + EPSILON)
    return noise[None, :].astype(np.float32)  # -> [1, length]


def unit_power(noise: np.ndarray) -> np.ndarray:
    """``noise [1, T]`` scaled to unit mean power (float32)."""
    return (noise / (np.sqrt(np.mean(noise**2)) + EPSILON)).astype(np.float32)


def babble_noise(
    rng: np.random.Generator,
    length: int,
    words: list[np.ndarray],
    talkers: int,
    gap_range_seconds: tuple[float, float] = (0.0, 0.3),
    sample_rate: int = 16000,
) -> np.ndarray:
    """Babble ``[1, length]``: ``talkers`` streams of random ``words`` (each ``[1, n]``) summed, unit power.

    Each stream is words drawn from ``words`` with random gaps, started at a random offset and
    normalised before a random gain of -3..+3 dB, so no single talker dominates.
    """
    if not words:
        raise AudioError("babble noise needs at least one word recording")
    total = np.zeros((1, length), np.float64)
    for _talker in range(talkers):
        pieces, filled = [], 0
        while filled < length + sample_rate:
            word = words[int(rng.integers(0, len(words)))]
            gap = np.zeros((1, int(rng.uniform(*gap_range_seconds) * sample_rate)), np.float32)
            pieces += [word, gap]
            filled += word.shape[-1] + gap.shape[-1]
        stream = np.concatenate(pieces, axis=-1)  # [1, >= length + 1 s]
        start = int(rng.integers(0, stream.shape[-1] - length + 1))
        stream = stream[:, start : start + length]  # -> [1, length]
        total += unit_power(stream) * 10 ** (rng.uniform(-3.0, 3.0) / 20.0)
    return unit_power(total)


def impact_noise(rng: np.random.Generator, length: int, sample_rate: int = 16000) -> np.ndarray:
    """Clattering ``[1, length]`` (dishes, cutlery, keys, steps): damped resonances over a noise floor, unit power.

    Events arrive as a Poisson process (0.5..8 per second); each is a short noise burst exciting
    1..4 exponentially decaying modes (400..7000 Hz, 5..150 ms), with levels spread over 20 dB.
    The floor is coloured noise 10..30 dB below the events.
    """
    time = np.arange(length) / sample_rate
    events = np.zeros(length, np.float64)
    rate = rng.uniform(0.5, 8.0)
    count = max(1, int(rng.poisson(rate * length / sample_rate)))
    for onset in rng.integers(0, length, size=count):
        duration = min(length - int(onset), int(0.6 * sample_rate))
        local = time[:duration]
        event = np.zeros(duration)
        for _mode in range(int(rng.integers(1, 5))):
            frequency = np.exp(rng.uniform(np.log(400.0), np.log(7000.0)))
            decay = rng.uniform(0.005, 0.15)
            event += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * frequency * local + rng.uniform(0, 2 * np.pi)) * np.exp(-local / decay)
        burst = min(duration, int(rng.uniform(0.001, 0.005) * sample_rate))
        event[:burst] += rng.standard_normal(burst) * rng.uniform(0.2, 1.0)
        events[onset : onset + duration] += event * 10 ** (rng.uniform(-20.0, 0.0) / 20.0)
    events = unit_power(events[None, :])
    floor = coloured_noise(rng, length, rng.uniform(0.0, 2.0)) * 10 ** (-rng.uniform(10.0, 30.0) / 20.0)
    return unit_power(events + floor)


def traffic_noise(rng: np.random.Generator, length: int, sample_rate: int = 16000) -> np.ndarray:
    """Street-like rumble ``[1, length]``: low-coloured noise with pass-by swells and engine hum, unit power.

    Red/pink noise (spectral exponent 1..2.5) is shaped by a floor plus 0..3 Gaussian pass-by
    envelopes (0.3..2 s wide); a few harmonics of a 25..120 Hz engine tone are added 10..25 dB down.
    """
    time = np.arange(length) / sample_rate
    envelope = np.full(length, rng.uniform(0.2, 1.0))
    for _vehicle in range(int(rng.integers(0, 4))):
        centre, width = rng.uniform(0.0, time[-1] + 1e-3), rng.uniform(0.3, 2.0)
        envelope += rng.uniform(0.5, 3.0) * np.exp(-0.5 * ((time - centre) / width) ** 2)
    rumble = coloured_noise(rng, length, rng.uniform(1.0, 2.5))[0] * envelope
    fundamental = rng.uniform(25.0, 120.0)
    hum = sum(
        rng.uniform(0.2, 1.0) / harmonic * np.sin(2 * np.pi * fundamental * harmonic * time + rng.uniform(0, 2 * np.pi))
        for harmonic in range(1, 6)
    )
    hum = unit_power(np.asarray(hum)[None, :])[0] * envelope * 10 ** (-rng.uniform(10.0, 25.0) / 20.0)
    return unit_power((rumble + hum)[None, :])
