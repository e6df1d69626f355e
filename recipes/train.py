"""Train a recipe: ``python -m recipes.train CONFIG [--resume] [key.sub=value ...]``.

Single process::

    python -m recipes.train recipes/configs/enhance_causal_16k.yaml
    python -m recipes.train recipes/configs/enhance_causal_16k.yaml --resume      # continue
    python -m recipes.train recipes/configs/enhance_causal_16k.yaml max_steps=200 optim.lr=5e-4

Several processes (DistributedDataParallel; gloo on CPU, NCCL on GPUs)::

    torchrun --nproc_per_node 2 -m recipes.train recipes/configs/enhance_causal_16k.yaml

SIGTERM/SIGINT save the full state at the end of the current step; ``--resume`` continues from it.
This module also holds the config-friendly data factories the recipe configs name
(``recipes.train:minicorpus_enhancement``, ``recipes.train:fixed_minicorpus`` ...), which turn plain keyword arguments into the
datasets of :mod:`recipes.data`.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset, Subset

from speechkit.errors import ConfigError, SpeechkitError

EXIT_INTERRUPTED = 130


# --------------------------------------------------------------------------------------- data factories
def _enhancement_config(
    sample_rate: int,
    segment_seconds: float,
    snr_range_db: tuple[float, float],
    level_range_db: tuple[float, float],
    reverb_probability: float,
) -> Any:
    from recipes.data.datasets import EnhancementConfig, ReverbConfig

    return EnhancementConfig(
        sample_rate=int(sample_rate),
        segment_seconds=float(segment_seconds),
        snr_range_db=tuple(float(value) for value in snr_range_db),
        level_range_db=tuple(float(value) for value in level_range_db),
        reverb=ReverbConfig(probability=float(reverb_probability)),
    )


def minicorpus_enhancement(
    split: str = "train",
    sample_rate: int = 16000,
    segment_seconds: float = 4.0,
    length: int = 10000,
    seed: int = 0,
    snr_range_db: tuple[float, float] = (-5.0, 15.0),
    level_range_db: tuple[float, float] = (-35.0, -15.0),
    reverb_probability: float = 0.0,
    include_band_limited: bool = False,
    procedural_noise: bool = False,
) -> Dataset:
    """Dynamic-mixing denoising dataset over one split of the mini corpus (``../shared/data``).

    ``procedural_noise`` adds synthetic babble, impact and traffic noise to the training noise pool.
    """
    from recipes.data.datasets import EnhancementDataset
    from recipes.data.minicorpus import MiniCorpus

    config = _enhancement_config(sample_rate, segment_seconds, snr_range_db, level_range_db, reverb_probability)
    corpus = MiniCorpus.scan(procedural_noise=True) if procedural_noise else None
    return EnhancementDataset.from_minicorpus(
        split, config, length=int(length), seed=int(seed), corpus=corpus, include_band_limited=include_band_limited
    )


def _echo_config(sample_rate: int, segment_seconds: float, echo_options: Mapping[str, Any]) -> Any:
    """An :class:`recipes.data.echo.EchoConfig` from config-file options (lists become tuples)."""
    from recipes.data.echo import EchoConfig

    known = {field.name for field in dataclasses.fields(EchoConfig)} - {"sample_rate", "segment_seconds"}
    unknown = sorted(set(echo_options) - known)
    if unknown:
        raise ConfigError(f"unknown echo_options {unknown}; known: {', '.join(sorted(known))}")
    values = _tuples(echo_options)
    return EchoConfig(sample_rate=int(sample_rate), segment_seconds=float(segment_seconds), **values)


def _echo_dataset(
    split: str, length: int, seed: int, sample_rate: int, segment_seconds: float, echo_options: Mapping[str, Any]
) -> Dataset:
    """The echo-scenario dataset over ``split`` of the mini corpus with ``echo_options`` applied."""
    from recipes.data.datasets import EchoDataset

    config = _echo_config(sample_rate, segment_seconds, echo_options)
    return EchoDataset.from_minicorpus(split, config, length=int(length), seed=int(seed))


def minicorpus_task(
    task: str = "separation",
    split: str = "train",
    length: int = 10000,
    seed: int = 0,
    sample_rate: int = 8000,
    segment_seconds: float = 4.0,
    speaker_counts: tuple[int, ...] = (2,),
    echo_options: Mapping[str, Any] | None = None,
) -> Dataset:
    """The default dynamic-mixing dataset of a data ``task`` (see :func:`recipes.data.fixedset.task_dataset`).

    ``echo_options`` (task ``"echo"`` only) sets fields of :class:`recipes.data.echo.EchoConfig`,
    e.g. ``{delay_range_ms: [0, 20], ser_range_db: [-10, 10]}``: a residual delay of at most about
    a frame, as the model sees after ``speechkit aec`` removed the bulk delay.
    """
    from recipes.data.fixedset import task_dataset
    from recipes.data.minicorpus import MiniCorpus

    if echo_options:
        if task != "echo":
            raise ConfigError(f"echo_options only apply to task 'echo', not {task!r}")
        return _echo_dataset(split, length, seed, sample_rate, segment_seconds, echo_options)
    return task_dataset(
        task, split, MiniCorpus.scan(), int(length), int(seed), int(sample_rate), float(segment_seconds),
        tuple(int(count) for count in speaker_counts),
    )


def fixed_minicorpus(
    root: str,
    task: str = "enhancement",
    split: str = "validation",
    count: int = 200,
    sample_rate: int = 16000,
    segment_seconds: float = 4.0,
    speaker_counts: tuple[int, ...] = (2,),
    seed: int | None = None,
    limit: int | None = None,
    echo_options: Mapping[str, Any] | None = None,
) -> Dataset:
    """A fixed (file-backed) validation/test set: read ``root``, building it first if it is missing.

    ``limit`` uses only the first items (a cheaper validation on a set built with more).
    ``echo_options`` (task ``"echo"``): :class:`recipes.data.echo.EchoConfig` fields, as in
    :func:`minicorpus_task`; use a different ``root`` for different options (an existing set is
    read as it is).

    Built exactly as ``python -m recipes.prepare_data fixed --task TASK --split SPLIT ...`` does
    (same per-split default seed), so either may create it. Under ``torchrun`` only rank 0 builds;
    the other ranks wait for its ``index.json``.
    """
    from recipes.data.fixedset import DEFAULT_SPLIT_SEEDS, build_fixed_set, write_fixed_set
    from recipes.data.minicorpus import MiniCorpus

    if echo_options and task != "echo":
        raise ConfigError(f"echo_options only apply to task 'echo', not {task!r}")

    def build(folder: Path) -> None:
        if echo_options:
            if split not in DEFAULT_SPLIT_SEEDS:
                raise ConfigError(f"fixed sets are for validation or test, not {split!r}")
            set_seed = DEFAULT_SPLIT_SEEDS[split] if seed is None else int(seed)
            dataset = _echo_dataset(split, count, set_seed, sample_rate, segment_seconds, echo_options)
            source = {"task": task, "split": split, "seed": set_seed, "sample_rate": int(sample_rate),
                      "segment_seconds": float(segment_seconds), "echo_options": dict(echo_options),
                      "generator": type(dataset).__name__}
            write_fixed_set(dataset, folder, int(sample_rate), int(count), source)
        else:
            build_fixed_set(
                task, split, folder, int(count), MiniCorpus.scan(), seed, int(sample_rate), float(segment_seconds),
                tuple(int(value) for value in speaker_counts),
            )

    return _fixed_set(root, build, limit)


def _fixed_set(root: str, build: Callable[[Path], None], limit: int | None) -> Dataset:
    """The fixed set in ``root`` (its first ``limit`` items), built by ``build(folder)`` if missing.

    Under ``torchrun`` only rank 0 builds; the other ranks wait for its ``index.json``.
    """
    from recipes.data.fixedset import FixedSetDataset

    folder = Path(root)
    if not (folder / "index.json").is_file():
        if int(os.environ.get("RANK", "0")) == 0:
            build(folder)
        else:
            while not (folder / "index.json").is_file():
                time.sleep(1.0)
    dataset = FixedSetDataset(folder)
    if limit is not None and int(limit) < len(dataset):
        subset = Subset(dataset, range(int(limit)))
        subset.sample_rate = dataset.sample_rate  # type: ignore[attr-defined]
        return subset
    return dataset


def _fixed_generated_set(
    root: str,
    limit: int | None,
    generator: str,
    factory: Callable[..., Dataset],
    corpus_root: str,
    split: str,
    count: int,
    seed: int | None,
    kwargs: Mapping[str, Any],
) -> Dataset:
    """:func:`_fixed_set` of ``count`` items of ``factory(corpus_root, split, length=count, seed=..., **kwargs)``.

    ``seed`` defaults to the split's entry of :data:`recipes.data.fixedset.DEFAULT_SPLIT_SEEDS` (0 for
    another split); ``generator`` names the dataset class in the set's ``source`` record.
    """
    from recipes.data.fixedset import DEFAULT_SPLIT_SEEDS, write_fixed_set

    def build(folder: Path) -> None:
        set_seed = DEFAULT_SPLIT_SEEDS.get(split, 0) if seed is None else int(seed)
        dataset = factory(corpus_root, split, length=int(count), seed=set_seed, **kwargs)
        source = {"generator": generator, "split": split, "seed": set_seed, **kwargs}
        write_fixed_set(dataset, folder, int(dataset.config.sample_rate), int(count), source)

    return _fixed_set(root, build, limit)


def _tuples(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with each list turned into a tuple (config fields from YAML are lists)."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}


def _realworld_config(
    sample_rate: int, segment_seconds: float, overrides: Mapping[str, Any] | None, reverb_source: str = "both"
) -> Any:
    """A :class:`recipes.data.realworld.RealWorldConfig`; ``reverb_source`` is the default of ``reverb.source``."""
    from recipes.data.conditions import ConditionConfig
    from recipes.data.datasets import ReverbConfig
    from recipes.data.realworld import RealWorldConfig

    values = dict(overrides or {})
    conditions = ConditionConfig(**_tuples(dict(values.pop("conditions", {}))))
    reverb = ReverbConfig(**{"probability": 0.3, "source": reverb_source, "target": "early",
                             **dict(values.pop("reverb", {}))})
    values = _tuples(values)
    return RealWorldConfig(sample_rate=int(sample_rate), segment_seconds=float(segment_seconds),
                           reverb=reverb, conditions=conditions, **values)


def realworld_enhancement(
    corpus_root: str,
    split: str = "train",
    sample_rate: int = 16000,
    segment_seconds: float = 3.0,
    length: int = 10000,
    seed: int = 0,
    max_floor_db: float | None = -35.0,
    floor_cache: str | None = None,
    mixing: Mapping[str, Any] | None = None,
    layout: str = "cache",
    noise_root: str | None = None,
) -> Dataset:
    """Real sentences + real noise + real conditions (:mod:`recipes.data.realworld`) from a corpus cache.

    ``mixing``: :class:`recipes.data.realworld.RealWorldConfig` fields (``conditions`` and
    ``reverb`` as nested mappings).

    ``layout``: ``cache`` (``corpus_root`` holds ``manifest.jsonl`` + ``splits.json``) or a speech
    folder, ``librispeech``, ``vctk`` or ``dns`` (:mod:`recipes.data.speech_folders`; speakers split
    80/10/10 by a hash). ``noise_root``: a folder of noise files or a corpus cache; required for
    ``librispeech`` and ``vctk``, ``<corpus_root>/noise`` by default for ``dns``, extra noise for
    ``cache``. Without measured RIRs (only a corpus cache brings them) rooms default to simulated.
    """
    from recipes.data.speech_folders import LAYOUTS

    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    if layout == "cache":
        from recipes.data.realworld import realworld_dataset
        from recipes.data.speech_folders import noise_entries

        config = _realworld_config(sample_rate, segment_seconds, mixing)
        extra = None if noise_root is None else [
            entry for entry in noise_entries(noise_root) if entry.kind == "noise" and entry.split == split
        ]
        return realworld_dataset(corpus_root, split, config, int(length), int(seed), max_floor_db, floor_cache, extra)
    from recipes.data.speech_folders import corpora_dataset, folder_corpora

    corpora = folder_corpora(layout, corpus_root, noise_root)
    reverb_source = "both" if corpora.select("rir", split) else "simulated"
    config = _realworld_config(sample_rate, segment_seconds, mixing, reverb_source)
    return corpora_dataset(corpora, split, config, int(length), int(seed), max_floor_db, floor_cache)


def _corpus_speech(
    corpus_root: str, split: str, max_floor_db: float | None, floor_cache: str | None
) -> tuple[Any, list[Any]]:
    """The corpus cache at ``corpus_root`` and its ``split`` speech with a noise floor at most ``max_floor_db``."""
    from recipes.data.corpora import load_corpora

    corpora = load_corpora(corpus_root)
    return corpora, corpora.speech(split, None if max_floor_db is None else float(max_floor_db), floor_cache)


def realworld_separation(
    corpus_root: str,
    split: str = "train",
    sample_rate: int = 16000,
    segment_seconds: float = 4.0,
    length: int = 10000,
    seed: int = 0,
    speaker_counts: tuple[int, ...] = (2,),
    noise_probability: float = 0.3,
    reverb_probability: float = 0.2,
    max_floor_db: float | None = -35.0,
    floor_cache: str | None = None,
    conditions: dict[str, Any] | None = None,
) -> Dataset:
    """Mixtures of real sentences of different speakers with the device channel of real recordings.

    :class:`recipes.data.realworld.RealWorldSeparationDataset` over one split of a corpus cache:
    overlap 50-100 %, relative gains -5..5 dB, real noise (SNR 0..15 dB) with ``noise_probability``,
    measured or simulated rooms (early-reflection targets) with ``reverb_probability``, and
    colouration, high-pass and telephone band on mixture and targets alike. ``conditions``
    overrides fields of the channel's :class:`~recipes.data.conditions.ConditionConfig` (e.g.
    ``{"telephone_probability": 1.0}`` for an all-telephone-band test set).
    """
    from recipes.data.conditions import ConditionConfig
    from recipes.data.datasets import ReverbConfig, SeparationConfig
    from recipes.data.realworld import RealWorldSeparationDataset

    corpora, speech = _corpus_speech(corpus_root, split, max_floor_db, floor_cache)
    config = SeparationConfig(
        sample_rate=int(sample_rate), segment_seconds=float(segment_seconds),
        speaker_counts=tuple(int(count) for count in speaker_counts), noise_probability=float(noise_probability),
        reverb=ReverbConfig(probability=float(reverb_probability), source="both", target="early"),
    )
    channel = {"clipping_probability": 0.0, "dc_offset_probability": 0.0, "silence_probability": 0.0}
    channel.update(_tuples(conditions or {}))
    return RealWorldSeparationDataset(speech, corpora.select("noise", split), config, int(length), int(seed),
                                      corpora.select("rir", split), conditions=ConditionConfig(**channel))


def realworld_echo(
    corpus_root: str,
    split: str = "train",
    sample_rate: int = 16000,
    segment_seconds: float = 4.0,
    length: int = 10000,
    seed: int = 0,
    max_floor_db: float | None = -35.0,
    floor_cache: str | None = None,
    echo_options: Mapping[str, Any] | None = None,
) -> Dataset:
    """Echo scenarios (:class:`recipes.data.datasets.EchoDataset`) of real sentences, real noise and rooms.

    Far-end and near-end talkers are different speakers of one split of a corpus cache; the echo
    path is a measured room response of that split or a simulated room; background noise is the
    split's real noise. ``echo_options``: :class:`recipes.data.echo.EchoConfig` fields, as in
    :func:`minicorpus_task`.
    """
    from recipes.data.datasets import EchoDataset

    config = _echo_config(sample_rate, segment_seconds, echo_options or {})
    corpora, speech = _corpus_speech(corpus_root, split, max_floor_db, floor_cache)
    return EchoDataset(speech, corpora.select("noise", split), config, int(length), int(seed),
                       corpora.select("rir", split))


def array_enhancement(
    corpus_root: str,
    split: str = "train",
    sample_rate: int = 16000,
    segment_seconds: float = 4.0,
    length: int = 10000,
    seed: int = 0,
    mic_count: int = 4,
    max_floor_db: float | None = -35.0,
    floor_cache: str | None = None,
    mixing: Mapping[str, Any] | None = None,
    measured_rir_root: str | None = None,
) -> Dataset:
    """Microphone-array mixtures in simulated rooms (:class:`recipes.data.multichannel_datasets.ArrayRoomDataset`).

    Real sentence speech and real noise (point sources and a diffuse-like field) of one split of a
    corpus cache; with ``mixing.measured_probability > 0`` also sub-arrays of the measured 32-channel
    office RIRs under ``measured_rir_root`` (``rirs/office_32ch_linear``; default: the mini corpus
    data root, :func:`recipes.data.minicorpus.default_data_root`; its 9 source positions are shared
    by every split); ``mixing``: :class:`ArrayRoomMixingConfig` fields (``room`` as
    a nested mapping of :class:`recipes.data.rooms.ArrayRoomConfig` fields). Target: the direct
    path at microphone 0.
    """
    from recipes.data.multichannel_datasets import ArrayRoomDataset, ArrayRoomMixingConfig
    from recipes.data.rooms import ArrayRoomConfig

    values = dict(mixing or {})
    room = ArrayRoomConfig(**_tuples(dict(values.pop("room", {}))))
    config = ArrayRoomMixingConfig(sample_rate=int(sample_rate), segment_seconds=float(segment_seconds),
                                   mic_count=int(mic_count), room=room, **_tuples(values))
    corpora, speech = _corpus_speech(corpus_root, split, max_floor_db, floor_cache)
    rirs = None
    if config.measured_probability > 0:
        from recipes.data.minicorpus import default_data_root, scan_rirs

        root = Path(measured_rir_root) if measured_rir_root is not None else default_data_root()
        rirs = scan_rirs(root) if root is not None else []
        if not rirs:
            raise ConfigError(
                "measured_probability > 0 needs measured_rir_root (the folder holding rirs/office_32ch_linear)"
            )
    return ArrayRoomDataset(speech, corpora.select("noise", split), config, int(length), int(seed), rirs)


def _fixed_variant(factory: Callable[..., Dataset], generator: str) -> Callable[..., Dataset]:
    """The fixed-set factory of a generated-dataset ``factory``: ``(root, corpus_root, split, count, seed,
    limit, **kwargs)`` -> :func:`_fixed_generated_set` (``kwargs`` go to ``factory``)."""

    def fixed(
        root: str,
        corpus_root: str,
        split: str = "validation",
        count: int = 200,
        seed: int | None = None,
        limit: int | None = None,
        **kwargs: Any,
    ) -> Dataset:
        return _fixed_generated_set(root, limit, generator, factory, corpus_root, split, count, seed, kwargs)

    fixed.__doc__ = (
        f"A fixed validation/test set of :func:`{factory.__name__}` in ``root`` (its first ``limit`` items), "
        "built from the corpus cache if missing; ``kwargs`` as for that factory."
    )
    return fixed


#: fixed validation/test sets of the generated datasets above (names used by the recipe configs)
fixed_realworld = _fixed_variant(realworld_enhancement, "RealWorldEnhancementDataset")
fixed_realworld_separation = _fixed_variant(realworld_separation, "RealWorldSeparationDataset")
fixed_array_enhancement = _fixed_variant(array_enhancement, "ArrayRoomDataset")
fixed_realworld_echo = _fixed_variant(realworld_echo, "EchoDataset")


def synthetic(**kwargs: Any) -> Dataset:
    """Synthetic tone-plus-noise mixtures (see :class:`recipes.trainer.SyntheticMixtures`)."""
    from recipes.trainer import SyntheticMixtures

    return SyntheticMixtures(**kwargs)


# --------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m recipes.train``."""
    parser = argparse.ArgumentParser(prog="python -m recipes.train", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="recipe config (.yaml or .json)")
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value (value parsed as YAML)")
    parser.add_argument("--resume", action="store_true", help="continue from run_dir/last.pt if it exists")
    parser.add_argument("--run-dir", help="override run_dir")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 done or validation flat, 130 interrupted after saving, 2 config error)."""
    from recipes.trainer import load_config, run_training

    arguments = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(arguments)
    try:
        overrides = list(args.overrides)
        if args.run_dir:
            overrides.append(f"run_dir={args.run_dir}")
        config = load_config(args.config, overrides)
        command = "python -m recipes.train " + " ".join(shlex.quote(part) for part in arguments)
        if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
            command = f"torchrun --nproc_per_node {os.environ.get('LOCAL_WORLD_SIZE', os.environ['WORLD_SIZE'])} -m recipes.train " + " ".join(
                shlex.quote(part) for part in arguments
            )
        status = run_training(config, resume=args.resume, command=command)
    except SpeechkitError as error:
        print(f"recipes.train: error: {error}", file=sys.stderr)
        return 2
    if status == "interrupted":
        print(f"recipes.train: interrupted; state saved in {config['run_dir']}/last.pt (use --resume)", file=sys.stderr)
        return EXIT_INTERRUPTED
    reason = "validation flat (early_stop)" if status == "flat" else "done"
    print(f"recipes.train: {reason}; model exported to {Path(config['run_dir']) / config['export']['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
