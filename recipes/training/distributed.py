"""Where a training process runs: rank, world size and device, joining ``torchrun``'s process group."""
from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist


@dataclasses.dataclass
class DistributedContext:
    """Where this process runs: rank, world size and device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that logs and writes files)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group with more than one process is active."""
        return self.world_size > 1


def setup_distributed(device: str = "auto") -> DistributedContext:
    """Join the ``torchrun`` process group when launched by it (gloo on CPU, NCCL on CUDA)."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if dist.is_initialized():
        world_size, rank = dist.get_world_size(), dist.get_rank()
    if use_cuda:
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=target)
