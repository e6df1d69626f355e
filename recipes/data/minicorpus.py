"""Offline mini corpus: speech, noise and RIR pools with held-out splits and a manifest.

Sources (see ``../shared/data/README.md``; nothing is downloaded at run time):

* ``speech_commands/<word>/<speaker>_nohash_<n>.flac`` (16 kHz, CC-BY-4.0): the one-second words of
  one speaker are trimmed (a little leading/trailing silence is kept) and concatenated with short
  gaps into multi-second utterances (``words_per_utterance`` words each).
* ``fsdd/<digit>_<speaker>_<n>.flac`` (8 kHz, CC-BY-SA-4.0): digits of one speaker concatenated.
* Debian's asterisk voice packages (8 kHz, CC-BY-SA-3.0), optional: extracted with
  ``dpkg-deb -x`` under ``<cache>/asterisk/<package>/`` (``recipes/prepare_data.py asterisk`` does it).
  Each prompt is one utterance. The builder works without them and reports them as missing.
* Noise: ``noise/speech_commands_background/*.flac`` and ``noise/cafe_street_train/<kind>/*.flac``
  (16 kHz). The training pool additionally holds synthetic coloured noise (white, pink, brown,
  blue, violet: power spectrum ``1/f**exponent``), generated on the fly from the item's RNG;
  synthetic noise is never in validation or test. On request (``procedural_noise``) the training
  pool also holds generated babble (3..8 training speakers), clattering impacts and traffic rumble.
* RIRs: ``rirs/office_32ch_linear/rir_source_<k>.wav`` (48 kHz, 32 channels), see ``rooms.py``.

Splits are held out by speaker and by noise file: no speaker and no noise file is in two splits.
Speaker ``c22d3f18`` and ``doing_the_dishes.flac`` are forced into ``test`` (the package's bundled
example uses them). Other Speech Commands speakers and cafe/street/train noise files are assigned by
a hash of their name (80 / 10 / 10 %), so the split never depends on the order of a directory listing.
FSDD and asterisk voices are few, so they are assigned by name (the asterisk voice Allison speaks
both English and Spanish and is one speaker).

Every entry carries provenance and license. ``band_limited`` is true when an entry's native rate
is below the variant's rate (8 kHz material upsampled to 16 kHz carries nothing above 4 kHz).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from speechkit.errors import AudioError, ConfigError

from .audio import SILENT_POWER, audio_info, power, read_audio, trim_silence
from .manifest import (  # noqa: F401 (re-exported: the entry record, manifests and hash splits)
    CorpusEntry,
    hash_fraction,
    hash_split,
    read_manifest,
    split_summary,
    write_manifest,
)

SPLITS = ("train", "validation", "test")
FORCED_TEST_SPEAKERS = frozenset({"c22d3f18"})
FORCED_TEST_NOISES = frozenset({"doing_the_dishes"})
FORCED_VALIDATION_NOISES = frozenset({"running_tap"})
FSDD_SPLITS = {"theo": "validation", "yweweler": "test"}  # others: train
ASTERISK_SPLITS = {"Carlo": "validation", "Menardi": "test"}  # others: train
SYNTHETIC_NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0, "blue": -1.0, "violet": -2.0}

SPEECH_COMMANDS_PROVENANCE = (
    "Speech Commands v0.02 test split (Warden 2018) via thegtagamer/PICO-tinyML-benchmark"
)
FSDD_PROVENANCE = "Free Spoken Digit Dataset via Jakobovski/free-spoken-digit-dataset"
ASTERISK_PROVENANCE = "Debian package {package}"
BACKGROUND_PROVENANCE = "Speech Commands background noise via chaeyoung-lee/wids_tutorial"
CAFE_PROVENANCE = "a-n-rose/Python-Sound-Tool (commit f7a65f1a) audiodata/minidatasets/background_noise"
RIR_PROVENANCE = "polimi-ispl/rs-mnmf data/sources (Pezzoli et al., IEEE SPL 2021)"


def default_data_root() -> Path | None:
    """``$SPEECHKIT_SHARED_DATA`` or ``<project>/../shared/data`` if it exists, else None."""
    configured = os.environ.get("SPEECHKIT_SHARED_DATA")
    candidate = Path(configured) if configured else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


def default_cache_root() -> Path:
    """``$SPEECHKIT_DATA_CACHE`` or ``<project>/data_cache`` (gitignored)."""
    configured = os.environ.get("SPEECHKIT_DATA_CACHE")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "data_cache"


def _chunk_utterances(
    corpus: str,
    speaker: str,
    files: list[Path],
    words_per_utterance: int,
    gap_range: tuple[float, float],
    split: str,
    license_name: str,
    provenance: str,
    native_rate: int,
    language: str,
) -> list[CorpusEntry]:
    """Group one speaker's word files into utterances with deterministic order and gaps."""
    rng = np.random.default_rng(int(hash_fraction(f"{corpus}:{speaker}") * 2**32))
    order = rng.permutation(len(files))
    shuffled = [files[index] for index in order]
    entries = []
    for start in range(0, len(shuffled), words_per_utterance):
        chunk = shuffled[start : start + words_per_utterance]
        gaps = [float(round(gap, 4)) for gap in rng.uniform(*gap_range, size=len(chunk) - 1)]
        entries.append(
            CorpusEntry(
                id=f"{corpus}/{speaker}/{start // words_per_utterance:03d}",
                kind="speech",
                split=split,
                group=f"{corpus}:{speaker}",
                corpus=corpus,
                license=license_name,
                provenance=provenance,
                native_sample_rate=native_rate,
                sources=[str(path) for path in chunk],
                language=language,
                gaps_seconds=gaps,
            )
        )
    return entries


