"""Imported first by a benchmark: one thread per math library unless the caller set one.

The variables must be set before torch (or numpy's BLAS, or a Rust peer's rayon pool) loads, so a
benchmark imports this module before anything else; every system then runs on one thread, as the
RTF columns state.
"""
from __future__ import annotations

import os

#: the thread-count variables of OpenMP, MKL, OpenBLAS and rayon (the Rust peers)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS")

for _variable in THREAD_VARIABLES:
    os.environ.setdefault(_variable, "1")
