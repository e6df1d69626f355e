"""Bounded-memory inference over arbitrarily long signals.

Modules: :mod:`.runners` (chunked and streaming model runners), :mod:`.pipeline` (channels,
resampling, exact length, attenuation limit; :class:`Pipeline`, :func:`process_array`) and
:mod:`.echo` (microphone + far-end pairing, :class:`EchoPipeline`). Files are driven through
them by :func:`speechkit.files.run_file`. Every public name is importable from here.

The signal arrives in blocks of any size at any rate. :class:`Pipeline` resamples it (streaming,
soxr) to the model rate, :class:`ChunkedRunner` runs the model on fixed-length chunks that overlap
by ``overlap_length`` samples and joins them with a raised-cosine cross-fade (the fade-in and
fade-out sum to one), and the result is resampled back to the input rate. Only one chunk and one
overlap are held at a time, so memory does not grow with the length of the signal. The chunk
layout, the cross-fade and the source re-alignment of separation models (speakers never swap at
chunk boundaries) are those of :mod:`speechkit.crossfade`, which the realtime chunk mode shares.

Streaming models (``supports_streaming``) are not chunked: :class:`StreamingRunner` feeds the
signal through ``forward_step`` in steps of whole blocks, carrying the model state from one step to
the next, feeds ``stream_delay`` zeros after the end and drops the first ``stream_delay`` outputs.
The result equals one offline pass ``model(x)`` over the whole signal (a cumulative norm keeps its
statistics across the file) while only one step of audio is held at a time. Models whose
``forward_step`` takes several blocks per call are detected once (:func:`max_step_blocks`) and run
one step of up to ``chunk_seconds`` per call; others run one block per call. Torch runs the steps
on one thread (measured faster for these sequential calls, see :data:`STEP_THREADS`).
"""
from __future__ import annotations

from ..crossfade import MAX_EXHAUSTIVE_SOURCES, MIN_MODEL_INPUT, CrossfadeJoiner, best_source_order, crossfade_windows
from .echo import EchoFeed, EchoPipeline
from .pipeline import (
    CHANNEL_MODES,
    DEFAULT_CHUNK_SECONDS,
    DEFAULT_OVERLAP_SECONDS,
    ENHANCE_CHANNELS,
    SEPARATE_CHANNELS,
    Pipeline,
    mix_back_gain,
    process_array,
)
from .runners import (
    STEP_THREADS,
    ChunkedRunner,
    StreamingRunner,
    make_runner,
    max_step_blocks,
    select_device,
    torch_threads,
)

__all__ = [
    "CHANNEL_MODES",
    "DEFAULT_CHUNK_SECONDS",
    "DEFAULT_OVERLAP_SECONDS",
    "ENHANCE_CHANNELS",
    "MAX_EXHAUSTIVE_SOURCES",
    "MIN_MODEL_INPUT",
    "SEPARATE_CHANNELS",
    "STEP_THREADS",
    "ChunkedRunner",
    "CrossfadeJoiner",
    "EchoFeed",
    "EchoPipeline",
    "Pipeline",
    "StreamingRunner",
    "best_source_order",
    "crossfade_windows",
    "make_runner",
    "max_step_blocks",
    "mix_back_gain",
    "process_array",
    "select_device",
    "torch_threads",
]
