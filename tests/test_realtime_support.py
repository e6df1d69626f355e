"""Shared helpers of the export and realtime tests: a tiny streaming model and an identity ONNX graph.

The tiny model follows the streaming contract of ``speechkit.models.base`` with three explicit
states (analysis buffer, a causal depthwise conv cache over frames, overlap-add tail), so export
and engine tests do not depend on any production model.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np


def make_tiny_model(num_inputs: int = 1, seed: int = 0):
    """A random :class:`TinyStreamer` (imports torch lazily so realtime-only tests stay torch-free)."""
    import torch

    torch.manual_seed(seed)
    model = _tiny_class()(_tiny_config_class()(num_inputs=num_inputs))
    return model.eval()


def _tiny_config_class():
    @dataclasses.dataclass(frozen=True)
    class TinyStreamerConfig:
        window_length: int = 16
        hop_length: int = 8
        features: int = 12
        num_inputs: int = 1
        sample_rate: int = 8000

    return TinyStreamerConfig


def _tiny_class():
    import torch
    import torch.nn.functional as F
    from torch import nn

    from speechkit.frontend import framing
    from speechkit.models.base import SpeechModel

    config_class = _tiny_config_class()

    class TinyStreamer(SpeechModel):
        """Frame analysis, causal conv over frames, mask, synthesis, overlap-add (test model)."""

        name = "tiny_streamer"

        @property
        def task(self) -> str:  # two inputs: microphone and far end, as the echo canceller
            return "aec" if self.config.num_inputs == 2 else "enhancement"

        def __init__(self, config) -> None:
            self.config_class = type(config)
            super().__init__(config)
            self.analysis = nn.Linear(config.window_length, config.features)
            self.frame_conv = nn.Conv1d(config.features, config.features, 3, groups=config.features)
            self.synthesis = nn.Linear(config.features, config.window_length)
            self.register_buffer("mix", torch.linspace(1.0, 0.5, config.num_inputs))

        @property
        def input_layout(self):
            from speechkit.tasks import InputLayout

            if self.config.num_inputs == 2:  # microphone and far end, as the echo canceller
                return InputLayout(num_microphones=1, far_end_channel=1)
            return InputLayout(num_microphones=self.config.num_inputs)

        @property
        def frontend_spec(self):
            from speechkit.models.spec import FrontendSpec

            return FrontendSpec(kind="learned", window="learned", n_fft=self.config.features,
                                win_length=self.config.window_length, hop_length=self.config.hop_length)

        @property
        def causal(self) -> bool:
            return True

        @property
        def supports_streaming(self) -> bool:
            return True

        @property
        def block_size(self) -> int:
            return self.config.hop_length

        @property
        def stream_delay(self) -> int:
            return framing.stream_delay(self.config.window_length, self.config.hop_length)

        def forward(self, x):
            win, hop = self.config.window_length, self.config.hop_length
            length = x.shape[-1]
            mono = torch.einsum("bct,c->bt", x, self.mix)  # [B, T]
            eye = torch.eye(win, dtype=x.dtype).reshape(win, 1, win)
            padded = framing.causal_pad(mono, win, hop)[:, None]  # [B, 1, L]
            frames = F.conv1d(padded, eye, stride=hop).transpose(1, 2)  # [B, F, win]
            features = self.analysis(frames).transpose(1, 2)  # [B, K, F]
            mask = torch.sigmoid(self.frame_conv(F.pad(features, (2, 0))))  # [B, K, F]
            out_frames = self.synthesis((features * mask).transpose(1, 2))  # [B, F, win]
            full = F.conv_transpose1d(out_frames.transpose(1, 2), eye, stride=hop)  # [B, 1, L]
            return framing.causal_crop(full, win, hop, length)[:, None]  # [B, 1, 1, T]

        def state_specs(self, batch_size: int):
            from speechkit.models.spec import StateSpec

            win, hop = self.config.window_length, self.config.hop_length
            return [
                StateSpec("analysis_buffer", framing.analysis_state_shape((batch_size,), win, hop)),
                StateSpec("frame_conv_cache", (batch_size, self.config.features, 2)),
                StateSpec("overlap_tail", framing.synthesis_state_shape((batch_size,), win, hop)),
            ]

        def forward_step(self, x_block, state):
            buffer, cache, tail = state
            mono = torch.einsum("bct,c->bt", x_block, self.mix)  # [B, hop]
            frame, buffer = framing.analysis_step(mono, buffer)  # [B, win]
            feature = self.analysis(frame)  # [B, K]
            window = torch.cat([cache, feature[:, :, None]], dim=-1)  # [B, K, 3]
            conv = (window * self.frame_conv.weight[:, 0, :]).sum(-1) + self.frame_conv.bias  # [B, K]
            out_frame = self.synthesis(feature * torch.sigmoid(conv))  # [B, win]
            out, tail = framing.overlap_add_step(out_frame, tail, self.config.hop_length)  # [B, hop]
            return out[:, None, None], [buffer, window[:, :, 1:], tail]  # [B, 1, 1, hop]

    TinyStreamer.config_class = config_class
    return TinyStreamer


def make_identity_onnx(path: Path, hop_length: int = 8, stream_delay: int = 0, sample_rate: int = 8000) -> Path:
    """An ONNX identity step graph with speechkit streaming metadata, built with onnx.helper (no torch).

    With ``stream_delay > 0`` the graph delays its input by that many samples through an explicit
    state (``state[1, 1, d]``), so its declared latency is ``hop + d``.
    """
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, hop_length])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, hop_length])
    inputs, outputs, nodes, state_names, state_shapes = [x], [y], [], [], []
    if stream_delay == 0:
        nodes.append(helper.make_node("Identity", ["x"], ["x_copy"]))
        source = "x_copy"
    else:
        state_names, state_shapes = ["delay_line"], [[1, 1, stream_delay]]
        inputs.append(helper.make_tensor_value_info("delay_line", TensorProto.FLOAT, [1, 1, stream_delay]))
        outputs.append(helper.make_tensor_value_info("delay_line_out", TensorProto.FLOAT, [1, 1, stream_delay]))
        total = stream_delay + hop_length
        constants = {
            "start_y": [0], "end_y": [hop_length], "start_s": [hop_length], "end_s": [total], "axis": [2],
        }
        for name, value in constants.items():
            nodes.append(helper.make_node("Constant", [], [name], value=helper.make_tensor(name + "_v", TensorProto.INT64, [1], value)))
        nodes.append(helper.make_node("Concat", ["delay_line", "x"], ["joined"], axis=2))
        nodes.append(helper.make_node("Slice", ["joined", "start_y", "end_y", "axis"], ["x_copy"]))
        nodes.append(helper.make_node("Slice", ["joined", "start_s", "end_s", "axis"], ["delay_line_out"]))
        source = "x_copy"
    nodes.append(helper.make_node("Constant", [], ["y_shape"], value=helper.make_tensor("y_shape_v", TensorProto.INT64, [4], [1, 1, 1, hop_length])))
    nodes.append(helper.make_node("Reshape", [source, "y_shape"], ["y"]))
    graph = helper.make_graph(nodes, "identity_step", inputs, outputs)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    metadata = {
        "speechkit_format": "speechkit-onnx/1", "speechkit_version": "test", "model_name": "identity",
        "task": "enhancement", "graph_kind": "streaming", "sample_rate": sample_rate, "block_size": hop_length,
        "hop_length": hop_length, "window": {}, "lookahead": stream_delay, "stream_delay": stream_delay,
        "algorithmic_latency": hop_length + stream_delay, "input_names": ["x", *state_names],
        "output_names": ["y", *[name + "_out" for name in state_names]], "input_shape": [1, 1, hop_length],
        "output_shape": [1, 1, 1, hop_length], "state_names": state_names, "state_shapes": state_shapes,
        "num_input_channels": 1, "num_sources": 1, "num_output_channels": 1, "config": {},
    }
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def random_signal(length: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Deterministic test audio ``[channels, length]``: a tone plus noise, float32."""
    rng = np.random.default_rng(seed)
    time = np.arange(length) / 8000.0
    tone = 0.3 * np.sin(2 * np.pi * 220.0 * time)
    return (tone + 0.1 * rng.standard_normal((channels, length))).astype(np.float32)
