"""speechkit's realtime engine: exported ONNX models run block by block with ONNX Runtime.

Imports numpy and onnxruntime (and sounddevice for devices, lazily), never torch. Modules:
``model`` (the ONNX step graph with preallocated state), ``engine`` (ring buffers, scheduling,
deadlines and fallback), ``latency`` (latency terms), ``metrics``, ``io`` (files, sounddevice
import), ``devices`` (PortAudio streaming), ``clock`` (real and virtual clocks), ``cli``.
"""
