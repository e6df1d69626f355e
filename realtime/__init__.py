"""speechkit's realtime engine: exported ONNX models run block by block with ONNX Runtime.

Imports numpy and onnxruntime (and sounddevice for devices, lazily), never torch. Modules:
``model`` (the ONNX step graph with preallocated state; ``load_model`` opens any export),
``chunk`` (whole-chunk graphs of non-streaming models on a sliding window with cross-fade: the
latency is the window), ``sampler`` (predictor-corrector loop over an ONNX score network),
``engine`` (ring buffers, scheduling, deadlines and fallback), ``latency`` (latency terms),
``metrics``, ``io`` (files, sounddevice import), ``devices`` (PortAudio streaming), ``clock``
(real and virtual clocks), ``cli``.
"""