def scan_speech_commands(
    data_root: Path, words_per_utterance: int = 4, gap_range: tuple[float, float] = (0.05, 0.2)
) -> list[CorpusEntry]:
    """Speech Commands speakers, each split by hash (``c22d3f18`` forced to test)."""
    folder = data_root / "speech_commands"
    by_speaker: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*/*_nohash_*.flac")):
        by_speaker.setdefault(path.name.split("_nohash_")[0], []).append(path)
    entries = []
    for speaker, files in sorted(by_speaker.items()):
        split = "test" if speaker in FORCED_TEST_SPEAKERS else hash_split(f"speech_commands:{speaker}")
        entries += _chunk_utterances(
            "speech_commands", speaker, files, words_per_utterance, gap_range, split,
            "CC-BY-4.0", SPEECH_COMMANDS_PROVENANCE, 16000, "en",
        )
    return entries


def scan_fsdd(
    data_root: Path, digits_per_utterance: int = 6, gap_range: tuple[float, float] = (0.05, 0.2)
) -> list[CorpusEntry]:
    """Free Spoken Digit Dataset speakers (8 kHz), split by name (see ``FSDD_SPLITS``)."""
    by_speaker: dict[str, list[Path]] = {}
    for path in sorted((data_root / "fsdd").glob("*_*_*.flac")):
        by_speaker.setdefault(path.stem.split("_")[1], []).append(path)
    entries = []
    for speaker, files in sorted(by_speaker.items()):
        entries += _chunk_utterances(
            "fsdd", speaker, files, digits_per_utterance, gap_range,
            FSDD_SPLITS.get(speaker, "train"), "CC-BY-SA-4.0", FSDD_PROVENANCE, 8000, "en",
        )
    return entries


def asterisk_root(cache_root: Path | None = None) -> Path:
    """Folder where the asterisk voice packages are extracted (one sub-folder per package)."""
    return (cache_root or default_cache_root()) / "asterisk"


def scan_asterisk(root: Path, min_seconds: float = 0.8) -> list[CorpusEntry]:
    """Asterisk prompts under ``root/<package>/usr/share/asterisk/sounds/<lang>_<REGION>_<sex>_<Voice>/``.

    Prompts shorter than ``min_seconds`` (single digits, letters) are skipped. Returns [] if absent.
    """
    entries = []
    for package_folder in sorted(root.glob("*")):
        for voice_folder in sorted(package_folder.glob("usr/share/asterisk/sounds/*_*_*_*")):
            language, _region, _sex, voice = voice_folder.name.split("_", 3)
            split = ASTERISK_SPLITS.get(voice, "train")
            for path in sorted(voice_folder.rglob("*.wav")):
                frames, rate, _channels = audio_info(path)
                if frames < min_seconds * rate:
                    continue
                relative = path.relative_to(voice_folder).with_suffix("")
                entries.append(
                    CorpusEntry(
                        id=f"asterisk/{voice_folder.name}/{relative.as_posix()}",
                        kind="speech",
                        split=split,
                        group=f"asterisk:{voice}",
                        corpus="asterisk",
                        license="CC-BY-SA-3.0",
                        provenance=ASTERISK_PROVENANCE.format(package=package_folder.name),
                        native_sample_rate=rate,
                        sources=[str(path)],
                        language=language,
                        frames=frames,
                    )
                )
    return entries


def scan_noise(data_root: Path, synthetic_per_colour: int = 4) -> list[CorpusEntry]:
    """Real noise files split by file, plus synthetic coloured noise entries for training."""
    entries = []
    for path in sorted((data_root / "noise" / "speech_commands_background").glob("*.flac")):
        name = path.stem
        if name in FORCED_TEST_NOISES:
            split = "test"
        elif name in FORCED_VALIDATION_NOISES:
            split = "validation"
        else:
            split = "train"
        frames, rate, _channels = audio_info(path)
        entries.append(
            CorpusEntry(
                id=f"noise/background/{name}", kind="noise", split=split, group=path.name,
                corpus="speech_commands_background", license="CC-BY-4.0",
                provenance=BACKGROUND_PROVENANCE, native_sample_rate=rate,
                sources=[str(path)], frames=frames,
            )
        )
    for path in sorted((data_root / "noise" / "cafe_street_train").glob("*/*.flac")):
        category = path.parent.name
        frames, rate, _channels = audio_info(path)
        entries.append(
            CorpusEntry(
                id=f"noise/{category}/{path.stem}", kind="noise",
                split=hash_split(f"noise:{category}/{path.name}"), group=f"{category}/{path.name}",
                corpus="cafe_street_train", license="AGPL-3.0 (as data)",
                provenance=CAFE_PROVENANCE, native_sample_rate=rate,
                sources=[str(path)], frames=frames,
            )
        )
    for colour, exponent in SYNTHETIC_NOISE_COLOURS.items():
        for copy in range(synthetic_per_colour):
            entries.append(
                CorpusEntry(
                    id=f"noise/synthetic/{colour}/{copy}", kind="noise", split="train",
                    group=f"synthetic:{colour}:{copy}", corpus="synthetic",
                    license="generated (no restriction)",
                    provenance="speechkit recipes/data/audio.py coloured_noise",
                    native_sample_rate=0, synthetic={"exponent": exponent},
                )
            )
    return entries


