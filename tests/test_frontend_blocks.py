"""Band split / merge, magnitude compression and the one real mask activation (speechkit.frontend)."""
from __future__ import annotations

import pytest
import torch

from speechkit.errors import ConfigError
from speechkit.frontend import (
    MASK_ACTIVATIONS,
    BandMerge,
    BandSplit,
    bands_from_hz,
    bands_from_widths,
    bounded_real_mask,
    check_bands,
    compress_spectrum,
    decompress_spectrum,
)
from speechkit.frontend.masks import magnitude


def test_bands_from_hz_cover_every_bin_exactly_once() -> None:
    bands = bands_from_hz([250, 500, 1000, 2000, 4000], sample_rate=16000, n_fft=512)
    covered = [index for start, end in bands for index in range(start, end)]
    assert covered == list(range(257))  # every bin once, in order
    assert bands[0] == (0, 8) and bands[-1] == (128, 257)
    with pytest.raises(ConfigError, match="empty or unordered"):
        bands_from_hz([100, 101], sample_rate=16000, n_fft=64)  # both edges on bin 0
    with pytest.raises(ConfigError, match="ends at bin|end at bin"):
        bands_from_widths([4, 4], num_freqs=9)
    with pytest.raises(ConfigError, match="contiguous"):
        check_bands([(0, 4), (5, 9)], 9)


def test_band_split_shapes_locality_and_merge() -> None:
    torch.manual_seed(0)
    bands = bands_from_widths([2, 3, 4, 8], num_freqs=17)
    split, merge = BandSplit(bands, 17, features=6), BandMerge(bands, 17, features=6, out_channels=4)
    spec = torch.randn(2, 2, 17, 5)
    features = split(spec)
    assert features.shape == (2, 6, 4, 5)  # [B, N, n_bands, T]
    assert merge(features).shape == (2, 4, 17, 5)  # [B, out, F, T]
    changed = spec.clone()
    changed[:, :, 2:5] += 1.0  # only band 1 (bins 2..4) changes
    moved = (split(changed) - features).abs().sum(dim=(0, 1, 3))  # [n_bands]
    assert moved[1] > 0 and moved[[0, 2, 3]].abs().max() == 0
    per_frame = split(spec[..., :3])  # frame-local: a shorter input gives the same first frames
    torch.testing.assert_close(per_frame, features[..., :3])
    with pytest.raises(ConfigError, match="BandSplit expects"):
        split(torch.randn(2, 2, 16, 5))


@pytest.mark.parametrize(("alpha", "beta"), [(0.5, 0.15), (0.3, 1.0), (1.0, 1.0)])
def test_compression_inverse_is_exact(alpha: float, beta: float) -> None:
    spec = torch.randn(2, 3, 2, 33, 7, dtype=torch.float64) * torch.logspace(-4, 1, 7, dtype=torch.float64)
    spec[0, 0, :, 0, 0] = 0.0  # a zero bin stays zero and finite
    compressed = compress_spectrum(spec, alpha, beta)
    expected = beta * magnitude(spec) ** alpha
    torch.testing.assert_close(magnitude(compressed), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(decompress_spectrum(compressed, alpha, beta), spec, rtol=1e-10, atol=1e-14)
    single = spec.float()
    torch.testing.assert_close(decompress_spectrum(compress_spectrum(single, alpha, beta), alpha, beta), single,
                               rtol=1e-5, atol=1e-7)
    with pytest.raises(ConfigError, match="alpha > 0"):
        compress_spectrum(spec, 0.0, beta)


def test_one_mask_activation_covers_the_conv_tasnet_kinds() -> None:
    from speechkit.models.conv_tasnet import MASK_ACTIVATIONS as CONV_TASNET_KINDS

    assert set(CONV_TASNET_KINDS) <= set(MASK_ACTIVATIONS)
    score = torch.randn(2, 3, 4, 5)  # [B, S, N, F]
    torch.testing.assert_close(bounded_real_mask(score, "softmax", source_dim=1).sum(dim=1), torch.ones(2, 4, 5))
    assert torch.equal(bounded_real_mask(score, "sigmoid"), torch.sigmoid(score))
    assert torch.equal(bounded_real_mask(score, "relu"), torch.relu(score))
    assert bounded_real_mask(score, "linear") is score
    with pytest.raises(ConfigError, match="source axis"):
        bounded_real_mask(score, "softmax")
