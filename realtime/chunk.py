"""Chunk mode: a whole-chunk graph (non-streaming model) run live on a sliding window.

A chunk export (``speechkit export MODEL --chunk SECONDS``, metadata ``mode = "chunk"``) declares
a window of ``N = chunk_length`` samples and an overlap ``O = overlap_length <= N / 2``; the hop is
``H = N - O``. :class:`ChunkModel` is an engine step model (the same interface as
:class:`realtime.model.StreamModel`) with hop ``H``: step ``j`` receives input samples
``[jH, (j+1)H)``, runs the graph on the newest N samples ``[jH - O, (j+1)H)`` (zeros before the
start) and joins consecutive windows with the raised-cosine cross-fade of
:class:`speechkit.crossfade.CrossfadeJoiner` (sources of separation models re-ordered to match the
previous window over the overlap first, so speakers keep their output channel).

Latency. Step ``j`` releases output samples ``[jH - O, (j+1)H - O)``: the cross-fade of windows
``j - 1`` and ``j`` over ``[jH - O, jH)``, then window ``j`` alone. Each of them is final only once
window ``j`` has been computed, and window ``j`` ends at input sample ``(j+1)H``; the first
released sample ``jH - O`` therefore waits ``H + O = N`` samples. So ``stream_delay = O`` and the
algorithmic latency is ``H + O = N``, the window length, whatever the overlap; the engine adds the
compute allowance and block alignment (its ``buffering``) and the device latencies on top.

The released stream equals the offline chunked inference (:class:`speechkit.inference.ChunkedRunner`
with chunk N and overlap O) of the signal with O zeros in front, delayed by ``N`` samples, to ONNX
Runtime's float rounding. Windows of digital silence are not computed (zeros out), as offline.

``mode = "sampler"`` exports run the same way, with each window processed by the
predictor-corrector loop of :mod:`realtime.sampler` over the score network (noise drawn from the
schedule's seed, reset with the stream, so a run is reproducible); a network over compressed
spectra (``score_domain = "compressed_stft"``, SGMSE+) runs through :mod:`realtime.spectral`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import RealtimeError
from .model import HopModel, graph_mode, open_session
from .sampler import OnnxScore, Schedule, draw_noise, pc_sample
from .spectral import SpectralSampler


class ChunkModel(HopModel):
    """A whole-chunk (or sampler) ONNX export as an engine step model with hop ``N - O``.

    Args:
        path: the ``.onnx`` file.
        align_sources: keep the source order of separation models across windows.
        session_options: ``spinning``, ``intra_op_threads``, ``providers``, ``graph_optimization``
            as for :class:`realtime.model.StreamModel` (see :func:`realtime.model.open_session`).
    """

    def __init__(self, path: str | os.PathLike, align_sources: bool = True, **session_options: Any) -> None:
        from speechkit.crossfade import MIN_MODEL_INPUT, CrossfadeJoiner  # torch-free

        path = Path(path)
        self.session, self.metadata, self.graph_optimization = open_session(path, **session_options)
        self.path = path
        self.mode = graph_mode(self.metadata)
        if self.mode not in ("chunk", "sampler"):
            raise RealtimeError(f"{path} is a {self.mode} graph, not a whole-chunk graph; use load_model")
        if self.metadata.get("chunk_length") is None:
            raise RealtimeError(
                f"{path} declares no realtime window; re-export it with 'speechkit export MODEL --chunk SECONDS'"
            )
        self.window_length = int(self.metadata["chunk_length"])
        self.overlap_length = int(self.metadata["overlap_length"])
        if not 0 <= self.overlap_length <= self.window_length // 2 or self.window_length < 2:
            raise RealtimeError(
                f"{path}: window {self.window_length} and overlap {self.overlap_length} samples "
                "need 0 <= overlap <= window / 2"
            )
        self.sample_rate = int(self.metadata["sample_rate"])
        self.hop_length = self.window_length - self.overlap_length
        self.stream_delay = self.overlap_length
        self.algorithmic_latency = self.hop_length + self.stream_delay  # = window_length
        self.input_names: list[str] = list(self.metadata["input_names"])
        self.output_names: list[str] = list(self.metadata["output_names"])
        self.num_input_channels = int(self.metadata["num_input_channels"])
        self.num_sources = int(self.metadata["num_sources"])
        self.channels_per_source = int(self.metadata["num_output_channels"])
        self.num_output_channels = self.num_sources * self.channels_per_source
        self._read_layout(path)
        padded = max(self.window_length, MIN_MODEL_INPUT)  # as the offline runner pads short chunks
        self._x = np.zeros((1, self.num_input_channels, padded), dtype=np.float32)  # [1, C_in, N']
        self._y = np.zeros((1, self.num_sources, self.channels_per_source, padded), dtype=np.float32)
        self._window = self._x[0, :, : self.window_length]  # view [C_in, N]
        self.input_block = np.zeros((self.num_input_channels, self.hop_length), dtype=np.float32)  # [C_in, H]
        self.output_block = np.zeros((self.num_output_channels, self.hop_length), dtype=np.float32)  # [S*C_out, H]
        self.joiner = CrossfadeJoiner(self.overlap_length, self.num_sources, align_sources)
        self.nonfinite_outputs = 0
        self._schedule: Schedule | None = None
        self._spectral: SpectralSampler | None = None
        if self.mode == "sampler":
            self._schedule = Schedule.from_metadata(self.metadata.get("schedule"))
            self._score = OnnxScore(self.session, self.input_names)
            if self.metadata.get("score_domain") == "compressed_stft":  # SGMSE+: the loop runs on spectra
                self._spectral = SpectralSampler(self.metadata.get("config") or {}, self._schedule, self._score)
            if self.num_sources != 1 or self.channels_per_source != self.num_input_channels:
                raise RealtimeError(f"{path}: a sampler export must output one source shaped like its input")
        else:
            self._binding = self.session.io_binding()
            for name, array in ((self.input_names[0], self._x), (self.output_names[0], self._y)):
                bind = self._binding.bind_input if array is self._x else self._binding.bind_output
                bind(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)
        self.reset()

    def reset(self) -> None:
        """Start a new stream: empty window, no pending cross-fade tail, sampler noise from its seed."""
        self._x.fill(0.0)
        self._y.fill(0.0)
        self.input_block.fill(0.0)
        self.joiner.reset()
        seed = self._schedule.seed if self._schedule is not None else 0
        self._generator = np.random.default_rng(seed)

    def step(self) -> np.ndarray:
        """Slide the window by :attr:`input_block` (one hop), run it, return the released hop.

        The returned :attr:`output_block` ``[S*C_out, H]`` is reused by the next step.
        """
        hop = self.hop_length
        self._window[:, :-hop] = self._window[:, hop:]  # [C_in, N]: drop the oldest hop
        self._window[:, -hop:] = self.input_block
        released = self.joiner.join(self._run_window(), final=False)  # [S, C_out, H]
        self.output_block[...] = released.reshape(self.num_output_channels, hop)
        return self.output_block

    def warm_up(self, steps: int = 4) -> None:
        """Run ``steps`` windows of low-level noise, then reset."""
        generator = np.random.default_rng(0)
        for _ in range(steps):
            self.input_block[...] = 1e-3 * generator.standard_normal(self.input_block.shape)
            self.step()
        self.reset()

    def _run_window(self) -> np.ndarray:
        """The model output ``[S, C_out, N]`` of the current window (zeros for digital silence)."""
        shape = (self.num_sources, self.channels_per_source, self.window_length)
        if not self._window.any():
            return np.zeros(shape, dtype=np.float32)
        if self._spectral is not None:
            output = self._spectral.process(self._window, self._generator)[None]  # [1, C, N]
        elif self._schedule is not None:
            condition = self._window.copy()  # [C_in, N]
            noise = draw_noise(self._schedule, condition.shape, self._generator)  # [draws, C_in, N]
            output = pc_sample(self._score, condition, self._schedule, noise)[None]  # [1, C, N]
        else:
            self.session.run_with_iobinding(self._binding)
            output = self._y[0, :, :, : self.window_length].copy()  # [S, C_out, N]
        finite = np.isfinite(output)
        if not finite.all():
            self.nonfinite_outputs += int((~finite).sum())
            output = np.where(finite, output, np.float32(0.0))
        return output.reshape(shape)

    def describe(self) -> dict[str, Any]:
        """Mode and window in samples (for the startup line and the summary)."""
        return {
            "mode": self.mode,
            "window_samples": self.window_length,
            "hop_samples": self.hop_length,
            "overlap_samples": self.overlap_length,
        }
