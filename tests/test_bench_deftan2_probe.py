"""bench/deftan2_causal_probe.py: each diagnostic variant changes exactly the causal component it names."""
from __future__ import annotations

import pytest
import torch

import speechkit
from bench import deftan2_causal_probe as probe
from speechkit.nn.linear_attention import EfficientLinearAttention
from speechkit.nn.split_dense import SingleGroupNorm


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return speechkit.build_model("deftan2", "tiny_causal").eval()


def test_variants_make_their_component_non_causal_and_leave_the_rest() -> None:
    mixture = 0.1 * torch.randn(1, 4, 1600)
    reference = _model()(mixture)
    norms = _model()
    probe.apply_variant(norms, "frame_norms_global")
    assert {module.time_statistics for module in norms.modules() if isinstance(module, SingleGroupNorm)} == {"all"}
    def causal_attention(model: torch.nn.Module) -> list[bool]:
        return [module.causal for module in model.modules() if isinstance(module, EfficientLinearAttention)]

    assert causal_attention(norms) == causal_attention(_model()) and any(causal_attention(norms))
    attention = _model()
    probe.apply_variant(attention, "attention_offline")
    assert not any(causal_attention(attention))
    for variant in ("frame_norms_global", "frame_norms_per_frame", "attention_offline", "level_global"):
        model = _model()
        probe.apply_variant(model, variant)
        assert not torch.allclose(model(mixture), reference)
    with pytest.raises(SystemExit, match="unknown variant"):
        probe.apply_variant(_model(), "causal_framing")

