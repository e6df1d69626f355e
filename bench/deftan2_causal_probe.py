"""Why causal DeFTAN-II started near silence: fit one fixed batch, watch loss, SI-SDR and level (issue 17).

Trained on the PCM loss alone, ``small_causal`` sat near silence (validation output level about
-40 dB) for its first 750 steps while ``small`` learned. This probe fits two 1-s, 4-microphone
items of a fixed set (items 0 and 1 of ``--fixed-set``, seconds 1-2) with Adam (lr 1e-3) for
``--steps`` steps from the seed-0 initialisation (or ``--init`` weights) and prints every 20 steps:
loss, SI-SDR (dB) and output level against the target (dB). ``--si-sdr-weight`` /
``--snr-weight`` add those negative metrics (dB) to the PCM loss. ``--variant`` changes causal
components (joined with ``+``); diagnostics, not model options:

* ``frame_norms_global``: the causal group norms take whole-signal statistics (non-causal);
* ``frame_norms_cumulative`` / ``frame_norms_per_frame``: they take the statistics of every frame
  so far (cLN; the ``small_causal`` preset's ``causal_norm`` since 2026-12-06) / of each frame
  alone (the preset before);
* ``attention_offline``: the T-attention becomes the offline linear attention (non-causal);
* ``level_global``: the input level is one RMS over the whole signal instead of cumulative.

    OMP_NUM_THREADS=1 PYTHONPATH=. python -m bench.deftan2_causal_probe --preset small
    OMP_NUM_THREADS=1 PYTHONPATH=. python -m bench.deftan2_causal_probe --preset small_causal \\
        --variant frame_norms_per_frame --si-sdr-weight 0.01 --snr-weight 0.01

About 3-4 s per step with one thread. Nothing is written; the numbers are in
``recipes/multichannel/README.md``.
"""
from __future__ import annotations

import bench.one_thread  # noqa: F401 - one thread unless the caller says otherwise, before torch loads

import argparse  # noqa: E402
import json  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

VARIANTS = ("frame_norms_global", "frame_norms_cumulative", "frame_norms_per_frame", "attention_offline", "level_global")


def fixed_batch(folder: Path, seconds: tuple[float, float] = (1.0, 2.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """Items 0 and 1 of a fixed array set, cut to ``seconds``: mixture ``[2, M, T]``, target ``[2, 1, 1, T]``."""
    items = [json.loads(line) for line in (folder / "items.jsonl").read_text().splitlines()[:2]]
    mixtures, targets = [], []
    for item in items:
        mixture, rate = sf.read(folder / item["tensors"]["mixture"]["file"], dtype="float32", always_2d=True)
        target, _ = sf.read(folder / item["tensors"]["targets"]["file"], dtype="float32", always_2d=True)
        start, stop = int(seconds[0] * rate), int(seconds[1] * rate)
        mixtures.append(mixture.T[:, start:stop])  # [M, T]
        targets.append(target[start:stop, 0])  # [T]
    return torch.from_numpy(np.stack(mixtures)), torch.from_numpy(np.stack(targets))[:, None, None]


def apply_variant(model: torch.nn.Module, variant: str) -> None:
    """Make one causal component of ``model`` non-causal (or rescale its level), in place."""
    from speechkit.nn.linear_attention import EfficientLinearAttention
    from speechkit.nn.split_dense import SingleGroupNorm

    if variant == "frame_norms_global":
        for module in model.modules():
            if isinstance(module, SingleGroupNorm):
                module.time_statistics = "all"
    elif variant in ("frame_norms_cumulative", "frame_norms_per_frame"):
        for module in model.modules():
            if isinstance(module, SingleGroupNorm) and module.time_statistics != "all":
                module.time_statistics = "cumulative" if variant == "frame_norms_cumulative" else "frame"
    elif variant == "attention_offline":
        for module in model.modules():
            if isinstance(module, EfficientLinearAttention):
                module.causal = False
    elif variant == "level_global":
        def normalise(spec: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            scale = spec.pow(2).mean(dim=(1, 2, 3, 4), keepdim=True).sqrt()  # [B, 1, 1, 1, 1]
            scale = (scale / model.spectral_level_gain).clamp_min(1e-8)  # in time-domain units, as the model's
            return spec / scale, scale.expand(-1, -1, -1, -1, spec.shape[-1]), state

        model._normalise = normalise
    else:
        raise SystemExit(f"unknown variant {variant!r} (known: {', '.join(VARIANTS)})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small_causal")
    parser.add_argument("--variant", default="", help=f"'+'-joined: {', '.join(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--si-sdr-weight", type=float, default=0.0,
                        help="add this weight x negative SI-SDR (dB) to the PCM loss")
    parser.add_argument("--snr-weight", type=float, default=0.0,
                        help="add this weight x negative SNR (dB, scale-dependent) to the PCM loss")
    parser.add_argument("--init", type=Path, default=None, help="start from these weights (same parameter shapes)")
    parser.add_argument("--fixed-set", type=Path, default=Path("data_cache/fixed/array_4ch_16k/validation"))
    args = parser.parse_args(argv)

    import speechkit
    from recipes.training.objectives import build_objective
    from speechkit import metrics

    mixture, target = fixed_batch(args.fixed_set)
    terms = [{"name": "complex_spectral_mapping", "n_fft": 512, "hop_length": 256, "magnitude_weight": 0.0,
              "noise_weight": 0.5}]
    if args.si_sdr_weight:
        terms.append({"name": "si_sdr", "weight": args.si_sdr_weight})
    if args.snr_weight:
        terms.append({"name": "snr", "weight": args.snr_weight})
    objective = build_objective({"name": "combination", "terms": terms})
    torch.manual_seed(0)
    model = speechkit.build_model("deftan2", args.preset)
    if args.init is not None:
        from safetensors.torch import load_file

        from speechkit.checkpoint import load_state_dict_strict
        load_state_dict_strict(model, load_file(str(args.init), device="cpu"), str(args.init))
    for variant in filter(None, args.variant.split("+")):
        apply_variant(model, variant)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(args.steps + 1):
        estimate = model(mixture)  # [2, 1, 1, T]
        loss = objective.loss(estimate, {"mixture": mixture, "targets": target})
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 20 == 0:
            estimate = estimate.detach().double()
            print(f"{args.preset} {args.variant or '-'} step {step}: loss {loss.item():.4f}, "
                  f"SI-SDR {metrics.si_sdr(estimate, target.double()).mean().item():.2f} dB, "
                  f"level {metrics.relative_level_db(estimate, target.double()).mean().item():.1f} dB", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
