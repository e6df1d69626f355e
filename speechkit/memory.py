"""Keep large freed buffers for reuse instead of handing them back to the kernel (glibc).

PyTorch's CPU tensors are allocated with ``malloc``. glibc serves blocks above its mmap threshold
(dynamic, at most 32 MiB by default) with fresh ``mmap`` pages and unmaps them on ``free``, so every
such allocation costs page faults and zero-filling in the kernel. A model whose activations pass that
size does this for every tensor of every chunk: TIGER on its 6 s chunks (67 bands x 256 channels x
601 frames, 41 MB per tensor) spent 8.2 of 19.8 CPU-seconds in the kernel for two chunks on one
thread; with the thresholds raised it spent 0.0 of 11.1 (same outputs). Training on 1 s segments
stays below the threshold and does not change.

:func:`retain_freed_memory` raises glibc's mmap and trim thresholds. It is process-wide, so the
``speechkit`` command line calls it (it owns the process) and the library never does; API users
who run large models call ``speechkit.retain_freed_memory()`` themselves. The peak resident memory
stays the working set's (TIGER on a 30-minute file: 1127 MiB; on a 60 s file 936 MiB): freed blocks
are reused by the next chunk rather than returned and requested again.
"""
from __future__ import annotations

import ctypes
import logging
import platform

#: mallopt parameter numbers (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: blocks up to this size come from the heap and are reused (glibc's own dynamic threshold stops at
#: 32 MiB; a glibc that refuses a larger value makes :func:`retain_freed_memory` return False)
MMAP_THRESHOLD_BYTES = 1 << 30
#: free heap memory above this is not returned to the kernel between chunks
TRIM_THRESHOLD_BYTES = (1 << 31) - 1

_log = logging.getLogger(__name__)


def retain_freed_memory() -> bool:
    """Make glibc keep freed blocks up to :data:`MMAP_THRESHOLD_BYTES` for reuse; True if it took effect.

    A no-op returning False where the C library is not glibc (macOS, Windows, musl) or refuses.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
        )
    except (OSError, AttributeError) as error:  # no libc.so.6 or no mallopt symbol
        _log.debug("glibc mallopt unavailable: %s", error)
        return False
    return applied


__all__ = ["MMAP_THRESHOLD_BYTES", "TRIM_THRESHOLD_BYTES", "retain_freed_memory"]
