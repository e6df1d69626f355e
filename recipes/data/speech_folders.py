"""Speech and noise from LibriSpeech-, VCTK- or DNS-Challenge-style folders, as corpus-cache entries.

The adapters here produce the same :class:`~recipes.data.minicorpus.CorpusEntry` lists as
:func:`recipes.data.corpora.load_corpora` (one file per entry, ``group`` = ``<corpus>:<speaker>``
for speech and the file for noise), so :class:`recipes.data.realworld.RealWorldEnhancementDataset`
runs on a user's own copy of a standard corpus. Layouts (``root`` is the folder named first):

* LibriSpeech: ``<root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utterance>.flac``
  (``root`` holds ``train-clean-100``, ``dev-clean`` ...; the speaker is the first folder).
* VCTK 0.92: ``<root>/wav48_silence_trimmed/<p225>/<p225_001>_mic1.flac`` (one microphone);
  VCTK 0.80: ``<root>/wav48/<p225>/<p225_001>.wav``. Files are 48 kHz: :func:`load_speech`
  resamples from the file's own rate (``native_sample_rate`` records it).
* DNS Challenge: ``<root>/clean/**/*.wav`` speech and ``<root>/noise/**/*.wav`` noise. The
  speaker is the ``reader_<N>`` field of the file name when it has one (the read-speech set,
  ``book_..._reader_<N>_<k>.wav``); any other file is its own group, so for those the split is
  file-disjoint, not speaker-disjoint, and babble may reuse the target's talker.

Splits: speech by a hash of ``<corpus>:<speaker>`` (80 / 10 / 10 %, :func:`minicorpus.hash_split`),
noise by a hash of ``<corpus>:<relative path>``: deterministic, independent of directory order,
speaker-disjoint (file-disjoint for noise). LibriSpeech's own subsets are ignored (its speakers
are disjoint across subsets anyway). Every adapter fails with a one-line
:class:`~speechkit.errors.ConfigError` naming the folder or files it expected.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from speechkit.errors import ConfigError

from .audio import audio_info
from .corpora import RealCorpora, load_corpora
from .minicorpus import CorpusEntry, hash_split

if TYPE_CHECKING:  # torch is imported only when a dataset is built
    from .realworld import RealWorldConfig, RealWorldEnhancementDataset

#: folder layouts the adapters read (``cache`` is :func:`recipes.data.corpora.load_corpora`)
LAYOUTS = ("cache", "librispeech", "vctk", "dns")
AUDIO_SUFFIXES = (".wav", ".flac")
LIBRISPEECH_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)\.flac$")
DNS_READER = re.compile(r"reader_(\d+)")

LIBRISPEECH_LICENSE = "CC-BY-4.0"
LIBRISPEECH_SOURCE = "LibriSpeech ASR corpus (Panayotov et al. 2015), openslr.org/12"
VCTK_LICENSE = "CC-BY-4.0"
VCTK_SOURCE = "CSTR VCTK Corpus (Yamagishi, Veaux, MacDonald), datashare.ed.ac.uk"
DNS_LICENSE = "DNS Challenge data (per-source licences, see the challenge's LICENSE files)"
DNS_SOURCE = "Microsoft DNS Challenge, github.com/microsoft/DNS-Challenge"


def speaker_split(corpus: str, speaker: str) -> str:
    """The split (``train``/``validation``/``test``, 80/10/10 %) of one speaker, by a hash of its name."""
    return hash_split(f"{corpus}:{speaker}")


def _require_folder(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise ConfigError(f"{what}: expected folder {path} does not exist")
    return path


def _audio_files(folder: Path) -> list[Path]:
    """Audio files under ``folder`` (recursively), sorted, so entry order never depends on the file system."""
    return sorted(path for path in folder.rglob("*") if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file())


def speech_entry(
    root: Path,
    path: Path,
    corpus: str,
    speaker: str,
    license_name: str,
    source: str,
    language: str = "en",
) -> CorpusEntry:
    """One speech file as a corpus-cache entry (id: path relative to ``root``; split by speaker)."""
    frames, rate, _channels = audio_info(path)
    return CorpusEntry(
        id=path.relative_to(root).as_posix(), kind="speech", split=speaker_split(corpus, speaker),
        group=f"{corpus}:{speaker}", corpus=corpus, license=license_name, provenance=source,
        native_sample_rate=rate, sources=[str(path)], language=language, frames=frames,
    )


def _long_enough(entries: list[CorpusEntry], min_seconds: float) -> list[CorpusEntry]:
    return [entry for entry in entries if entry.frames >= min_seconds * entry.native_sample_rate]


def scan_librispeech(root: str | Path, min_seconds: float = 1.0) -> list[CorpusEntry]:
    """Speech entries of a LibriSpeech folder (all subsets under ``root``; see the module docstring).

    Raises:
        ConfigError: ``root`` is missing or holds no ``<subset>/<speaker>/<chapter>/*.flac`` files.
    """
    base = _require_folder(Path(root), "LibriSpeech")
    entries = []
    for path in sorted(base.glob("*/*/*/*.flac")):
        if LIBRISPEECH_NAME.match(path.name) is None:
            continue
        speaker = path.parent.parent.name
        entries.append(speech_entry(base, path, "librispeech", speaker, LIBRISPEECH_LICENSE, LIBRISPEECH_SOURCE))
    if not entries:
        raise ConfigError(
            f"LibriSpeech: no <subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utterance>.flac files under {base}"
        )
    return _long_enough(entries, min_seconds)


def scan_vctk(root: str | Path, microphone: str = "mic1", min_seconds: float = 1.0) -> list[CorpusEntry]:
    """Speech entries of a VCTK folder: ``wav48_silence_trimmed`` (0.92, one ``microphone``) or ``wav48`` (0.80).

    Raises:
        ConfigError: ``root`` is missing or has neither layout's files.
    """
    base = _require_folder(Path(root), "VCTK")
    trimmed, legacy = base / "wav48_silence_trimmed", base / "wav48"
    if trimmed.is_dir():
        files = sorted(trimmed.glob(f"*/*_{microphone}.flac"))
        expected = f"{trimmed}/<speaker>/<speaker>_<nnn>_{microphone}.flac"
    elif legacy.is_dir():
        files = sorted(legacy.glob("*/*.wav"))
        expected = f"{legacy}/<speaker>/<speaker>_<nnn>.wav"
    else:
        raise ConfigError(f"VCTK: neither {trimmed} (VCTK 0.92) nor {legacy} (VCTK 0.80) exists")
    if not files:
        raise ConfigError(f"VCTK: no {expected} files")
    entries = [speech_entry(base, path, "vctk", path.parent.name, VCTK_LICENSE, VCTK_SOURCE) for path in files]
    return _long_enough(entries, min_seconds)


