"""SGMSE+ quality and speed per sampler setting, beside the bundled enhancer (issue 20).

One SGMSE+ checkpoint runs once per sampler setting (by default the predictor-corrector sampler
with N = 5, 10, 30 and 50 steps and the probability-flow ODE with N = 30; ``--settings pc:5 ode:30``),
every run with the same ``seed``, and the bundled enhancer runs beside it, on the first
``--per-group`` items of each noisy group of the held-out real-world set of
``bench.compare_realworld`` (test-split speakers, held-out noise files, 4-second items; the set the
bundled enhancer is judged on; written on first use from ``--corpus-root``). The clean group is left
out: its input SI-SDR is unbounded.

Scoring, cost and ``--reuse`` are those of ``bench.compare_array_enhancers`` (a single-channel set is an
array of one microphone): SI-SDR, SI-SDRi, output level against the target, PESQ-WB, ESTOI and
DNSMOS P.835 overall and per group; real-time factor and CPU seconds per audio second of the
file pipeline on the benchmark's threads; multiply-accumulates per second of one whole sampler run,
counted on ``--mac-seconds`` of audio (default 1.008 s = 127 frames, padded to 128).

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.compare_sgmse_steps --model releases/NAME/best.safetensors

The sampler is the expensive part (the ``small`` preset needs about 0.56 CPU seconds per network
evaluation per audio second; N = 50 with one corrector step is 100 evaluations): split the settings
over processes with ``--settings`` and ``--out``, then run once more with ``--reuse`` naming every
partial report to assemble the table without scoring anything again. Writes
``bench/results/compare_sgmse_steps.{json,md}`` by default.
"""
from __future__ import annotations

import bench.one_thread  # noqa: F401 - one thread unless the caller says otherwise, before torch loads

import argparse  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

from bench import compare_array_enhancers, compare_realworld  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
#: the issue's table: predictor-corrector with these step counts, then the probability-flow ODE
DEFAULT_SETTINGS = ("pc:5", "pc:10", "pc:30", "pc:50", "ode:30")
NOISY_GROUPS = tuple(group for group in compare_realworld.GROUPS if group != "clean")


def setting_options(setting: str) -> str:
    """``"pc:10"`` -> ``"sampler=pc,steps=10"`` (the model-string options of ``bench.compare_separators.load_model``);
    the ``type`` of ``--settings``."""
    sampler, _, steps = setting.partition(":")
    if sampler not in ("pc", "ode") or not steps.isdigit() or int(steps) < 1:
        raise argparse.ArgumentTypeError(f"a setting is SAMPLER:STEPS with SAMPLER pc or ode (got {setting!r})")
    return f"sampler={sampler},steps={int(steps)}"


def group_sets(corpus_root: Path, cache_root: Path) -> list[Path]:
    """The fixed-set folders of the noisy groups of the held-out real-world set (written on first use)."""
    every_group = compare_realworld.group_folders(compare_realworld.DEFAULT_ITEMS, cache_root)
    folders = [every_group[group] for group in NOISY_GROUPS]
    if not all((folder / "index.json").is_file() for folder in folders):
        compare_realworld.realworld_set(compare_realworld.DEFAULT_ITEMS, corpus_root, cache_root)
    return folders


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="an SGMSE+ checkpoint (path or bundled name)")
    parser.add_argument("--settings", nargs="+", type=setting_options,
                        default=[setting_options(setting) for setting in DEFAULT_SETTINGS],
                        metavar="SAMPLER:STEPS",
                        help=f"sampler settings (default: {' '.join(DEFAULT_SETTINGS)})")
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed (every setting)")
    parser.add_argument("--baseline", nargs="*", default=["conv_tasnet_enhance_16k"],
                        help="models run beside it (default: the bundled enhancer; none: no baseline row)")
    parser.add_argument("--per-group", type=int, default=2, help="items per noisy group")
    parser.add_argument("--corpus-root", type=Path, default=compare_realworld.DEFAULT_CORPUS_ROOT,
                        help="corpus cache the held-out set is written from on first use")
    parser.add_argument("--cache-root", type=Path, default=Path("data_cache"), help="where the fixed sets live")
    parser.add_argument("--mac-seconds", type=float, default=1.008, help="input length of the MAC count")
    parser.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS (it needs speechmos)")
    parser.add_argument("--out", type=Path, default=RESULTS / "compare_sgmse_steps.json")
    parser.add_argument("--reuse", type=Path, nargs="+", default=None, help="earlier (partial) reports to copy rows from")
    args = parser.parse_args(argv)  # --settings arrive as model options ("sampler=pc,steps=10")
    from speechkit.errors import SpeechkitError

    try:
        folders = group_sets(args.corpus_root, args.cache_root)
    except SpeechkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    models = [*args.baseline, *(f"{args.model}#{option},seed={args.seed}" for option in args.settings)]
    forwarded = ["--models", *models, "--test-set", *map(str, folders), "--limit", str(args.per_group),
                 "--mac-seconds", str(args.mac_seconds), "--out", str(args.out),
                 "--title", "SGMSE+ sampler settings on the held-out real-world set",
                 "--note", f"Items: the first {args.per_group} of each noisy group of the held-out real-world set "
                           "(bench.compare_realworld: test-split speakers, held-out noise files, 4 s); per-group "
                           "means rest on that many items.",
                 "--note", "SGMSE+ rows: MODEL#sampler=pc|ode,steps=N,seed=S; pc = reverse-diffusion predictor plus "
                           "one annealed Langevin corrector step (the model's snr): 2N network evaluations; ode = N Euler "
                           "steps of the probability-flow ODE: N evaluations."]
    if args.no_dnsmos:
        forwarded.append("--no-dnsmos")
    if args.reuse:
        forwarded += ["--reuse", *map(str, args.reuse)]
    return compare_array_enhancers.main(forwarded)


if __name__ == "__main__":
    raise SystemExit(main())