def scan_rirs(data_root: Path) -> list[CorpusEntry]:
    """Measured 32-channel RIR files (one WAV per source position), split by source position."""
    entries = []
    for path in sorted((data_root / "rirs" / "office_32ch_linear").glob("rir_source_*.wav")):
        frames, rate, _channels = audio_info(path)
        entries.append(
            CorpusEntry(
                id=f"rir/office_32ch_linear/{path.stem}", kind="rir", split="all", group=path.name,
                corpus="office_32ch_linear", license="GPL-3.0 (as data)", provenance=RIR_PROVENANCE,
                native_sample_rate=rate, sources=[str(path)], frames=frames,
            )
        )
    return entries


@dataclass
class MiniCorpus:
    """All entries of the mini corpus plus what was missing while scanning."""

    entries: list[CorpusEntry]
    missing: list[str]

    @classmethod
    def scan(
        cls,
        data_root: Path | str | None = None,
        cache_root: Path | str | None = None,
        include_asterisk: bool = True,
        words_per_utterance: int = 4,
        procedural_noise: bool = False,
    ) -> "MiniCorpus":
        """Index ``data_root`` (default: ``../shared/data``) and the extracted asterisk voices.

        With ``procedural_noise``, the training noise pool also holds synthetic babble (from
        training speakers), impact and traffic noise (:func:`procedural_noise_entries`).

        Raises:
            ConfigError: ``data_root`` is not given and ``../shared/data`` does not exist.
        """
        root = Path(data_root) if data_root is not None else default_data_root()
        if root is None or not root.is_dir():
            raise ConfigError(
                f"The mini corpus needs the shared data folder (speech_commands/, noise/, rirs/, fsdd/) "
                f"but {root or '../shared/data'} does not exist; pass data_root or set SPEECHKIT_SHARED_DATA."
            )
        missing = [
            f"{root / name} (expected folder)"
            for name in ("speech_commands", "noise", "rirs/office_32ch_linear", "fsdd")
            if not (root / name).is_dir()
        ]
        entries = scan_speech_commands(root, words_per_utterance) + scan_fsdd(root)
        if include_asterisk:
            voices = asterisk_root(Path(cache_root) if cache_root else None)
            asterisk_entries = scan_asterisk(voices) if voices.is_dir() else []
            if not asterisk_entries:
                missing.append(
                    f"{voices} (asterisk voices not extracted: run `python -m recipes.prepare_data asterisk`)"
                )
            entries += asterisk_entries
        entries += scan_noise(root) + scan_rirs(root)
        if procedural_noise:
            entries += procedural_noise_entries(entries)
        return cls(entries=entries, missing=missing)

    @classmethod
    def from_manifest(cls, path: Path | str) -> "MiniCorpus":
        """A corpus from a manifest written by :func:`write_manifest` (e.g. a materialised variant)."""
        return cls(entries=read_manifest(path), missing=[])

    def select(
        self,
        kind: str,
        split: str | None = None,
        sample_rate: int | None = None,
        include_band_limited: bool = True,
        corpora: tuple[str, ...] | None = None,
    ) -> list[CorpusEntry]:
        """Entries of ``kind`` in ``split``; with ``sample_rate``, drop band-limited ones if asked."""
        selected = []
        for entry in self.entries:
            if entry.kind != kind or (split is not None and entry.split != split):
                continue
            if corpora is not None and entry.corpus not in corpora:
                continue
            if (
                sample_rate is not None
                and not include_band_limited
                and entry.synthetic is None
                and entry.native_sample_rate < sample_rate
            ):
                continue
            selected.append(entry)
        return selected

    def manifest(self, sample_rate: int) -> list[CorpusEntry]:
        """Copies of every entry for the ``sample_rate`` variant, with ``band_limited`` set."""
        variant = []
        for entry in self.entries:
            record = CorpusEntry.from_dict(asdict(entry))
            record.sample_rate = sample_rate
            record.band_limited = bool(
                entry.synthetic is None and entry.native_sample_rate < sample_rate
            )
            variant.append(record)
        return variant


