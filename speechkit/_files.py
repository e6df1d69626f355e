"""Atomic file writing helpers: temporary siblings that become the output with ``os.replace``."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _default_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file: ``0o666`` minus the umask."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def temporary_sibling(path: str | os.PathLike, suffix: str = ".tmp") -> str:
    """Create an empty temporary file next to ``path`` and return its name.

    It stays private (``0o600``) while it is written; :func:`publish` gives it normal permissions
    when it becomes the output.
    """
    target = Path(path)
    descriptor, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(descriptor)
    return name


def publish(tmp_name: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give the finished temporary file a normal new file's permissions, then rename it to ``path``.

    The mode is set here, on the finished file, because some writers replace the temporary file
    with one of their own (safetensors' ``save_file`` leaves mode ``0o600``).
    """
    os.chmod(tmp_name, _default_file_mode())
    os.replace(tmp_name, path)
