"""One process or many: torchrun's environment -> a process group, and who may write."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from deblur import device as devices


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0 alone logs, writes checkpoints and talks to MLflow."""
        return self.rank == 0


def init(device: str = "auto") -> World:
    """Join torchrun's process group when launched by it, else a world of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = devices.resolve(device, local_rank)
    if size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        # CPU processes share the cores: without this each takes them all and they thrash.
        if dev.type == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // size))
    return World(rank=rank, size=size, device=dev)


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def all_finite(world: World, value: torch.Tensor) -> bool:
    """Whether the loss is finite on every rank, so all ranks stop together on a NaN."""
    ok = torch.isfinite(value.detach()).all().float().reshape(1)
    if world.size > 1:
        ok = ok.to(world.device)
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok.item())


def shutdown(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
