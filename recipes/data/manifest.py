"""The corpus entry record (one manifest line), JSON-lines manifests and hash-based splits.

Shared by the mini corpus (:mod:`recipes.data.minicorpus`, which re-exports every name here) and
the other corpus adapters (:mod:`recipes.data.corpora`, :mod:`recipes.data.speech_folders`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from speechkit.errors import ConfigError


@dataclass
class CorpusEntry:
    """One manifest line: a speech utterance, a noise file, a synthetic noise or an RIR file.

    ``sources`` are absolute paths (several word files for a concatenated utterance; empty for
    synthetic noise). ``group`` is the unit of held-out splitting: the speaker for speech, the
    file for noise and RIRs.
    """

    id: str
    kind: str
    split: str
    group: str
    corpus: str
    license: str
    provenance: str
    native_sample_rate: int
    sources: list[str] = field(default_factory=list)
    language: str = ""
    gaps_seconds: list[float] = field(default_factory=list)
    frames: int = 0
    sample_rate: int = 0
    band_limited: bool = False
    synthetic: dict | None = None
    audio: str = ""

    def to_json(self) -> str:
        """Serialise as one JSON line."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, record: dict) -> "CorpusEntry":
        """Build from a parsed manifest record."""
        return cls(**record)


def hash_fraction(name: str) -> float:
    """A stable number in [0, 1) derived from ``name`` (independent of Python's hash seed)."""
    return int(hashlib.sha1(name.encode("utf-8")).hexdigest()[:8], 16) / 2**32


def hash_split(name: str, validation_fraction: float = 0.1, test_fraction: float = 0.1) -> str:
    """Assign ``name`` to a split by its hash: ``test`` / ``validation`` / ``train``."""
    fraction = hash_fraction(name)
    if fraction < test_fraction:
        return "test"
    if fraction < test_fraction + validation_fraction:
        return "validation"
    return "train"


def split_summary(entries: list[CorpusEntry]) -> dict[str, dict[str, int]]:
    """Counts of entries and of held-out groups per ``kind/split``."""
    summary: dict[str, dict[str, int]] = {}
    groups: dict[str, set[str]] = {}
    for entry in entries:
        key = f"{entry.kind}/{entry.split}"
        summary.setdefault(key, {"entries": 0, "groups": 0})["entries"] += 1
        groups.setdefault(key, set()).add(entry.group)
    for key, members in groups.items():
        summary[key]["groups"] = len(members)
    return summary


def write_manifest(entries: list[CorpusEntry], path: Path | str) -> None:
    """Write ``entries`` as JSON lines to ``path``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for entry in entries:
            handle.write(entry.to_json() + "\n")


def read_manifest(path: Path | str) -> list[CorpusEntry]:
    """Read a JSON-lines manifest written by :func:`write_manifest`.

    Raises:
        ConfigError: the file is missing or a line is not a valid entry.
    """
    manifest_path = Path(path)
    if not manifest_path.is_file():
        raise ConfigError(f"Manifest {manifest_path} does not exist; build it with recipes/prepare_data.py.")
    entries = []
    with open(manifest_path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                entries.append(CorpusEntry.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError) as error:
                raise ConfigError(f"Line {line_number} of {manifest_path} is not a manifest entry: {error}.") from error
    return entries
