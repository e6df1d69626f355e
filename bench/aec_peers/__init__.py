"""Adapters for the echo cancellers the AEC comparison benchmark runs (``bench/compare_aec.py``).

Every adapter is an :class:`~bench.aec_peers.base.EchoCanceller`, the two-channel form of the
noise-suppression peers' :class:`bench.peers.base.Enhancer` interface: ``name``, ``native_rate``,
``block_size``, ``stream_delay``, ``algorithmic_latency``, ``is_available() -> (bool, reason)`` and
``process(audio [2, T] = (mic, far_end), sample_rate) -> near_end`` (raw, delayed output). Peers
are optional: their packages are imported only when used.
"""
from __future__ import annotations

from bench.peers.base import Availability

from .base import EchoCanceller
from .speechkit_aec import SpeechkitEchoCanceller
from .speex_aec import SpeexEchoCanceller
from .webrtc_aec3 import WebRTCAEC3, WebRTCAEC3NoiseSuppression

#: peer name -> adapter class, in table order
PEERS: dict[str, type[EchoCanceller]] = {
    peer.name: peer for peer in (SpeexEchoCanceller, WebRTCAEC3, WebRTCAEC3NoiseSuppression)
}


def peer_status() -> dict[str, Availability]:
    """Availability of every AEC peer (name -> status with the reason when unavailable)."""
    return {name: peer.availability() for name, peer in PEERS.items()}


__all__ = [
    "PEERS",
    "Availability",
    "EchoCanceller",
    "SpeechkitEchoCanceller",
    "SpeexEchoCanceller",
    "WebRTCAEC3",
    "WebRTCAEC3NoiseSuppression",
    "peer_status",
]
