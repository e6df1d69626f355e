"""Audio file I/O: validated block reading, streaming resampling and atomic writing.

Policies (shared by the Python API and the CLI):

* **Reading**: anything libsndfile opens (wav, flac, ogg, aiff, mp3, ...). Corrupt, empty (0 bytes),
  zero-length and unsupported files raise :class:`~speechkit.errors.AudioError` with the reason.
  Files are opened read-only and never modified.
* **Non-finite samples** (NaN/Inf, possible in float wav files) are refused by default; with
  ``repair_nonfinite=True`` they are replaced by 0 and a warning says how many were replaced.
* **Clipped input** (samples at full scale) is processed, with a warning.
* **Writing**: the format follows the output extension: ``.wav`` is written as 32-bit float,
  ``.flac`` as 24-bit PCM and ``.ogg`` as Vorbis. Outputs go to a temporary file next to the
  destination and are moved into place with :func:`os.replace` only when complete, so a failure
  never leaves a partial or damaged file.
* **Full scale**: every written sample passes through :func:`soft_limit` (whatever the format, so a
  float ``.wav`` converted to 16-bit PCM later is never clipped either): samples up to
  :data:`LIMITER_KNEE_DBFS` (-1 dBFS) are untouched, louder ones are compressed by a tanh knee
  that stays below full scale (a sample at exactly full scale loses 0.23 dB). When any sample
  would have exceeded full scale, one warning says how many were limited and the peak. Arrays
  returned by the Python API are float and left as the model made them (``soft_limit`` is public).
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType, TracebackType

import numpy as np

from ._files import publish, temporary_sibling
from .errors import AudioError, ConfigError, OutputExistsError

#: extensions searched for when a folder is given as input
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".au", ".mp3", ".w64", ".rf64", ".caf")
#: output extension -> (libsndfile format, subtype)
WRITE_FORMATS = MappingProxyType({
    ".wav": ("WAV", "FLOAT"),
    ".flac": ("FLAC", "PCM_24"),
    ".ogg": ("OGG", "VORBIS"),
})
#: absolute sample value at or above which a sample counts as clipped (full scale of 16-bit PCM)
CLIP_LEVEL = 32767.0 / 32768.0
#: fewer full-scale samples than this in a file do not trigger the clipping warning
CLIP_WARN_MIN_SAMPLES = 3
#: libsndfile cannot write more channels than this to FLAC
MAX_FLAC_CHANNELS = 8
#: level (dBFS) above which :func:`soft_limit` compresses samples; below it they pass untouched
LIMITER_KNEE_DBFS = -1.0
#: what :func:`soft_limit` approaches for ever louder samples: below the 16-bit full scale and below
#: :data:`CLIP_LEVEL`, so a limited output read back does not look clipped
LIMITER_CEILING = 0.999


@dataclasses.dataclass(frozen=True)
class LimiterReport:
    """What :func:`soft_limit` did to one block."""

    limited: int  # samples above the knee (changed)
    over_full_scale: int  # of those, samples beyond full scale (a PCM conversion would have clipped them)
    peak: float  # largest absolute input sample


def soft_limit(audio: np.ndarray, knee_dbfs: float = LIMITER_KNEE_DBFS) -> tuple[np.ndarray, LimiterReport]:
    """Keep ``audio`` (any shape, float) below full scale with a static tanh knee; returns it and a report.

    With ``k = 10 ** (knee_dbfs / 20)`` and ``c =`` :data:`LIMITER_CEILING`: ``|x| <= k`` passes
    unchanged, louder samples become ``sign(x) * (k + (c - k) * tanh((|x| - k) / (c - k)))``,
    continuous with slope 1 at the knee and never beyond ``c`` (at -1 dBFS: 0.95 -> 0.944,
    1.0 -> 0.974, 1.25 -> 0.998). Memoryless, so blocks may be limited one by one with the same
    result as the whole signal.
    """
    if not knee_dbfs < 0.0:
        raise ConfigError(f"the limiter knee must be below 0 dBFS, got {knee_dbfs}")
    knee = float(10.0 ** (knee_dbfs / 20.0))
    magnitude = np.abs(audio)
    above = magnitude > knee
    peak = float(magnitude.max()) if magnitude.size else 0.0
    report = LimiterReport(int(above.sum()), int((magnitude > 1.0).sum()), peak)
    if not report.limited:
        return audio, report
    headroom = LIMITER_CEILING - knee
    compressed = knee + headroom * np.tanh((magnitude[above].astype(np.float64) - knee) / headroom)
    limited = np.array(audio, copy=True)
    limited[above] = (np.sign(audio[above]) * compressed).astype(limited.dtype)
    return limited, report


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """What :func:`audio_info` reports about an audio file."""

    path: Path
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def _open_error(path: Path, error: Exception) -> AudioError:
    """The AudioError explaining why ``path`` could not be opened as audio."""
    suffix = path.suffix.lower()
    if suffix and suffix not in AUDIO_EXTENSIONS:
        return AudioError(
            f"{path}: unsupported or unreadable format {suffix!r} (supported: wav, flac, ogg, aiff, mp3 and "
            "other libsndfile formats)"
        )
    return AudioError(f"{path} is not a readable audio file (corrupt or unsupported: {error})")


def open_audio(path: str | os.PathLike) -> "soundfile.SoundFile":  # noqa: F821
    """Open ``path`` for block reading, with a clear :class:`AudioError` for every bad-file case.

    The caller closes the returned :class:`soundfile.SoundFile` (use it as a context manager).
    """
    import soundfile

    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path} does not exist")
    if path.is_dir():
        raise AudioError(f"{path} is a directory, not an audio file")
    try:
        size = path.stat().st_size
    except OSError as error:
        raise AudioError(f"cannot read {path}: {error.strerror}") from error
    if size == 0:
        raise AudioError(f"{path} is empty (0 bytes)")
    try:
        handle = soundfile.SoundFile(str(path), mode="r")
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise _open_error(path, error) from error
    except OSError as error:
        raise AudioError(f"cannot read {path}: {error.strerror or error}") from error
    if handle.frames <= 0:
        handle.close()
        raise AudioError(f"{path} contains no audio samples (zero length)")
    if handle.samplerate <= 0 or handle.channels <= 0:
        handle.close()
        raise AudioError(f"{path} has an invalid header (rate {handle.samplerate}, {handle.channels} channels)")
    return handle


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Header facts of an audio file (rate, channels, frames, format); raises :class:`AudioError`."""
    with open_audio(path) as handle:
        return AudioInfo(
            path=Path(path),
            sample_rate=int(handle.samplerate),
            channels=int(handle.channels),
            frames=int(handle.frames),
            format=str(handle.format),
            subtype=str(handle.subtype),
        )


