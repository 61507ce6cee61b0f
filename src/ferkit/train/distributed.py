"""Data-parallel training: which worker this process is, its share of each global batch, and the collectives.

One loop (:func:`ferkit.train.loop.fit`) runs in every worker, whichever launcher started them: ``torchrun`` (this
module initialises the process group from WORLD_SIZE/RANK/LOCAL_RANK: gloo on CPU, nccl on CUDA) or Ray Train
(:mod:`ferkit.scale.train`, which initialises it itself). A single process is the same loop with :data:`SINGLE`.

Why every worker computes whole global batches' randomness and keeps a slice, instead of torch's
``DistributedSampler``: the recipe's ``batch_size`` is the *global* batch. Every worker holds the whole (small,
in-memory) training set, draws the epoch's order from (seed, epoch) exactly as a single process does, augments and
mixes the whole global batch with the same generator, and keeps every ``world``-th sample of it (the interleaving
``DistributedSampler`` uses, applied per global batch rather than per epoch, and without its padding, which would
count some samples twice). Each worker's loss is scaled by its share of the global batch's sample weights, so the
averaged gradient DDP all-reduces is the gradient of the global batch's loss. With no BatchNorm and no dropout
the run is the single-process run up to floating-point summation order, whatever the worker count; a checkpoint
therefore resumes on any number of workers (it holds no per-worker state: the epoch's randomness is a function of
(seed, epoch), not a stored RNG state). The cost is that each worker augments the whole global batch (a few
percent of a step on a CPU; see docs/SCALING.md).

What still differs from one process: BatchNorm normalises with each worker's own batch statistics (torch's
SyncBatchNorm runs on GPUs only, and per-worker statistics are what DDP training normally uses; running statistics
are rank 0's, broadcast by DDP before each forward), and dropout masks are drawn per worker, seeded by (seed,
epoch, rank).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from torch import nn

from ferkit.errors import UserInputError


@dataclass(frozen=True)
class Workers:
    """This process's place among the training workers (rank 0 of 1 for a plain single-process run)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one worker that writes the run folder and logs."""
        return self.rank == 0

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This worker's positions within a global batch of ``len(idx)`` samples: every ``world``-th, from rank."""
        return torch.arange(len(idx))[self.rank::self.world]

    def skips(self, batch: int) -> bool:
        """Whether a global batch of ``batch`` samples is left out: with several workers, one too small to give
        each two samples (BatchNorm needs two; at most 2 x workers - 1 samples of an epoch, its last batch)."""
        return self.distributed and batch < 2 * self.world

    def wrap(self, model: nn.Module, device: str) -> nn.Module:
        """``model`` wrapped for training in DDP (gradients averaged over workers), or as it is alone."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [torch.device(device).index] if device.startswith("cuda") else None
        return DistributedDataParallel(_TrainForward(model), device_ids=ids)

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over workers (float64 on the CPU for gloo; the same tensor back when alone)."""
        if not self.distributed:
            return t
        import torch.distributed as dist

        backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        out = t.detach().to(backend_device, torch.float64)
        dist.all_reduce(out)
        return out.cpu()

    def gather(self, compute: Callable[[torch.Tensor], torch.Tensor], items: torch.Tensor) -> torch.Tensor:
        """``compute`` over ``items``, split in contiguous parts over the workers, concatenated in order on every
        worker (validation: each worker scores a part, all get every logit)."""
        if not self.distributed:
            return compute(items)
        import torch.distributed as dist

        part = compute(torch.tensor_split(items, self.world)[self.rank])
        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, part.cpu())
        return torch.cat(parts)

    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every worker, so all score and save one model."""
        if not self.distributed:
            return
        import torch.distributed as dist

        for b in model.buffers():
            dist.broadcast(b, 0)

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()


SINGLE = Workers()


class _TrainForward(nn.Module):
    """What DDP wraps: the training forward (:func:`ferkit.train.targets.forward_train`, auxiliary loss included),
    so models with ``forward_with_aux`` run through DDP's hooks too."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from ferkit.train.targets import forward_train

        out, aux = forward_train(self.model, x)
        return out, torch.as_tensor(aux, dtype=torch.float32, device=out.device)


def from_environment(device: str) -> tuple[Workers, str]:
    """The workers this process belongs to and its device.

    A process group initialised already (Ray Train does that) is used as it is; otherwise torchrun's WORLD_SIZE,
    RANK and LOCAL_RANK start one (gloo for ``cpu``, nccl for ``cuda``); without them this is :data:`SINGLE`.
    ``cuda`` becomes ``cuda:LOCAL_RANK``.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        workers = Workers(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not dist.is_available():
            raise UserInputError("this PyTorch build has no torch.distributed; train in one process (no torchrun)")
        workers = Workers(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
        if device == "cuda":
            torch.cuda.set_device(workers.local_rank)
        dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=timedelta(minutes=60))
    else:
        return SINGLE, device
    if device == "cuda":
        device = f"cuda:{workers.local_rank}"
    return workers, device


def seed_worker(seed: int, epoch: int, workers: Workers) -> None:
    """Seed the global torch RNG (dropout) for an epoch: (seed, epoch) alone, as always, for a single process;
    with the rank mixed in for workers, so workers do not drop the same units of their samples."""
    base = seed * 100_003 + epoch
    torch.manual_seed(base if not workers.distributed else base * 1_000_003 + workers.rank)
