"""Training data helpers: synthetic smoke-test mixtures and a resumable distributed sampler."""
from __future__ import annotations

import contextlib
import math
import signal
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class SyntheticMixtures(Dataset):
    """Deterministic synthetic mixtures for smoke runs and tests (no audio files needed).

    Item ``i`` is generated from ``seed + i``: ``num_sources`` sums of random sinusoids with a
    syllable-like envelope, plus white noise at ``snr_db``. Returns
    ``{"mixture": [C, T], "targets": [S, C, T]}`` with ``C = num_channels``.
    """

    def __init__(
        self,
        num_items: int = 16,
        num_samples: int = 4000,
        num_sources: int = 1,
        num_channels: int = 1,
        sample_rate: int = 8000,
        snr_db: float = 5.0,
        seed: int = 0,
    ) -> None:
        self.num_items = num_items
        self.num_samples = num_samples
        self.num_sources = num_sources
        self.num_channels = num_channels
        self.sample_rate = sample_rate
        self.snr_db = snr_db
        self.seed = seed

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        time_axis = torch.arange(self.num_samples, dtype=torch.float64) / self.sample_rate
        sources = []
        for _ in range(self.num_sources):
            frequencies = 100.0 + 900.0 * torch.rand(3, 1, generator=generator, dtype=torch.float64)
            phases = 2 * math.pi * torch.rand(3, 1, generator=generator, dtype=torch.float64)
            tone = torch.sin(2 * math.pi * frequencies * time_axis + phases).sum(0)  # [3, T] -> [T]
            rate = 2.0 + 4.0 * float(torch.rand(1, generator=generator))
            envelope = 0.5 * (1 - torch.cos(2 * math.pi * rate * time_axis))
            sources.append(0.1 * tone * envelope)
        targets = torch.stack(sources).unsqueeze(1).repeat(1, self.num_channels, 1)  # -> [S, C, T]
        noise = torch.randn(self.num_channels, self.num_samples, generator=generator, dtype=torch.float64)
        speech = targets.sum(0)  # [S, C, T] -> [C, T]
        noise = noise * (speech.pow(2).mean() / noise.pow(2).mean() / 10 ** (self.snr_db / 10)).sqrt()
        return {"mixture": (speech + noise).float(), "targets": targets.float()}


class ResumableDistributedSampler(DistributedSampler):
    """A :class:`DistributedSampler` (deterministic per ``seed`` and epoch) that can skip a prefix.

    ``skip_batches(n, per_rank_batch)`` drops the first ``n`` batches of the current epoch, so a
    resumed run continues exactly where the interrupted one stopped without loading those items.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = 0

    def skip_batches(self, batches: int, per_rank_batch: int) -> None:
        """Skip the first ``batches`` batches (of ``per_rank_batch`` items) of the next iteration."""
        self.skip = batches * per_rank_batch

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())[self.skip :]
        self.skip = 0
        return iter(indices)


def ignore_interrupts(worker_id: int) -> None:
    """DataLoader worker initialiser: leave SIGINT/SIGTERM to the main process, which saves and stops.

    (A signal sent to the whole process group, as Ctrl-C or ``timeout`` do, would otherwise kill
    the workers and make the loader raise before the state is saved.)
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@contextlib.contextmanager
def loader_batches(loader: DataLoader) -> Iterator[Iterator[Any]]:
    """Iterate ``loader`` and stop its worker processes when the block ends, also on an exception.

    The workers ignore SIGTERM (:func:`ignore_interrupts`), so the terminate-then-join that
    multiprocessing runs at interpreter exit cannot end them: an error raised while an iterator is
    still referenced (a data error in a worker, re-raised in the loop) would hang the exit forever.
    ``_shutdown_workers`` is the DataLoader iterator's own clean-up (what its ``__del__`` calls).
    """
    batches = iter(loader)
    try:
        yield batches
    finally:
        shutdown = getattr(batches, "_shutdown_workers", None)  # only multi-process iterators have workers
        if shutdown is not None:
            shutdown()
