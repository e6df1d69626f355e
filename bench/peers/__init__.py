"""Adapters for the enhancers the comparison benchmark runs, with one common interface.

Every adapter is an :class:`~bench.peers.base.Enhancer`: ``name``, ``native_rate``,
``algorithmic_latency`` (seconds), ``process(audio, sample_rate) -> audio`` (raw, delayed output)
and ``is_available() -> (bool, reason)``. Peers are optional: their packages are imported only
when used, and :func:`peer_status` says why one cannot run.
"""
from __future__ import annotations

from .base import Availability, Enhancer
from .deepfilternet3 import DeepFilterNet3
from .rnnoise import RNNoise
from .speechkit_model import SpeechkitEnhancer
from .speex_ns import SpeexNoiseSuppression
from .webrtc_ns import WebRTCNoiseSuppression

#: peer name -> adapter class, in table order
PEERS: dict[str, type[Enhancer]] = {
    peer.name: peer for peer in (DeepFilterNet3, RNNoise, WebRTCNoiseSuppression, SpeexNoiseSuppression)
}


def peer_status() -> dict[str, Availability]:
    """Availability of every peer (name -> status with the reason when unavailable)."""
    return {name: peer.availability() for name, peer in PEERS.items()}


__all__ = [
    "PEERS",
    "Availability",
    "DeepFilterNet3",
    "Enhancer",
    "RNNoise",
    "SpeechkitEnhancer",
    "SpeexNoiseSuppression",
    "WebRTCNoiseSuppression",
    "peer_status",
]