def iter_blocks(handle: "soundfile.SoundFile", block_frames: int) -> Iterator[np.ndarray]:  # noqa: F821
    """Yield float32 blocks ``[C, n]`` of at most ``block_frames`` frames from an open file."""
    import soundfile

    while True:
        try:
            block = handle.read(block_frames, dtype="float32", always_2d=True)  # [n, C]
        except (soundfile.LibsndfileError, RuntimeError) as error:
            raise AudioError(f"{handle.name}: read failed at frame {handle.tell()} ({error})") from error
        if block.shape[0] == 0:
            return
        yield np.ascontiguousarray(block.T)  # [n, C] -> [C, n]


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a whole (short) file as float32 ``[C, T]`` and its sample rate."""
    with open_audio(path) as handle:
        blocks = list(iter_blocks(handle, max(int(handle.frames), 1)))
        rate = int(handle.samplerate)
    return np.concatenate(blocks, axis=-1), rate  # [C, T]


@dataclasses.dataclass
class SampleChecker:
    """Checks blocks for non-finite and clipped samples as they stream by.

    Args:
        sample_rate: rate of the blocks, for positions in messages.
        source: file name or description, for messages.
        repair_nonfinite: replace NaN/Inf by 0 (and count them) instead of refusing.
    """

    sample_rate: int
    source: str
    repair_nonfinite: bool = False
    frames_seen: int = 0
    nonfinite_repaired: int = 0
    clipped_samples: int = 0

    def check(self, block: np.ndarray) -> np.ndarray:
        """Validate one ``[C, n]`` block; returns it (repaired if allowed)."""
        finite = np.isfinite(block)
        if not finite.all():
            if not self.repair_nonfinite:
                first = int(np.argwhere(~finite)[0][-1]) + self.frames_seen
                raise AudioError(
                    f"{self.source} contains NaN or infinite samples (first at {first / self.sample_rate:.3f} s); "
                    "refusing to process it (use repair_nonfinite=True / --repair-nonfinite to replace them with 0)"
                )
            self.nonfinite_repaired += int((~finite).sum())
            block = np.where(finite, block, np.float32(0.0))
        self.clipped_samples += int((np.abs(block) >= CLIP_LEVEL).sum())
        self.frames_seen += block.shape[-1]
        return block

    def warnings(self) -> list[str]:
        """Human-readable warnings collected so far."""
        messages = []
        if self.nonfinite_repaired:
            messages.append(f"{self.source}: replaced {self.nonfinite_repaired} NaN/infinite sample(s) with 0")
        if self.clipped_samples >= CLIP_WARN_MIN_SAMPLES:
            messages.append(
                f"{self.source}: input looks clipped ({self.clipped_samples} sample(s) at full scale); "
                "processed anyway, quality may suffer"
            )
        return messages


class StreamResampler:
    """Streaming resampler for ``[C, n]`` float32 blocks (soxr), identity when the rates match.

    Feed blocks with :meth:`process`, then call :meth:`flush` once to get the tail.
    """

    def __init__(self, input_rate: int, output_rate: int, channels: int) -> None:
        self.input_rate = int(input_rate)
        self.output_rate = int(output_rate)
        self.channels = int(channels)
        self._stream = None
        if self.input_rate != self.output_rate:
            import soxr

            self._stream = soxr.ResampleStream(
                self.input_rate, self.output_rate, self.channels, dtype="float32", quality="HQ"
            )

    def process(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """Resample the next block ``[C, n]`` -> ``[C, m]``."""
        if self._stream is None:
            return block
        frames = np.ascontiguousarray(block.T, dtype=np.float32)  # [C, n] -> [n, C]
        out = self._stream.resample_chunk(frames, last=last)  # [n, C] -> [m, C]
        return np.ascontiguousarray(out.reshape(-1, self.channels).T)  # [m, C] -> [C, m]

    def flush(self) -> np.ndarray:
        """The remaining output ``[C, m]`` once the input has ended."""
        return self.process(np.zeros((self.channels, 0), dtype=np.float32), last=True)


def audio_files_under(folder: Path) -> list[Path]:
    """The files below ``folder`` (recursively) with an :data:`AUDIO_EXTENSIONS` extension, sorted."""
    return sorted(
        path for path in folder.rglob("*") if path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS
    )


def names_an_audio_file(output: Path) -> bool:
    """Whether a command-line output names one audio file (an audio extension, not an existing folder)."""
    return output.suffix.lower() in (*WRITE_FORMATS, *AUDIO_EXTENSIONS) and not output.is_dir()


def default_output_name(input: Path, suffix: str = "") -> str:
    """``input``'s file name with a writable extension (its own if wav/flac/ogg, else ``.wav``)."""
    extension = input.suffix.lower() if input.suffix.lower() in WRITE_FORMATS else ".wav"
    return f"{input.stem}{suffix}{extension}"


