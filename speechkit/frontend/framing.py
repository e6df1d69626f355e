"""Causal framing and overlap-add, offline and streaming, shared by every frame-based front-end.

Convention (used by the learned filterbank and by the STFT in ``"causal"`` padding mode): frame
``t`` covers input samples ``[t*hop - (win - hop), t*hop + hop)``, i.e. the signal is left-padded
with ``win - hop`` zeros. Frame ``t`` can therefore be computed as soon as input block ``t``
(samples ``[t*hop, (t+1)*hop)``) has arrived, and the overlap-added output of block ``t`` is
final once frame ``t + win/hop - 1`` is in, so a stream is delayed by ``win - hop`` samples
against the offline transform and its algorithmic latency is ``win`` samples.

Offline::

    padded = causal_pad(x, win, hop)            # [..., T] -> [..., (n_frames - 1) * hop + win]
    frames = analysis(padded)                    # any strided conv: n_frames frames
    y_full = synthesis(frames)                   # transposed conv: [..., (n_frames - 1) * hop + win]
    y = causal_crop(y_full, win, hop, T)         # [..., T]

Streaming (all state explicit tensors, ONNX-friendly)::

    frame, analysis_state = analysis_step(block, analysis_state)    # block [..., hop] -> [..., win]
    out, synthesis_state = overlap_add_step(frame_out, synthesis_state)  # [..., win] -> [..., hop]

A second, offline-only convention reproduces asteroid's filterbanks (``framing="asteroid"``, set
by :mod:`speechkit.convert.asteroid`): no padding, frame ``t`` covers ``[t*hop, t*hop + win)``
(``(T - win) // hop + 1`` frames, a trailing partial hop dropped), and the overlap-added synthesis
is right-padded with zeros or cropped to the input length (asteroid's ``pad_x_to_y``). Against
the causal convention this drops the ``(win - hop) / hop`` frames that start before the signal and
the frame(s) that end after it, so a network sees different edge frames, and the first and last
``win - hop`` samples differ. ``framing="unpadded"`` is the same convention under a toolkit-neutral
name (MossFormer2's official encoder and decoder frame this way). :func:`analysis_pad` and
:func:`synthesis_crop` select a convention.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError

#: framing conventions: "causal" (this module's, streams) or "asteroid" (no padding; offline only);
#: "unpadded" is the same offline convention as "asteroid" under a toolkit-neutral name (MossFormer2's
#: encoder and decoder frame this way too)
FRAMINGS = ("causal", "asteroid", "unpadded")


def causal_num_frames(length: int, win: int, hop: int) -> int:
    """Frames needed so that every output sample ``< length`` has all its overlapping frames.

    Integer ceiling division (no float round trip), so a traced ``length`` stays symbolic and an
    exported graph keeps a dynamic time axis.
    """
    return (length + win - 1) // hop  # == ceil((length + win - hop) / hop)


def causal_pad(x: torch.Tensor, win: int, hop: int) -> torch.Tensor:
    """Left-pad ``win - hop`` zeros and right-pad so a stride-``hop`` window ``win`` covers the tail.

    ``x [..., T] -> [..., (n_frames - 1) * hop + win]`` with ``n_frames = causal_num_frames(T)``.
    """
    length = x.shape[-1]
    n_frames = causal_num_frames(length, win, hop)
    padded_length = (n_frames - 1) * hop + win
    return F.pad(x, (win - hop, padded_length - (win - hop) - length))


def causal_crop(y: torch.Tensor, win: int, hop: int, length: int) -> torch.Tensor:
    """Undo :func:`causal_pad` on an overlap-added signal: ``[..., L] -> [..., length]``."""
    return y[..., win - hop : win - hop + length]


def stream_delay(win: int, hop: int) -> int:
    """Delay in samples of the streamed output against the offline output."""
    return win - hop


def analysis_state_shape(leading: tuple[int, ...], win: int, hop: int) -> tuple[int, ...]:
    """Shape of the analysis state: the last ``win - hop`` input samples."""
    return (*leading, win - hop)


def analysis_step(block: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Append one hop of input to the buffered history and return the newest full frame.

    ``block [..., hop]``, ``state [..., win - hop]`` -> ``frame [..., win]``, new state.
    """
    frame = torch.cat([state, block], dim=-1)  # [..., win]
    hop = block.shape[-1]
    return frame, frame[..., hop:]


def synthesis_state_shape(leading: tuple[int, ...], win: int, hop: int) -> tuple[int, ...]:
    """Shape of the overlap-add state: the ``win - hop`` pending output samples."""
    return (*leading, win - hop)


def overlap_add_step(
    frame: torch.Tensor, state: torch.Tensor, hop: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlap-add one synthesised frame; return the ``hop`` samples that are now final.

    ``frame [..., win]``, ``state [..., win - hop]`` -> ``out [..., hop]``, new state.
    """
    overlap = state.shape[-1]
    head = frame[..., :overlap] + state
    total = torch.cat([head, frame[..., overlap:]], dim=-1)  # [..., win]
    return total[..., :hop], total[..., hop:]


def check_framing(framing: str) -> str:
    """``framing`` if it is one of :data:`FRAMINGS`, else a :class:`ConfigError`."""
    if framing not in FRAMINGS:
        raise ConfigError(f"unknown framing {framing!r}; use one of {', '.join(FRAMINGS)}")
    return framing


def analysis_pad(x: torch.Tensor, win: int, hop: int, framing: str = "causal") -> torch.Tensor:
    """Pad ``x [..., T]`` for a stride-``hop`` analysis with window ``win`` under ``framing``.

    ``"causal"``: :func:`causal_pad`. ``"asteroid"`` / ``"unpadded"``: no padding (a signal shorter
    than one window is right-padded to ``win`` samples, where asteroid would fail).
    """
    if check_framing(framing) == "causal":
        return causal_pad(x, win, hop)
    if x.shape[-1] < win:
        return F.pad(x, (0, win - x.shape[-1]))
    return x


def synthesis_crop(y: torch.Tensor, win: int, hop: int, length: int, framing: str = "causal") -> torch.Tensor:
    """The ``length`` output samples of an overlap-added ``y [..., L]`` under ``framing``.

    ``"causal"``: :func:`causal_crop`. ``"asteroid"`` / ``"unpadded"``: the first ``length`` samples, right-padded
    with zeros when ``y`` is shorter (asteroid's ``pad_x_to_y``).
    """
    if check_framing(framing) == "causal":
        return causal_crop(y, win, hop, length)
    y = y[..., :length]
    return F.pad(y, (0, length - y.shape[-1]))
