"""Time-frequency masks on stacked real/imaginary spectra, without complex dtypes.

Spectra follow the speechkit layout ``[..., 2, F, N]`` (real and imaginary parts in the size-2
axis, third from the end). Real masks have shape ``[..., F, N]`` (no size-2 axis) and scale both
parts; complex masks have the spectrum layout ``[..., 2, F, N]`` and multiply as complex numbers.
Every function uses only real tensor ops, so it exports to ONNX and works on any device.

Echo cancellation with two masks (:func:`apply_dual_mask`)::

    echo_estimate = M_e * far_end
    near_end = M_s * (mic - echo_estimate)
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..errors import ConfigError

#: bounded real mask kinds of :func:`bounded_real_mask` (values in ``[0, max_value]``; "unbounded": none)
REAL_MASK_KINDS = ("sigmoid", "clamped_relu", "hard_sigmoid", "unbounded")
#: every activation :func:`bounded_real_mask` implements: the bounded kinds plus the classic mask
#: nonlinearities ``"relu"`` (``>= 0``), ``"tanh"``, ``"softmax"`` (across sources) and ``"linear"``
MASK_ACTIVATIONS = (*REAL_MASK_KINDS, "relu", "tanh", "softmax", "linear")
#: kinds accepted by :func:`bounded_complex_mask`
COMPLEX_MASK_KINDS = ("tanh_magnitude", "split_tanh", "clamped_magnitude", "unbounded")

#: the real/imaginary axis of a stacked spectrum ``[..., 2, F, N]``
COMPLEX_DIM = -3


def _check_stacked(tensor: torch.Tensor, name: str, dim: int = COMPLEX_DIM) -> None:
    if tensor.dim() < -dim or tensor.shape[dim] != 2:
        raise ConfigError(
            f"{name} must have real/imaginary parts stacked in a size-2 axis at dim {dim}, "
            f"got shape {tuple(tensor.shape)}"
        )


def real_part(spec: torch.Tensor, dim: int = COMPLEX_DIM) -> torch.Tensor:
    """The real part of a stacked spectrum: ``[..., 2, F, N] -> [..., F, N]``."""
    return spec.select(dim, 0)


def imag_part(spec: torch.Tensor, dim: int = COMPLEX_DIM) -> torch.Tensor:
    """The imaginary part of a stacked spectrum: ``[..., 2, F, N] -> [..., F, N]``."""
    return spec.select(dim, 1)


def stack_complex(real: torch.Tensor, imag: torch.Tensor, dim: int = COMPLEX_DIM) -> torch.Tensor:
    """Stack real and imaginary parts: ``[..., F, N]`` twice -> ``[..., 2, F, N]``."""
    return torch.stack([real, imag], dim=dim)


def magnitude(spec: torch.Tensor, eps: float = 0.0, dim: int = COMPLEX_DIM) -> torch.Tensor:
    """``sqrt(re^2 + im^2 + eps)``: ``[..., 2, F, N] -> [..., F, N]``.

    Use ``eps > 0`` (e.g. 1e-8) where gradients must stay finite at zero.
    """
    return (spec.pow(2).sum(dim=dim) + eps).sqrt()


def complex_conjugate(spec: torch.Tensor, dim: int = COMPLEX_DIM) -> torch.Tensor:
    """Complex conjugate of a stacked spectrum (same shape)."""
    return stack_complex(real_part(spec, dim), -imag_part(spec, dim), dim)


def complex_multiply(a: torch.Tensor, b: torch.Tensor, dim: int = COMPLEX_DIM) -> torch.Tensor:
    """Complex product of two stacked tensors ``[..., 2, F, N]`` (broadcasting like ``*``)."""
    _check_stacked(a, "complex_multiply's first argument", dim)
    _check_stacked(b, "complex_multiply's second argument", dim)
    a_real, a_imag = real_part(a, dim), imag_part(a, dim)
    b_real, b_imag = real_part(b, dim), imag_part(b, dim)
    return stack_complex(a_real * b_real - a_imag * b_imag, a_real * b_imag + a_imag * b_real, dim)


def bounded_real_mask(
    raw: torch.Tensor, kind: str = "sigmoid", max_value: float = 1.0, source_dim: int | None = None
) -> torch.Tensor:
    """The one real mask activation: network outputs -> a real mask (same shape).

    Bounded kinds (values in ``[0, max_value]``): ``"sigmoid"`` ``max_value * sigmoid(raw)``;
    ``"clamped_relu"`` ``clamp(raw, 0, max_value)``; ``"hard_sigmoid"`` ``max_value *
    clamp(raw / 6 + 1/2, 0, 1)``. Other kinds (``max_value`` unused): ``"relu"``, ``"tanh"``,
    ``"softmax"`` across the sources at ``source_dim`` (required for it), and ``"unbounded"`` /
    ``"linear"``, which return ``raw`` unchanged.
    """
    if kind == "sigmoid":
        return torch.sigmoid(raw) if max_value == 1.0 else max_value * torch.sigmoid(raw)
    if kind == "clamped_relu":
        return raw.clamp(0.0, max_value)
    if kind == "hard_sigmoid":
        return max_value * F.hardsigmoid(raw)
    if kind in ("unbounded", "linear"):
        return raw
    if kind == "relu":
        return torch.relu(raw)
    if kind == "tanh":
        return torch.tanh(raw)
    if kind == "softmax" and source_dim is not None:
        return torch.softmax(raw, dim=source_dim)
    if kind == "softmax":
        raise ConfigError("a softmax mask needs the source axis (source_dim) to normalise across")
    raise ConfigError(f"unknown real mask kind {kind!r} (known: {', '.join(MASK_ACTIVATIONS)})")


def bounded_complex_mask(
    raw: torch.Tensor,
    kind: str = "tanh_magnitude",
    max_magnitude: float = 1.0,
    eps: float = 1e-8,
    dim: int = COMPLEX_DIM,
) -> torch.Tensor:
    """Map unbounded network outputs ``[..., 2, F, N]`` to a bounded complex mask (same shape).

    Kinds:

    * ``"tanh_magnitude"`` (DCCRN-E style): keeps the phase of ``raw`` and maps its magnitude
      ``m`` to ``max_magnitude * tanh(m)``, so ``|mask| < max_magnitude``.
    * ``"split_tanh"``: ``max_magnitude * tanh`` on the real and imaginary parts separately, so
      each part is in ``(-max_magnitude, max_magnitude)`` and ``|mask| < sqrt(2) * max_magnitude``.
    * ``"clamped_magnitude"``: ``raw`` scaled down where its magnitude exceeds ``max_magnitude``.
    * ``"unbounded"``: ``raw`` unchanged.

    ``eps`` keeps the magnitude's gradient finite at zero.
    """
    _check_stacked(raw, "a complex mask", dim)
    if kind == "split_tanh":
        return max_magnitude * torch.tanh(raw)
    if kind == "unbounded":
        return raw
    raw_magnitude = magnitude(raw, eps, dim).unsqueeze(dim)  # [..., 1, F, N]
    if kind == "tanh_magnitude":
        return raw * (max_magnitude * torch.tanh(raw_magnitude) / raw_magnitude)
    if kind == "clamped_magnitude":
        return raw * (max_magnitude / raw_magnitude).clamp(max=1.0)
    raise ConfigError(f"unknown complex mask kind {kind!r} (known: {', '.join(COMPLEX_MASK_KINDS)})")


def sum_to_one_complex_masks(masks: torch.Tensor, source_dim: int, dim: int = COMPLEX_DIM) -> torch.Tensor:
    """Mixture consistency in the mask domain: shift ``S`` complex masks so they sum to ``1 + 0j``.

    ``masks`` holds one stacked complex mask per source along ``source_dim`` (the real/imag axis
    at ``dim``); each real part moves by ``-(sum of real parts - 1) / S`` and each imaginary part
    by ``-(sum of imaginary parts) / S``, so the masked sources add up to the mixture (TIGER).
    """
    _check_stacked(masks, "the masks", dim)
    source_axis, complex_axis = source_dim % masks.dim(), dim % masks.dim()
    count = masks.shape[source_axis]
    real, imag = real_part(masks, dim), imag_part(masks, dim)  # the complex axis removed
    summed_axis = source_axis - 1 if source_axis > complex_axis else source_axis
    real = real - (real.sum(dim=summed_axis, keepdim=True) - 1.0) / count
    imag = imag - imag.sum(dim=summed_axis, keepdim=True) / count
    return stack_complex(real, imag, dim)


def apply_real_mask(spec: torch.Tensor, mask: torch.Tensor, dim: int = COMPLEX_DIM) -> torch.Tensor:
    """Scale both parts of ``spec [..., 2, F, N]`` by a real ``mask [..., F, N]`` (broadcasting)."""
    _check_stacked(spec, "the spectrum", dim)
    return spec * mask.unsqueeze(dim)  # [..., 2, F, N]


def apply_complex_mask(spec: torch.Tensor, mask: torch.Tensor, dim: int = COMPLEX_DIM) -> torch.Tensor:
    """Multiply ``spec [..., 2, F, N]`` by a complex ``mask [..., 2, F, N]`` (broadcasting)."""
    return complex_multiply(mask, spec, dim)


def apply_mask(spec: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Apply a real ``[..., F, N]`` or complex ``[..., 2, F, N]`` mask to ``spec [..., 2, F, N]``.

    The kind is decided by rank: a mask with as many dimensions as ``spec`` is complex, one with
    one dimension fewer is real.
    """
    if mask.dim() == spec.dim():
        return apply_complex_mask(spec, mask)
    if mask.dim() == spec.dim() - 1:
        return apply_real_mask(spec, mask)
    raise ConfigError(
        f"a mask for a spectrum of shape {tuple(spec.shape)} must have {spec.dim()} (complex) or "
        f"{spec.dim() - 1} (real) dimensions, got shape {tuple(mask.shape)}"
    )


