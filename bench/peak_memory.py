"""Wall time, CPU time and peak resident memory of a Python child process, without its parent's memory.

Linux carries a process's peak RSS across ``fork`` and ``exec``: the ``ru_maxrss`` of a child (from
``wait4`` or its own ``getrusage``) is at least the peak its parent had reached before the fork,
whatever the child itself uses. Measured here: ``/bin/true`` started by a Python process that had
held 900 MiB (and freed it) reported 927 MiB. A benchmark that has loaded and run models before it
starts the command it measures would report its own memory as the command's. ``VmHWM`` in
``/proc/self/status`` belongs to the address space ``exec`` created, so the child reads it at exit
and writes it to a file its parent names (a bare Python child of that same parent: 10.9 MiB).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: environment variable naming the file the child writes its ``VmHWM`` (kB) to
PEAK_FILE_VARIABLE = "SPEECHKIT_BENCH_PEAK_FILE"

#: prepended to the child's code: report VmHWM at interpreter exit (normal return or SystemExit)
_REPORT_AT_EXIT = f"""\
import atexit as _atexit, os as _os
def _report_peak_memory():
    path = _os.environ.get({PEAK_FILE_VARIABLE!r})
    if not path:
        return
    try:
        with open('/proc/self/status') as status:
            line = next(line for line in status if line.startswith('VmHWM:'))
    except (OSError, StopIteration):
        return
    with open(path, 'w') as out:
        out.write(line.split()[1])
_atexit.register(_report_peak_memory)
"""


@dataclass(frozen=True)
class ChildRun:
    """What :func:`run_python` measured of one child process."""

    wall_seconds: float
    #: peak RSS of the child's own address space (MiB); NaN where ``/proc/self/status`` has no VmHWM
    peak_rss_mib: float
    exit_code: int
    #: user + system CPU seconds of the child
    cpu_seconds: float
    stdout: str
    stderr: str


def run_python(code: str, arguments: Sequence[str] = (), env: Mapping[str, str] | None = None) -> ChildRun:
    """Run ``python -c code arguments...`` in a fresh interpreter and measure it (see the module docstring)."""
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        peak_file = scratch / "vmhwm_kb"
        child_env = {**(os.environ if env is None else env), PEAK_FILE_VARIABLE: str(peak_file)}
        with open(scratch / "stdout", "w+") as stdout, open(scratch / "stderr", "w+") as stderr:
            started = time.perf_counter()
            process = subprocess.Popen([sys.executable, "-c", _REPORT_AT_EXIT + code, *arguments], env=child_env,
                                       stdout=stdout, stderr=stderr)
            _, status, usage = os.wait4(process.pid, 0)  # CPU times are the child's own (unlike ru_maxrss)
            wall = time.perf_counter() - started
            process.returncode = os.waitstatus_to_exitcode(status)
            stdout.seek(0)
            stderr.seek(0)
            out_text, err_text = stdout.read(), stderr.read()
        peak = float(peak_file.read_text()) / 1024.0 if peak_file.exists() else float("nan")
    return ChildRun(wall, peak, process.returncode, usage.ru_utime + usage.ru_stime, out_text, err_text)