def materialize_speech(entries: list[CorpusEntry], output_dir: Path | str) -> list[CorpusEntry]:
    """Write every speech entry of a variant as a 16-bit WAV at its ``sample_rate``; set ``audio``.

    Files go to ``output_dir/<split>/<id>.wav``; frames are updated. Other entries pass through.
    """
    from .audio import write_audio

    output = []
    for entry in entries:
        if entry.kind == "speech":
            audio = load_speech(entry, entry.sample_rate)
            path = Path(output_dir) / entry.split / f"{entry.id}.wav"
            write_audio(path, audio, entry.sample_rate, subtype="PCM_16")
            entry = CorpusEntry.from_dict({**asdict(entry), "audio": str(path), "frames": int(audio.shape[-1])})
        output.append(entry)
    return output


def load_speech(entry: CorpusEntry, sample_rate: int, trim_db: float = -40.0) -> np.ndarray:
    """Load a speech entry as ``[1, samples]`` at ``sample_rate``: trimmed words joined by gaps.

    A materialised entry (``audio`` set by :func:`materialize_speech`) is read from that file.
    """
    if entry.audio:
        return read_audio(entry.audio, sample_rate)[:1]  # [channels, T] -> [1, T]
    pieces = []
    for position, source in enumerate(entry.sources):
        word = read_audio(source, sample_rate)[:1]  # [channels, T] -> [1, T]
        if len(entry.sources) > 1:
            word = trim_silence(word, sample_rate, threshold_db=trim_db)
        pieces.append(word)
        if position < len(entry.gaps_seconds):
            pieces.append(np.zeros((1, int(round(entry.gaps_seconds[position] * sample_rate))), np.float32))
    if not pieces:
        raise AudioError(f"Speech entry {entry.id} lists no source files.")
    return np.concatenate(pieces, axis=-1)  # -> [1, samples]


#: random offsets tried before a noise file counts as digitally silent
NOISE_SEGMENT_ATTEMPTS = 8