def dns_speaker(path: Path) -> str:
    """The DNS speaker of a clean file: ``reader_<N>`` from its name, else the file name itself (its own group)."""
    match = DNS_READER.search(path.stem)
    return f"reader_{int(match.group(1))}" if match else path.stem


def scan_dns(root: str | Path, min_seconds: float = 1.0) -> list[CorpusEntry]:
    """Speech entries of a DNS-Challenge folder (``<root>/clean/**``; speakers by :func:`dns_speaker`).

    Raises:
        ConfigError: ``<root>/clean`` is missing or holds no audio files.
    """
    base = Path(root)
    clean = _require_folder(base / "clean", "DNS Challenge")
    files = _audio_files(clean)
    if not files:
        raise ConfigError(f"DNS Challenge: folder {clean} holds no .wav or .flac files")
    entries = [speech_entry(base, path, "dns", dns_speaker(path), DNS_LICENSE, DNS_SOURCE) for path in files]
    return _long_enough(entries, min_seconds)


def scan_noise_folder(
    root: str | Path, corpus: str = "noise", license_name: str = "", source: str = ""
) -> list[CorpusEntry]:
    """Every audio file under ``root`` (recursively) as a noise entry, split by a hash of its path.

    Raises:
        ConfigError: ``root`` is missing or holds no audio files.
    """
    base = _require_folder(Path(root), "noise")
    files = _audio_files(base)
    if not files:
        raise ConfigError(f"noise: folder {base} holds no .wav or .flac files")
    entries = []
    for path in files:
        relative = path.relative_to(base).as_posix()
        frames, rate, _channels = audio_info(path)
        entries.append(
            CorpusEntry(
                id=relative, kind="noise", split=hash_split(f"{corpus}:{relative}"), group=f"{corpus}:{relative}",
                corpus=corpus, license=license_name, provenance=source or str(base),
                native_sample_rate=rate, sources=[str(path)], frames=frames,
            )
        )
    return entries


