"""Torch-free overlap-add of overlapping chunk outputs: raised-cosine cross-fade and source alignment.

Shared by the offline chunked runner (:class:`speechkit.inference.ChunkedRunner`) and the realtime
engine's chunk mode (``realtime.chunk``), so a file and a live stream join chunks identically.
This module imports numpy only (never torch).

Chunk layout (``N`` = chunk length, ``O`` = overlap, hop ``N - O``)::

    chunk k   : [k(N-O), k(N-O) + N)
    emitted   : cross-fade of the previous chunk's last O outputs with this chunk's first O,
                then this chunk's outputs up to its last O (kept for the next cross-fade)

For separation models the order of the sources in each chunk is arbitrary; before the cross-fade
each chunk's sources are permuted to best match the previous chunk over the shared overlap
(normalised correlation, :func:`best_source_order`), so speakers never swap at chunk boundaries.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

#: above this many sources the permutation search is greedy instead of exhaustive
MAX_EXHAUSTIVE_SOURCES = 6
#: chunks shorter than this many samples are zero-padded on the right before the model sees them
MIN_MODEL_INPUT = 1024


def crossfade_windows(length: int) -> tuple[np.ndarray, np.ndarray]:
    """Raised-cosine fade-in and fade-out of ``length`` samples that sum to exactly one."""
    position = (np.arange(length, dtype=np.float64) + 0.5) / max(length, 1)
    fade_in = np.sin(0.5 * math.pi * position) ** 2
    return fade_in.astype(np.float32), (1.0 - fade_in).astype(np.float32)


def best_source_order(reference: np.ndarray, candidate: np.ndarray) -> tuple[int, ...]:
    """The permutation of ``candidate``'s sources that best matches ``reference``.

    Args:
        reference: previous chunk's overlap ``[S, C, O]``.
        candidate: current chunk's overlap ``[S, C, O]``.

    Returns:
        ``order`` such that ``candidate[list(order)]`` lines up with ``reference`` (maximum summed
        normalised correlation; exhaustive for up to :data:`MAX_EXHAUSTIVE_SOURCES` sources).
    """
    num_sources = reference.shape[0]
    ref = reference.reshape(num_sources, -1).astype(np.float64)  # [S, C, O] -> [S, C*O]
    cand = candidate.reshape(num_sources, -1).astype(np.float64)  # [S, C, O] -> [S, C*O]
    norms = np.linalg.norm(ref, axis=1)[:, None] * np.linalg.norm(cand, axis=1)[None, :] + 1e-12
    similarity = (ref @ cand.T) / norms  # [S, S]
    if num_sources <= MAX_EXHAUSTIVE_SOURCES:
        return max(
            itertools.permutations(range(num_sources)),
            key=lambda order: sum(similarity[index, source] for index, source in enumerate(order)),
        )
    order = [-1] * num_sources
    taken: set[int] = set()
    for flat in np.argsort(-similarity, axis=None):
        row, column = divmod(int(flat), num_sources)
        if order[row] < 0 and column not in taken:
            order[row] = column
            taken.add(column)
    return tuple(order)


class CrossfadeJoiner:
    """Join consecutive chunk outputs ``[S, C, N]`` that overlap by ``overlap_length`` samples.

    Each :meth:`join` returns the samples that are final: the cross-fade of the pending tail with
    the chunk's first ``O`` samples, then the chunk up to its last ``O`` samples, which become the
    new tail (the first chunk has no fade-in: it is emitted up to its tail as is). With a fixed
    chunk length ``N`` and ``O <= N / 2`` every join after the first returns exactly ``N - O``
    samples, and so does the first.

    Args:
        overlap_length: samples shared by consecutive chunks (O).
        num_sources: sources per chunk (S).
        align_sources: permute each chunk's sources to match the tail before the cross-fade.
    """

    def __init__(self, overlap_length: int, num_sources: int, align_sources: bool = True) -> None:
        self.overlap_length = int(overlap_length)
        self.num_sources = int(num_sources)
        self.align_sources = align_sources
        self.permutations_applied = 0
        #: the last ``O`` samples of the previous chunk, not yet emitted (None before the first chunk)
        self.tail: np.ndarray | None = None
        self._fade_in, self._fade_out = crossfade_windows(self.overlap_length)

    def reset(self) -> None:
        """Forget the pending tail (a new signal starts)."""
        self.tail = None

    def join(self, chunk_output: np.ndarray, final: bool) -> np.ndarray:
        """Cross-fade ``chunk_output [S, C, L]`` onto the pending tail; keep the new tail unless ``final``."""
        overlap = self.overlap_length
        length = chunk_output.shape[-1]
        if self.tail is None:
            if final:
                return chunk_output
            self.tail = chunk_output[..., length - overlap :]
            return chunk_output[..., : length - overlap]
        if self.align_sources and self.num_sources > 1 and overlap > 0:
            order = best_source_order(self.tail, chunk_output[..., :overlap])
            if list(order) != list(range(self.num_sources)):
                chunk_output = chunk_output[list(order)]  # reorder sources, same shape
                self.permutations_applied += 1
        blended = self.tail * self._fade_out + chunk_output[..., :overlap] * self._fade_in  # [S, C, O]
        if final:
            self.tail = None
            return np.concatenate([blended, chunk_output[..., overlap:]], axis=-1)  # [S, C, L]
        self.tail = chunk_output[..., length - overlap :]
        return np.concatenate([blended, chunk_output[..., overlap : length - overlap]], axis=-1)  # [S, C, L - O]