class DualMaskOutput(NamedTuple):
    """Result of :func:`apply_dual_mask` (both ``[..., 2, F, N]``)."""

    near_end: torch.Tensor
    echo_estimate: torch.Tensor


def apply_dual_mask(
    mic: torch.Tensor,
    far_end: torch.Tensor,
    echo_mask: torch.Tensor,
    speech_mask: torch.Tensor,
) -> DualMaskOutput:
    """Joint echo and noise suppression with two masks.

    ``echo_estimate = echo_mask * far_end`` (a complex echo mask can rotate phase and so
    compensate the echo-path delay within a frame), then
    ``near_end = speech_mask * (mic - echo_estimate)``.

    Args:
        mic: microphone spectrum ``[..., 2, F, N]``.
        far_end: far-end (loudspeaker reference) spectrum ``[..., 2, F, N]``.
        echo_mask: real ``[..., F, N]`` or complex ``[..., 2, F, N]`` mask (see :func:`apply_mask`).
        speech_mask: real or complex mask applied to the echo-removed microphone spectrum.

    Returns:
        ``DualMaskOutput(near_end, echo_estimate)``.
    """
    echo_estimate = apply_mask(far_end, echo_mask)
    near_end = apply_mask(mic - echo_estimate, speech_mask)
    return DualMaskOutput(near_end=near_end, echo_estimate=echo_estimate)


__all__ = [
    "COMPLEX_DIM",
    "COMPLEX_MASK_KINDS",
    "DualMaskOutput",
    "MASK_ACTIVATIONS",
    "REAL_MASK_KINDS",
    "apply_complex_mask",
    "apply_dual_mask",
    "apply_mask",
    "apply_real_mask",
    "bounded_complex_mask",
    "bounded_real_mask",
    "complex_conjugate",
    "complex_multiply",
    "imag_part",
    "magnitude",
    "real_part",
    "stack_complex",
    "sum_to_one_complex_masks",
]