def noise_entries(noise_root: str | Path) -> list[CorpusEntry]:
    """Noise (and RIR) entries of ``noise_root``: a corpus cache (``manifest.jsonl``) or a folder of noise files.

    From a corpus cache, its noise and RIR entries with their splits (unusual noise left out, as
    :func:`~recipes.data.corpora.load_corpora` does); from a plain folder, every audio file in it.
    """
    base = Path(noise_root)
    if (base / "manifest.jsonl").is_file():
        cache = load_corpora(base, speech_corpora=None)
        return [entry for entry in cache.entries if entry.kind in ("noise", "rir")]
    return scan_noise_folder(base)


SPEECH_SCANNERS: dict[str, Callable[..., list[CorpusEntry]]] = {
    "librispeech": scan_librispeech,
    "vctk": scan_vctk,
    "dns": scan_dns,
}


def folder_corpora(
    layout: str, root: str | Path, noise_root: str | Path | None = None, min_speech_seconds: float = 1.0
) -> RealCorpora:
    """A :class:`~recipes.data.corpora.RealCorpora` from a speech folder of ``layout`` plus noise.

    Noise comes from ``noise_root`` (:func:`noise_entries`: a folder of noise files or a corpus
    cache, whose RIRs come along); for ``dns`` it defaults to ``<root>/noise``.

    Raises:
        ConfigError: unknown layout, missing folders or files, or no noise for a speech-only layout.
    """
    if layout not in SPEECH_SCANNERS:
        raise ConfigError(f"layout must be one of {', '.join(SPEECH_SCANNERS)} here, not {layout!r}")
    speech = SPEECH_SCANNERS[layout](root, min_seconds=min_speech_seconds)
    if not speech:
        raise ConfigError(f"{layout}: no speech file under {root} is at least {min_speech_seconds} s long")
    if noise_root is not None:
        noise = noise_entries(noise_root)
    elif layout == "dns":
        noise = scan_noise_folder(Path(root) / "noise", "dns_noise", DNS_LICENSE, DNS_SOURCE)
    else:
        raise ConfigError(f"layout {layout} has no noise recordings: pass noise_root (a folder of noise files)")
    return RealCorpora(Path(root), speech + noise)


def corpora_dataset(
    corpora: RealCorpora,
    split: str,
    config: "RealWorldConfig",
    length: int = 10000,
    seed: int = 0,
    max_floor_db: float | None = None,
    floor_cache: str | Path | None = None,
    extra_noise: list[CorpusEntry] | None = None,
) -> "RealWorldEnhancementDataset":
    """:class:`~recipes.data.realworld.RealWorldEnhancementDataset` over one split of any ``corpora``.

    Built as :func:`recipes.data.realworld.realworld_dataset` builds it from a corpus cache
    (``config`` is a :class:`~recipes.data.realworld.RealWorldConfig`); an empty split is a
    one-line :class:`~speechkit.errors.ConfigError` naming it.
    """
    from .realworld import RealWorldEnhancementDataset

    speech = corpora.speech(split, max_floor_db, floor_cache)
    noise = corpora.select("noise", split) + list(extra_noise or [])
    if not noise:
        raise ConfigError(f"{corpora.root}: no noise file falls in split {split!r} (too few noise files?)")
    return RealWorldEnhancementDataset(speech, noise, config, length, seed, corpora.select("rir", split))
