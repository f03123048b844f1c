"""Data-parallel training on torch.distributed: process-group setup, batch sharding, and
the few collectives the training loop needs.

Launch with ``torchrun --nproc_per_node N -m qlam train ...`` (one process per GPU or per
CPU share; multi-node: torchrun's rendezvous flags), or ``qlam train --distributed
--nproc N``, which starts N local processes itself on the loopback interface. Every rank
loads the same data and walks the same shuffled global batches; each takes a disjoint,
contiguous slice of every global batch, and the loss is weighted so that the gradient
DistributedDataParallel averages is exactly the gradient of the global-batch mean: the run
follows the single-process run with the same ``--batch-size`` (up to float rounding, and
except for dropout masks, which differ per rank). Rank 0 alone writes logs, metrics and
checkpoints; on resume it reads the checkpoint and broadcasts it, so only rank 0's machine
needs the run directory.

Backends: NCCL on CUDA (each process on ``cuda:LOCAL_RANK``), gloo on CPU.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

ENV_KEYS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """True in a process started by torchrun (or any launcher setting the env:// variables)."""
    return all(k in os.environ for k in ENV_KEYS)


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class DistContext:
    """This process's place in the group; a single process is rank 0 of 1 (all no-ops)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device | None = None
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, x: torch.Tensor, y: torch.Tensor):
        """This rank's contiguous slice of a global batch: (x, y, global size, weight).

        Slices differ in size by at most one. A rank whose slice would be empty (a last
        batch smaller than the world) gets one example with weight 0, so that every rank
        still runs the forward and backward DistributedDataParallel synchronises."""
        n = len(y)
        if not self.enabled:
            return x, y, n, 1
        lo, hi = n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size
        if hi == lo:
            return x[:1], y[:1], n, 0
        return x[lo:hi], y[lo:hi], n, 1

    def all_sum(self, values: list[float]) -> list[float]:
        """Elementwise sum of a few numbers over all ranks (unchanged in one process)."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast(self, obj):
        """Rank 0's picklable ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def gather(self, obj) -> list:
        """Every rank's picklable ``obj`` in rank order, on every rank (``[obj]`` alone)."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module to train with: DistributedDataParallel around ``model`` when enabled
        (it broadcasts rank 0's parameters and buffers at construction)."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)


def init(requested: bool | None, device: torch.device) -> DistContext:
    """Join the process group described by the environment (torchrun's env:// variables).

    ``requested``: True = distributed (the environment must describe the group), False =
    single process, None = distributed when WORLD_SIZE > 1. ``device``: the resolved
    training device; CUDA selects NCCL and ``cuda:LOCAL_RANK``, CPU selects gloo."""
    if requested is None:
        requested = env_world_size() > 1
    if not requested:
        return DistContext(device=device)
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed")
    if not launched():
        raise RuntimeError("distributed training needs the process-group environment "
                           f"({', '.join(ENV_KEYS)}): start with torchrun, or with "
                           "`qlam train --distributed --nproc N` for local processes")
    rank, world = int(os.environ["RANK"]), env_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    owns = not dist.is_initialized()
    if owns:
        _import_group_defaults()
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world)
    return DistContext(rank, world, local_rank, backend, device, owns)


def _import_group_defaults() -> None:
    """Import, before any group exists, the torch modules that bind ``group.WORLD`` as a
    default argument when imported: DistributedDataParallel imports them lazily, and
    imported after ``init_process_group`` they would pin the default group for good, so that
    ``destroy_process_group`` could not free it and its gloo threads would live on into the
    interpreter's exit (where they occasionally abort the process)."""
    import torch.distributed.nn  # noqa: F401


def shutdown(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(rank: int, nproc: int, port: int, threads: int | None, results, fn, args, kwargs):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(nproc), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(nproc))
    if threads:
        torch.set_num_threads(threads)
    out = fn(*args, **kwargs)
    if rank == 0 and results is not None:
        results.put(out)


def launch_local(nproc: int, fn, *args, threads: int | None = None, **kwargs):
    """Run ``fn(*args, **kwargs)`` in ``nproc`` spawned processes forming a group on
    127.0.0.1 (a free port); returns rank 0's result. ``threads``: torch threads per
    process (default: this machine's cores shared out)."""
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    import torch.multiprocessing as mp

    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // nproc)
    results = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(_child, args=(nproc, free_port(), threads, results, fn, args, kwargs),
                       nprocs=nproc, join=True, start_method="spawn")
    return results.get() if not results.empty() else None


__all__ = ["DistContext", "init", "shutdown", "launched", "launch_local", "free_port"]