def load_noise_segment(
    entry: CorpusEntry, sample_rate: int, length: int, rng: np.random.Generator
) -> np.ndarray:
    """A random ``[1, length]`` segment of a noise entry at ``sample_rate`` (looped if too short).

    Synthetic entries are generated from ``rng``; real files are read only around the segment. A
    digitally silent segment (a gap in a recording) is replaced by one at another random offset, up
    to :data:`NOISE_SEGMENT_ATTEMPTS` offsets; the first audible one is used, so mixtures drawn before
    never change. A file silent at every offset tried gives its last (silent) segment: the caller
    decides (the real-world sets make a clean item of it; mixing at an SNR refuses it).
    """
    if entry.synthetic is not None:
        return procedural_noise(entry, sample_rate, length, rng)
    for _ in range(NOISE_SEGMENT_ATTEMPTS):
        segment = _noise_file_segment(entry, sample_rate, length, rng)
        if power(segment) > SILENT_POWER:
            break
    return segment


def _noise_file_segment(entry: CorpusEntry, sample_rate: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """One random ``[1, length]`` segment of a real noise file (looped if too short)."""
    frames = entry.frames or audio_info(entry.sources[0])[0]
    native_rate = entry.native_sample_rate
    needed = int(np.ceil(length * native_rate / sample_rate)) + 16
    if frames > needed:
        start = int(rng.integers(0, frames - needed + 1))
        segment = read_audio(entry.sources[0], sample_rate, start=start, stop=start + needed)[:1]
    else:
        whole = read_audio(entry.sources[0], sample_rate)[:1]
        repeats = int(np.ceil(length / max(1, whole.shape[-1]))) + 1
        segment = np.tile(whole, (1, repeats))  # [1, T] -> [1, T * repeats]
        start = int(rng.integers(0, max(1, segment.shape[-1] - length)))
        segment = segment[:, start:]
    return np.ascontiguousarray(segment[:, :length])


def procedural_noise(entry: CorpusEntry, sample_rate: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """Generate a synthetic noise entry's ``[1, length]`` segment from ``rng`` (unit power).

    ``entry.synthetic["kind"]``: ``"coloured"`` (the default; ``exponent``), ``"babble"`` (``talkers``
    as ``[low, high]``; words read from ``entry.sources``), ``"impacts"`` or ``"traffic"``.
    """
    from .audio import babble_noise, coloured_noise, impact_noise, traffic_noise

    kind = entry.synthetic.get("kind", "coloured")
    if kind == "coloured":
        return coloured_noise(rng, length, float(entry.synthetic["exponent"]))
    if kind == "impacts":
        return impact_noise(rng, length, sample_rate)
    if kind == "traffic":
        return traffic_noise(rng, length, sample_rate)
    if kind == "babble":
        low, high = entry.synthetic.get("talkers", (3, 8))
        talkers = int(rng.integers(int(low), int(high) + 1))
        words = []
        for _word in range(min(len(entry.sources), 3 * talkers)):
            source = entry.sources[int(rng.integers(0, len(entry.sources)))]
            word = trim_silence(read_audio(source, sample_rate)[:1], sample_rate)  # [1, T]
            if word.shape[-1] > 0:
                words.append(word)
        return babble_noise(rng, length, words, talkers, sample_rate=sample_rate)
    raise ConfigError(f"noise entry {entry.id}: unknown synthetic kind {kind!r}")


PROCEDURAL_NOISE_COPIES = {"babble": 10, "impacts": 6, "traffic": 6}


def procedural_noise_entries(speech: list[CorpusEntry]) -> list[CorpusEntry]:
    """Training-only synthetic babble, impact and traffic noise entries (generated on the fly).

    Babble is built from the word files of the 16 kHz ``train`` speech entries in ``speech``, so no
    validation or test speaker is ever heard, even as interference.
    """
    words = sorted({
        source for entry in speech
        if entry.kind == "speech" and entry.split == "train" and entry.native_sample_rate >= 16000
        for source in entry.sources
    })
    entries = []
    for kind, copies in PROCEDURAL_NOISE_COPIES.items():
        if kind == "babble" and not words:
            continue
        for copy in range(copies):
            synthetic: dict = {"kind": kind}
            if kind == "babble":
                synthetic["talkers"] = [3, 8]
            entries.append(
                CorpusEntry(
                    id=f"noise/synthetic/{kind}/{copy}", kind="noise", split="train",
                    group=f"synthetic:{kind}:{copy}", corpus="synthetic",
                    license="generated; babble from CC-BY-4.0 Speech Commands words" if kind == "babble"
                    else "generated (no restriction)",
                    provenance=f"speechkit recipes/data/audio.py {kind}_noise",
                    native_sample_rate=0, synthetic=synthetic,
                    sources=words if kind == "babble" else [],
                )
            )
    return entries