def output_format(path: str | os.PathLike, channels: int = 1) -> tuple[str, str]:
    """The (format, subtype) used for ``path``'s extension; raises :class:`AudioError` if unsupported."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_FORMATS:
        raise AudioError(
            f"cannot write {path}: output extension {suffix or '(none)'!r} is not supported (use .wav, .flac or .ogg)"
        )
    if suffix == ".flac" and channels > MAX_FLAC_CHANNELS:
        raise AudioError(f"cannot write {path}: FLAC holds at most {MAX_FLAC_CHANNELS} channels (use .wav)")
    return WRITE_FORMATS[suffix]


def check_output_path(
    output: str | os.PathLike, inputs: tuple[str | os.PathLike, ...] = (), force: bool = False
) -> Path:
    """Validate a destination before any work is done.

    Refuses an output that is one of the ``inputs`` (the input would be destroyed), an existing
    output without ``force``, an unsupported extension, and a directory that cannot be written.
    """
    output = Path(output)
    output_format(output)
    for source in inputs:
        source = Path(source)
        if output.resolve() == source.resolve() or (
            output.exists() and source.exists() and os.path.samefile(output, source)
        ):
            raise AudioError(f"refusing to write {output}: it is the input file (choose another output)")
    if output.is_dir():
        raise AudioError(f"cannot write {output}: it is a directory")
    if output.exists() and not force:
        raise OutputExistsError(f"{output} exists; pass force=True / --force to overwrite it")
    return output


class AtomicAudioWriter:
    """Write an audio file incrementally to a temporary file, then move it into place.

    Usage::

        with AtomicAudioWriter(path, rate, channels, force=False) as writer:
            writer.write(block)   # [C, n]
        # on success the file appears at `path`; on error the temporary file is removed

    Args:
        path: destination (its extension picks the format, see :data:`WRITE_FORMATS`).
        sample_rate: output rate in Hz.
        channels: number of channels of every block.
        force: replace an existing file.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int, channels: int, force: bool = False) -> None:
        self.path = Path(path)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.force = force
        self.format, self.subtype = output_format(self.path, self.channels)
        self.frames_written = 0
        self.limited_samples = 0  # above the limiter's knee
        self.over_full_scale = 0  # beyond full scale before limiting
        self.peak = 0.0  # largest absolute sample before limiting
        self._handle = None
        self._tmp_name: str | None = None

    def open(self) -> "AtomicAudioWriter":
        """Create the temporary file (and missing parent directories)."""
        import soundfile

        if self.path.exists() and not self.force:
            raise OutputExistsError(f"{self.path} exists; pass force=True / --force to overwrite it")
        directory = self.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._tmp_name = temporary_sibling(self.path, suffix=f".partial{self.path.suffix}")
            self._handle = soundfile.SoundFile(
                self._tmp_name, mode="w", samplerate=self.sample_rate, channels=self.channels,
                format=self.format, subtype=self.subtype,
            )
            _without_peak_chunk(self._handle)
        except OSError as error:
            self._discard()
            raise AudioError(f"cannot write to {directory}: {error.strerror or error}") from error
        except (soundfile.LibsndfileError, RuntimeError, ValueError) as error:
            self._discard()
            raise AudioError(f"cannot write {self.path}: {error}") from error
        return self

    def write(self, block: np.ndarray) -> None:
        """Append a ``[C, n]`` block."""
        if self._handle is None:
            raise AudioError(f"{self.path}: writer is not open")
        if block.shape[0] != self.channels:
            raise AudioError(f"{self.path}: expected {self.channels} channels, got {block.shape[0]}")
        if block.shape[-1] == 0:
            return
        block = np.nan_to_num(block.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=-1.0)
        block, report = soft_limit(block)
        self.limited_samples += report.limited
        self.over_full_scale += report.over_full_scale
        self.peak = max(self.peak, report.peak)
        try:
            self._handle.write(np.ascontiguousarray(block.T))  # [C, n] -> [n, C]
        except (OSError, RuntimeError) as error:
            raise AudioError(f"writing {self.path} failed: {error}") from error
        self.frames_written += block.shape[-1]

    def commit(self) -> Path:
        """Close the temporary file and move it to the destination."""
        if self._handle is None or self._tmp_name is None:
            raise AudioError(f"{self.path}: writer is not open")
        try:
            self._handle.close()
            self._handle = None
            if self.path.exists() and not self.force:  # appeared while we were working
                raise OutputExistsError(f"{self.path} exists; pass force=True / --force to overwrite it")
            publish(self._tmp_name, self.path)
            self._tmp_name = None
        except OSError as error:
            raise AudioError(f"cannot move the result to {self.path}: {error.strerror or error}") from error
        finally:
            self._discard()
        return self.path

    def warnings(self) -> list[str]:
        """One line when the output would have exceeded full scale (it was soft-limited, see :func:`soft_limit`)."""
        if not self.over_full_scale:
            return []
        return [
            f"{self.path}: the output exceeded full scale (peak {self.peak:.3f}, {20 * np.log10(self.peak):+.1f} dBFS, "
            f"{self.over_full_scale} sample(s)); {self.limited_samples} sample(s) above {LIMITER_KNEE_DBFS:g} dBFS "
            "were soft-limited, none clipped"
        ]

    def _discard(self) -> None:
        if self._handle is not None:
            try:
                self._handle.close()
            except (OSError, RuntimeError):
                pass
            self._handle = None
        if self._tmp_name is not None and os.path.exists(self._tmp_name):
            os.unlink(self._tmp_name)
        self._tmp_name = None

    def __enter__(self) -> "AtomicAudioWriter":
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self._discard()


