"""STFT / ISTFT front-end: reconstruction, torch parity, backends, ONNX export, streaming."""
from __future__ import annotations

import io
import warnings

import pytest
import torch

from speechkit.errors import AudioError, ConfigError
from speechkit.frontend import ISTFT, STFT, STFTConfig, analysis_dft_kernel, stft_pair, synthesis_dft_kernel
from speechkit.frontend.framing import causal_num_frames

# (n_fft, hop_length, win_length, window): 75 % and 50 % overlap, odd n_fft, win_length < n_fft
COMBOS = [
    (64, 16, None, "hann"),
    (64, 32, None, "sqrt_hann"),
    (63, 16, None, "hamming"),
    (64, 16, 48, "blackman"),
    (32, 8, 24, "rectangular"),
]
PADDINGS = ["center", "causal"]
BACKENDS = ["torch", "conv"]


def _signal(batch: int, channels: int, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, channels, length, generator=generator)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("combo", COMBOS)
def test_perfect_reconstruction(combo, padding, backend):
    n_fft, hop_length, win_length, window = combo
    stft, istft = stft_pair(n_fft, hop_length, win_length, window, padding, backend)
    for length in (999, 1000):
        x = _signal(2, 3, length)
        spec = stft(x)
        assert spec.shape == (2, 3, 2, n_fft // 2 + 1, stft.num_frames(length))
        y = istft(spec, length)
        assert y.shape == x.shape
        assert istft(spec).shape[-1] == istft.default_length(spec.shape[-1])
        torch.testing.assert_close(y, x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_constant_center_padding_reconstructs_short_signals(backend):
    stft, istft = stft_pair(64, 16, padding="center", backend=backend, center_pad_mode="constant")
    x = _signal(1, 1, 20)  # shorter than n_fft // 2: reflect padding would be impossible
    torch.testing.assert_close(istft(stft(x), 20), x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("combo", COMBOS)
def test_center_matches_torch_stft_and_istft(combo, backend):
    n_fft, hop_length, win_length, window = combo
    stft, istft = stft_pair(n_fft, hop_length, win_length, window, "center", backend)
    x = _signal(2, 1, 777)
    window_tensor = STFTConfig(n_fft, hop_length, win_length, window).window_tensor()
    reference = torch.stft(
        x[:, 0], n_fft, hop_length, win_length, window_tensor, center=True, pad_mode="reflect", return_complex=True
    )
    expected = torch.stack([reference.real, reference.imag], dim=1).unsqueeze(1)  # [B, 1, 2, F, N]
    spec = stft(x)
    torch.testing.assert_close(spec, expected, atol=1e-5, rtol=0)
    # torch.istft's default length, an explicit one, and one beyond the last frame (zero-padded)
    complex_spec = torch.complex(spec[:, 0, 0], spec[:, 0, 1])
    # (torch.istft itself refuses lengths reaching where no window is, e.g. 850 with win_length < n_fft)
    for length in (None, 777) if win_length else (None, 777, 850):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns when it zero-pads past the last frame
            reference_signal = torch.istft(complex_spec, n_fft, hop_length, win_length, window_tensor, length=length)
        signal = istft(spec, length)[:, 0]
        torch.testing.assert_close(signal[:, :777], reference_signal[:, :777], atol=1e-6, rtol=0)
        # past the input the envelope can be tiny (last window tail), which amplifies rounding
        torch.testing.assert_close(signal, reference_signal, atol=1e-4, rtol=0)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("combo", COMBOS)
def test_backends_agree(combo, padding):
    n_fft, hop_length, win_length, window = combo
    torch_stft, torch_istft = stft_pair(n_fft, hop_length, win_length, window, padding, "torch")
    conv_stft, conv_istft = stft_pair(n_fft, hop_length, win_length, window, padding, "conv")
    x = _signal(2, 2, 901)
    spec = torch_stft(x)
    torch.testing.assert_close(conv_stft(x), spec, atol=1e-5, rtol=0)
    torch.testing.assert_close(conv_istft(spec, 901), torch_istft(spec, 901), atol=1e-5, rtol=0)
    torch.testing.assert_close(conv_istft(spec), torch_istft(spec), atol=1e-5, rtol=0)
    # a length reaching past the last frame: both backends zero-pad where no window reaches
    beyond = conv_istft.default_length(spec.shape[-1]) + 70
    torch.testing.assert_close(conv_istft(spec, beyond), torch_istft(spec, beyond), atol=1e-4, rtol=0)


def test_causal_frames_follow_framing_convention():
    n_fft, hop_length, win_length = 32, 8, 24
    stft = STFT(n_fft, hop_length, win_length, padding="causal", backend="conv")
    x = _signal(1, 1, 100)
    spec = stft(x)
    assert spec.shape[-1] == causal_num_frames(100, win_length, hop_length)
    # frame t is the DFT of samples [t*hop - (win - hop), t*hop + hop), windowed, zero-padded to n_fft
    padded = torch.nn.functional.pad(x[0, 0], (win_length - hop_length, 64))
    for frame_index in (0, 3, spec.shape[-1] - 1):
        frame = padded[frame_index * hop_length : frame_index * hop_length + win_length] * stft.window
        expected = torch.fft.rfft(frame, n=n_fft)
        torch.testing.assert_close(spec[0, 0, 0, :, frame_index], expected.real, atol=1e-6, rtol=0)
        torch.testing.assert_close(spec[0, 0, 1, :, frame_index], expected.imag, atol=1e-6, rtol=0)


def test_causal_output_does_not_depend_on_the_future():
    stft = STFT(64, 16, padding="causal", backend="conv")
    x = _signal(1, 1, 640)
    changed = x.clone()
    changed[..., 400:] += 1.0
    # frames up to the one ending at sample 400 are unchanged
    last_clean_frame = 400 // 16 - 1
    torch.testing.assert_close(stft(x)[..., : last_clean_frame + 1], stft(changed)[..., : last_clean_frame + 1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("combo", [(64, 16, None, "hann"), (64, 32, None, "sqrt_hann"), (64, 16, 48, "hamming")])
def test_streaming_equals_offline_causal(combo, backend):
    n_fft, hop_length, win_length, window = combo
    stft, istft = stft_pair(n_fft, hop_length, win_length, window, "causal", backend)
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        num_blocks = int(torch.randint(1, 40, (1,), generator=generator))
        length = num_blocks * hop_length
        x = _signal(2, 2, length, seed=num_blocks)
        offline_spec = stft(x)
        offline = istft(offline_spec, length)
        analysis_state = stft.initial_state(2, 2)
        synthesis_state = istft.initial_state(2, 2)
        frames, blocks = [], []
        for index in range(num_blocks):
            frame, analysis_state = stft.forward_step(x[..., index * hop_length : (index + 1) * hop_length], analysis_state)
            block, synthesis_state = istft.forward_step(frame, synthesis_state)
            frames.append(frame)
            blocks.append(block)
        streamed_spec = torch.cat(frames, dim=-1)
        streamed = torch.cat(blocks, dim=-1)
        assert streamed.shape == x.shape
        torch.testing.assert_close(streamed_spec, offline_spec[..., :num_blocks], atol=1e-6, rtol=0)
        delay = stft.stream_delay
        assert delay == (win_length or n_fft) - hop_length
        torch.testing.assert_close(streamed[..., delay:], offline[..., : length - delay], atol=1e-6, rtol=0)


def test_kernels_are_non_persistent_buffers():
    stft, istft = stft_pair(64, 16, backend="conv")
    assert dict(stft.state_dict()) == {} and dict(istft.state_dict()) == {}
    assert list(stft.parameters()) == [] and list(istft.parameters()) == []
    assert stft.double().kernel.dtype == torch.float64


def test_dft_kernels_match_rfft_and_irfft():
    n_fft = 16
    window = torch.hann_window(12, periodic=True, dtype=torch.float64)
    frame = torch.randn(12, dtype=torch.float64)
    analysis = analysis_dft_kernel(n_fft, window)
    assert analysis.shape == (2 * 9, 1, 12)
    expected = torch.fft.rfft(frame * window, n=n_fft)
    torch.testing.assert_close(analysis[:, 0] @ frame, torch.cat([expected.real, expected.imag]))
    spectrum = torch.randn(2 * 9, dtype=torch.float64)
    synthesis = synthesis_dft_kernel(n_fft, window)
    inverse = torch.fft.irfft(torch.complex(spectrum[:9], spectrum[9:]), n=n_fft)[:12] * window
    torch.testing.assert_close(synthesis[:, 0].T @ spectrum, inverse)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("padding", PADDINGS)
def test_gradient_flows(padding, backend):
    stft, istft = stft_pair(64, 16, padding=padding, backend=backend)
    x = _signal(1, 1, 500).requires_grad_(True)
    spec = stft(x)
    gain = torch.ones(1, requires_grad=True)
    loss = istft(spec * gain, 500).pow(2).sum() + spec.pow(2).mean()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert gain.grad is not None and gain.grad.abs() > 0


def test_invalid_configurations_and_inputs():
    with pytest.raises(ConfigError):
        STFT(64, 16, window="kaiser")
    with pytest.raises(ConfigError):
        STFT(64, 16, padding="same")
    with pytest.raises(ConfigError):
        STFT(64, 16, backend="numpy")
    with pytest.raises(ConfigError):
        STFT(64, 80)  # hop longer than the window
    with pytest.raises(ConfigError):
        ISTFT(64, 64, window="hann")  # hann without overlap: zero envelope at the frame edges
    assert STFT(64, 64, window="hann").num_frames(640) == 11  # analysis alone needs no NOLA
    with pytest.raises(ConfigError):
        STFT(64, 16).initial_state()  # streaming needs causal padding
    with pytest.raises(AudioError):
        STFT(64, 16)(torch.zeros(1, 100))
    with pytest.raises(AudioError):
        STFT(64, 16)(torch.zeros(1, 1, 20))  # too short to reflect-pad
    with pytest.raises(AudioError):
        ISTFT(64, 16)(torch.zeros(1, 1, 2, 30, 5))


# --------------------------------------------------------------------------- ONNX
class _RoundTrip(torch.nn.Module):
    def __init__(self, padding: str) -> None:
        super().__init__()
        self.stft, self.istft = stft_pair(64, 16, padding=padding, backend="conv")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spec = self.stft(x)
        return spec, self.istft(spec, x.shape[-1])


class _StreamStep(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stft, self.istft = stft_pair(64, 16, padding="causal", backend="conv")

    def forward(self, block, analysis_state, synthesis_state):
        frame, analysis_state = self.stft.forward_step(block, analysis_state)
        out, synthesis_state = self.istft.forward_step(frame, synthesis_state)
        return out, analysis_state, synthesis_state


def _export(module: torch.nn.Module, args: tuple, input_names, output_names, dynamic_axes) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
        )
    return buffer.getvalue()


ONNX_ATOL = 1e-5


@pytest.mark.parametrize("padding", PADDINGS)
def test_onnx_conv_stft_istft_matches_torch_on_new_length(padding):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    module = _RoundTrip(padding).eval()
    model = _export(
        module,
        (_signal(1, 2, 800),),
        ["x"],
        ["spec", "y"],
        {"x": {0: "batch", 2: "time"}, "spec": {0: "batch", 4: "frames"}, "y": {0: "batch", 2: "time"}},
    )
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    x = _signal(3, 2, 1237, seed=5)  # other batch size and length than at export
    spec, y = session.run(None, {"x": x.numpy()})
    expected_spec, expected_y = module(x)
    torch.testing.assert_close(torch.from_numpy(spec), expected_spec, atol=ONNX_ATOL, rtol=0)
    torch.testing.assert_close(torch.from_numpy(y), expected_y, atol=ONNX_ATOL, rtol=0)
    torch.testing.assert_close(torch.from_numpy(y), x, atol=ONNX_ATOL, rtol=0)


def test_onnx_conv_istft_alone_has_dynamic_frames():
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    istft = ISTFT(64, 16, backend="conv").eval()
    model = _export(istft, (torch.randn(1, 1, 2, 33, 20),), ["spec"], ["y"], {"spec": {0: "b", 4: "n"}, "y": {0: "b", 2: "t"}})
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    spec = STFT(64, 16, backend="conv")(_signal(2, 1, 1111))
    (y,) = session.run(None, {"spec": spec.numpy()})
    torch.testing.assert_close(torch.from_numpy(y), istft(spec), atol=ONNX_ATOL, rtol=0)


def test_onnx_streaming_step_matches_torch():
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    module = _StreamStep().eval()
    analysis_state = module.stft.initial_state(1, 1)
    synthesis_state = module.istft.initial_state(1, 1)
    model = _export(
        module,
        (torch.zeros(1, 1, 16), analysis_state, synthesis_state),
        ["block", "analysis_state", "synthesis_state"],
        ["out", "new_analysis_state", "new_synthesis_state"],
        None,
    )
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    x = _signal(1, 1, 16 * 12)
    onnx_states = [analysis_state.numpy(), synthesis_state.numpy()]
    torch_states = [analysis_state, synthesis_state]
    for index in range(12):
        block = x[..., index * 16 : (index + 1) * 16]
        out, *onnx_states = session.run(
            None, {"block": block.numpy(), "analysis_state": onnx_states[0], "synthesis_state": onnx_states[1]}
        )
        expected, *torch_states = module(block, *torch_states)
        torch.testing.assert_close(torch.from_numpy(out), expected, atol=ONNX_ATOL, rtol=0)
