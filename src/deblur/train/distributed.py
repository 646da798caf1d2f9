"""One process or many: torchrun's environment -> a process group, who may write, and how
a failure on one rank ends them all with the one line that explains it."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from deblur import device as devices
from deblur.errors import DeblurError


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    device: torch.device
    # Launched by torchrun: a process group and DDP even for one process, so a one-GPU
    # run takes the same code path as a many-GPU one.
    distributed: bool = False
    local_size: int = 1  # processes on this node (torchrun's LOCAL_WORLD_SIZE)

    @property
    def nodes(self) -> int:
        return max(1, self.size // max(1, self.local_size))

    @property
    def main(self) -> bool:
        """Rank 0 alone logs, writes checkpoints and talks to MLflow."""
        return self.rank == 0


def init(device: str = "auto") -> World:
    """Join torchrun's process group when launched by it, else a world of one."""
    launched = "WORLD_SIZE" in os.environ  # torchrun sets it, also for --nproc-per-node 1
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(size)))
    dev = devices.resolve(device, local_rank)
    global _launcher_pid
    _launcher_pid = _launcher() if launched else None
    if launched and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        try:
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        except Exception as exc:
            if not is_peer_loss(exc):
                raise
            _end_own_launcher()  # as end_launcher: torchrun's report would bury the line
            raise DeblurError(
                f"rank {rank}: a peer process ended while the ranks were connecting (its "
                "node's log says why); every node stops, rerun them together"
            ) from None
        # CPU processes share their node's cores: without this each takes them all and they
        # thrash. A node's share is its own process count, not the world's.
        if dev.type == "cpu":
            torch.set_num_threads(threads_per_process(local_size))
    return World(rank, size, dev, distributed=launched, local_size=local_size)


def threads_per_process(local_size: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, local_size))


def any_rank(world: World, flag: bool) -> bool:
    """Whether ``flag`` is true on any rank, so all ranks stop after the same step."""
    if not world.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=world.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def broadcast(world: World, obj):
    """Rank 0's ``obj`` on every rank (a resume state only rank 0's disk holds)."""
    if not world.distributed or world.size == 1:
        return obj
    box = [obj if world.main else None]
    dist.broadcast_object_list(box, src=0, device=torch.device("cpu"))
    return box[0]


def hosts(world: World) -> list[str]:
    """Each rank's host name, in rank order (on rank 0; the others get theirs alone)."""
    import socket

    name = socket.gethostname()
    if not world.distributed or world.size == 1:
        return [name]
    names: list[str | None] = [None] * world.size
    dist.all_gather_object(names, name)
    return [str(n) for n in names]


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def all_finite(world: World, value: torch.Tensor) -> bool:
    """Whether the loss is finite on every rank, so all ranks stop together on a NaN."""
    ok = torch.isfinite(value.detach()).all().float().reshape(1)
    if world.distributed:
        ok = ok.to(world.device)
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok.item())


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------- failing together
#
# A clean error (DeblurError) on one rank used to be followed by the other ranks' gloo
# tracebacks (their peer vanished mid-collective) and by torchrun's own ChildFailedError
# report: ~100 lines around the one that matters. torchrun has no quiet mode, and any worker
# exiting non-zero makes it print that report. So the rank that fails for a reason it can
# explain ends the launcher first (SIGKILL: the one signal torchrun does not turn into a
# report), then prints its line and exits; its peers, whose collectives then break, see the
# launcher gone and leave without a word. The shell sees exit status 137 (128 + SIGKILL).

PEER_GRACE = 5.0  # seconds a rank whose collective broke waits to see the launcher ended
_launcher_pid: int | None = None  # torchrun's pid, noted when this rank joined


def _launcher() -> int | None:
    """torchrun's pid when this process is one of its workers, else None."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    parent = os.getppid()
    try:
        command = Path(f"/proc/{parent}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return None  # no /proc: leave the launcher alone, its report is only noise
    if any(name in command for name in (b"torchrun", b"torch.distributed.run", b"deblur.launch")):
        return parent
    return None


def end_launcher(world: World) -> None:
    """Before this rank exits with a clean error: end torchrun, so it adds no report."""
    if world.distributed:
        _end_own_launcher()


def _end_own_launcher() -> None:
    if _launcher_pid is not None and os.getppid() == _launcher_pid:
        os.kill(_launcher_pid, signal.SIGKILL)


def is_peer_loss(exc: BaseException) -> bool:
    """A collective that broke because another rank (maybe on another node) went away."""
    return isinstance(exc, dist.DistError) or (
        isinstance(exc, RuntimeError) and any(w in str(exc) for w in ("Gloo", "gloo", "NCCL"))
    )


def peer_failed(world: World, grace: float = PEER_GRACE) -> bool:
    """After an unexpected error on this rank: was it a peer's clean failure (the launcher
    ended by end_launcher), so this rank should leave quietly?"""
    if world.size <= 1 or _launcher_pid is None:
        return False
    deadline = time.monotonic() + grace
    while os.getppid() == _launcher_pid:  # reparented once the launcher is gone
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