#: libsndfile's SFC_SET_ADD_PEAK_CHUNK command (sndfile.h; not exported by the soundfile package)
SFC_SET_ADD_PEAK_CHUNK = 0x1050


def _without_peak_chunk(handle: "soundfile.SoundFile") -> None:  # noqa: F821
    """Stop libsndfile writing a PEAK chunk into a new float WAV file (call before any sample is written).

    The PEAK chunk holds a timestamp, so two runs on the same input would not give identical bytes.
    Uses soundfile's libsndfile handle; formats without the chunk ignore the command.
    """
    import soundfile

    try:
        soundfile._snd.sf_command(handle._file, SFC_SET_ADD_PEAK_CHUNK, soundfile._ffi.NULL, 0)  # 0: SF_FALSE
    except AttributeError:  # another soundfile layout: keep the chunk (only determinism is lost)
        pass


def write_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, force: bool = False) -> list[str]:
    """Write ``audio`` (``[C, T]`` or ``[T]``) atomically, soft-limited; returns warnings (samples limited)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]  # [T] -> [1, T]
    if audio.ndim != 2:
        raise AudioError(f"cannot write audio of shape {tuple(audio.shape)}: expected [C, T] or [T]")
    with AtomicAudioWriter(path, sample_rate, audio.shape[0], force=force) as writer:
        writer.write(audio)
    return writer.warnings()


def attenuation_limit_gain(attenuation_limit_db: float | None) -> float:
    """The gain at which the input is added back to an enhanced output for an attenuation limit.

    ``output + 10 ** (-L / 20) * input`` leaves at least the input's noise ``L`` dB down in the
    output (the same idea as DeepFilterNet's ``--atten-lim``): residual noise is never removed
    entirely, which masks processing artefacts. None or infinity gives 0 (no limit).

    Raises:
        ConfigError: ``L`` is not a positive number.
    """
    if attenuation_limit_db is None or attenuation_limit_db == float("inf"):
        return 0.0
    if not np.isfinite(attenuation_limit_db) or attenuation_limit_db <= 0:
        raise ConfigError(f"the attenuation limit must be a positive number of dB, got {attenuation_limit_db}")
    return float(10.0 ** (-float(attenuation_limit_db) / 20.0))
