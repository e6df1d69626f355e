"""Masks on stacked real/imag spectra: bounds, complex arithmetic, dual mask, gradients."""
from __future__ import annotations

import io
import warnings

import pytest
import torch

from speechkit.errors import ConfigError
from speechkit.frontend import (
    COMPLEX_MASK_KINDS,
    REAL_MASK_KINDS,
    apply_complex_mask,
    apply_dual_mask,
    apply_mask,
    apply_real_mask,
    bounded_complex_mask,
    bounded_real_mask,
    complex_conjugate,
    complex_multiply,
    magnitude,
)


def _as_complex(stacked: torch.Tensor) -> torch.Tensor:
    return torch.complex(stacked.select(-3, 0), stacked.select(-3, 1))


def _randn(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", [kind for kind in REAL_MASK_KINDS if kind != "unbounded"])
def test_real_masks_are_bounded(kind):
    raw = _randn(2, 1, 17, 9, scale=50.0)
    for max_value in (1.0, 2.0):
        mask = bounded_real_mask(raw, kind, max_value)
        assert mask.shape == raw.shape
        assert mask.min() >= 0.0 and mask.max() <= max_value
    assert bounded_real_mask(raw, "unbounded") is raw


def test_complex_mask_bounds_and_phase():
    raw = _randn(2, 1, 2, 17, 9, scale=30.0)
    raw_phase = torch.angle(_as_complex(raw))
    for max_magnitude in (1.0, 1.5):
        tanh_mask = bounded_complex_mask(raw, "tanh_magnitude", max_magnitude)
        assert magnitude(tanh_mask).max() <= max_magnitude + 1e-6
        clamped = bounded_complex_mask(raw, "clamped_magnitude", max_magnitude)
        assert magnitude(clamped).max() <= max_magnitude + 1e-6
        split = bounded_complex_mask(raw, "split_tanh", max_magnitude)
        assert split.abs().max() <= max_magnitude
        assert magnitude(split).max() <= 2**0.5 * max_magnitude
        for mask in (tanh_mask, clamped):  # magnitude-bounded kinds keep the phase of raw
            torch.testing.assert_close(torch.angle(_as_complex(mask)), raw_phase, atol=1e-5, rtol=0)
    # small raw values pass (almost) unchanged through the magnitude-preserving kinds
    small = _randn(1, 1, 2, 4, 3, scale=1e-3)
    torch.testing.assert_close(bounded_complex_mask(small, "clamped_magnitude"), small)
    torch.testing.assert_close(bounded_complex_mask(small, "tanh_magnitude"), small, atol=1e-8, rtol=1e-5)


def test_complex_multiply_matches_torch_complex_with_broadcasting():
    a = _randn(2, 3, 2, 5, 7, seed=1)
    b = _randn(1, 3, 2, 5, 1, seed=2)
    expected = _as_complex(a) * _as_complex(b)
    product = complex_multiply(a, b)
    assert product.shape == (2, 3, 2, 5, 7)
    torch.testing.assert_close(_as_complex(product), expected)
    torch.testing.assert_close(_as_complex(complex_conjugate(a)), _as_complex(a).conj().resolve_conj())
    torch.testing.assert_close(magnitude(a), _as_complex(a).abs())


def test_apply_masks_match_complex_arithmetic():
    spec = _randn(2, 1, 2, 9, 6, seed=3)
    real_mask = torch.rand(2, 1, 9, 6)
    complex_mask = _randn(2, 1, 2, 9, 6, seed=4)
    torch.testing.assert_close(_as_complex(apply_real_mask(spec, real_mask)), _as_complex(spec) * real_mask)
    expected = _as_complex(spec) * _as_complex(complex_mask)
    torch.testing.assert_close(_as_complex(apply_complex_mask(spec, complex_mask)), expected)
    torch.testing.assert_close(apply_mask(spec, real_mask), apply_real_mask(spec, real_mask))
    torch.testing.assert_close(apply_mask(spec, complex_mask), apply_complex_mask(spec, complex_mask))


def test_dual_mask_equations():
    mic, far_end = _randn(2, 1, 2, 9, 6, seed=5), _randn(2, 1, 2, 9, 6, seed=6)
    echo_mask = bounded_complex_mask(_randn(2, 1, 2, 9, 6, seed=7))
    speech_mask = bounded_complex_mask(_randn(2, 1, 2, 9, 6, seed=8), "split_tanh")
    result = apply_dual_mask(mic, far_end, echo_mask, speech_mask)
    echo = _as_complex(echo_mask) * _as_complex(far_end)
    near_end = _as_complex(speech_mask) * (_as_complex(mic) - echo)
    torch.testing.assert_close(_as_complex(result.echo_estimate), echo)
    torch.testing.assert_close(_as_complex(result.near_end), near_end)
    # real masks work too (the kind is decided by rank)
    real_echo, real_speech = torch.rand(2, 1, 9, 6), torch.rand(2, 1, 9, 6)
    real_result = apply_dual_mask(mic, far_end, real_echo, real_speech)
    expected = real_speech * (_as_complex(mic) - real_echo * _as_complex(far_end))
    torch.testing.assert_close(_as_complex(real_result.near_end), expected)


@pytest.mark.parametrize("kind", COMPLEX_MASK_KINDS)
def test_complex_mask_gradients_are_finite_even_at_zero(kind):
    raw = _randn(1, 1, 2, 8, 4, seed=9)
    raw[..., 0] = 0.0  # zero magnitude: the tanh/clamp of |raw| must not produce NaN gradients
    raw.requires_grad_(True)
    spec = _randn(1, 1, 2, 8, 4, seed=10)
    apply_complex_mask(spec, bounded_complex_mask(raw, kind)).pow(2).sum().backward()
    assert raw.grad is not None and torch.isfinite(raw.grad).all() and raw.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", REAL_MASK_KINDS)
def test_real_mask_gradients(kind):
    raw = _randn(1, 1, 8, 4, seed=11, scale=0.5).requires_grad_(True)
    spec = _randn(1, 1, 2, 8, 4, seed=12)
    apply_real_mask(spec, bounded_real_mask(raw, kind)).pow(2).sum().backward()
    assert torch.isfinite(raw.grad).all() and raw.grad.abs().sum() > 0


def test_invalid_kinds_and_shapes():
    with pytest.raises(ConfigError):
        bounded_real_mask(torch.zeros(3), "softmax")
    with pytest.raises(ConfigError):
        bounded_complex_mask(torch.zeros(1, 2, 3, 4), "polar")
    with pytest.raises(ConfigError):
        bounded_complex_mask(torch.zeros(1, 3, 3, 4))  # no size-2 real/imag axis
    with pytest.raises(ConfigError):
        complex_multiply(torch.zeros(1, 2, 3, 4), torch.zeros(1, 3, 3, 4))
    with pytest.raises(ConfigError):
        apply_mask(torch.zeros(1, 1, 2, 3, 4), torch.zeros(3, 4))


def test_masks_export_to_onnx():
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")

    class DualMask(torch.nn.Module):
        def forward(self, mic, far_end, raw_echo, raw_speech):
            echo_mask = bounded_complex_mask(raw_echo, "tanh_magnitude")
            speech_mask = bounded_complex_mask(raw_speech, "split_tanh")
            return apply_dual_mask(mic, far_end, echo_mask, speech_mask).near_end

    inputs = [_randn(1, 1, 2, 9, 5, seed=seed) for seed in range(4)]
    names = ["mic", "far_end", "raw_echo", "raw_speech"]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            DualMask(), tuple(inputs), buffer, dynamo=False, opset_version=17, input_names=names,
            output_names=["near_end"], dynamic_axes={name: {4: "frames"} for name in names},
        )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    longer = [_randn(1, 1, 2, 9, 13, seed=seed + 10) for seed in range(4)]
    (near_end,) = session.run(None, {name: tensor.numpy() for name, tensor in zip(names, longer)})
    torch.testing.assert_close(torch.from_numpy(near_end), DualMask()(*longer), atol=1e-5, rtol=0)
