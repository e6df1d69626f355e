"""bench.peak_memory: a child's peak memory is its own, not the peak its parent reached before the fork."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from bench.peak_memory import run_python

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM needs Linux /proc")

PARENT_MIB = 400


def test_child_peak_excludes_the_parents_earlier_peak() -> None:
    held = np.ones(PARENT_MIB * 2**20 // 8)  # touched pages: the parent's peak RSS grows by PARENT_MIB
    del held
    probe = subprocess.Popen([sys.executable, "-c", "pass"])
    _, _, usage = os.wait4(probe.pid, 0)
    assert usage.ru_maxrss / 1024 >= PARENT_MIB  # the kernel's figure carries the parent's peak over
    run = run_python("import sys; sys.stdout.write('ok'); sys.exit(3)")
    assert run.exit_code == 3 and run.stdout == "ok"
    assert run.peak_rss_mib < PARENT_MIB / 4  # a bare interpreter: tens of MiB


def test_child_peak_counts_what_the_child_allocates() -> None:
    run = run_python("import numpy as np, sys; block = np.ones(int(sys.argv[1]) * 2**20 // 8)", ["200"])
    assert run.exit_code == 0, run.stderr
    assert 200 <= run.peak_rss_mib < 400
    assert not math.isnan(run.peak_rss_mib)
