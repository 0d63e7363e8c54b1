"""torchrun integration: process group from env vars (gloo on CPU, nccl on GPU), with a collective timeout
so that a dead peer makes the survivors exit with a clear error instead of hanging forever."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from clipdistill.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_as_main() -> bool:
    """True on torchrun's rank 0 and outside torchrun: the process that speaks for a run on the console."""
    return os.environ.get("RANK", "0") == "0"


def launched_world_size() -> int:
    """The number of processes torchrun started for this command (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def pick_device(choice: str, local_rank: int) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("train.device=cuda but no CUDA device is visible")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device_choice: str, timeout_s: float) -> DistInfo:
    """Join the process group torchrun described in the environment (single process when WORLD_SIZE is unset)."""
    world = launched_world_size()
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_choice, local)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))
    return DistInfo(rank, world, local, device)


def min_across(n: int, info: DistInfo) -> int:
    """The smallest of every rank's `n` (each rank's own `n` on one process)."""
    if not info.enabled:
        return n
    t = torch.tensor([n], dtype=torch.long, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def all_ranks(flag: bool, info: DistInfo) -> bool:
    """True when `flag` holds on every rank, so that ranks decide together (stop, end an epoch) and none waits
    forever in a collective the others left."""
    return min_across(int(flag), info) > 0


def all_finite(value: torch.Tensor, info: DistInfo) -> bool:
    """True when the loss is finite on every rank (so all ranks stop together on NaN)."""
    return all_ranks(bool(torch.isfinite(value.detach()).all()), info)


def mean_across(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average logged scalars over ranks (one collective for all of them)."""
    if not info.enabled or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return dict(zip(values, (t / info.world_size).tolist(), strict=True))


def summed_counts(counts: dict[str, int], info: DistInfo) -> dict[str, int]:
    """Per-key sums of every rank's counts (e.g. skipped samples per reason), sorted by key. The ranks' keys may
    differ: each rank's names travel as NUL-separated UTF-8 bytes and its numbers as int64 rows (gather_rows),
    tensors only, nothing pickled."""
    parts = [dict(counts)]
    if info.enabled:
        names = list(counts)
        text = torch.tensor(list("\0".join(names).encode()), dtype=torch.uint8)
        values = torch.tensor([int(counts[k]) for k in names], dtype=torch.int64)
        texts, numbers = gather_rows(text.to(info.device), info), gather_rows(values.to(info.device), info)
        parts = [dict(zip(bytes(t.tolist()).decode().split("\0") if len(n) else [], n.tolist(), strict=True))
                 for t, n in zip(texts, numbers, strict=True)]
    total: dict[str, int] = {}
    for part in parts:
        for k, n in part.items():
            total[k] = total.get(k, 0) + n
    return dict(sorted(total.items()))


def collective_failure(err: BaseException) -> UserError:
    return UserError(f"a distributed collective failed or timed out (a peer process probably died): {err}. "
                     "Resume all ranks with --resume latest.")


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def on_main(fn: Callable[[], T], info: DistInfo) -> T | None:
    """`fn()` on rank 0 alone, its failure shared: when it raises, rank 0 raises that and every other rank a
    UserError with its message, so that a step only rank 0 takes (claiming the output folder) cannot leave the
    others waiting for it in a later collective. Every rank must call it, before any collective that depends on
    it. Returns fn's value on rank 0, None on the others."""
    value, failure = None, None
    if info.is_main:
        try:
            value = fn()
        except Exception as e:  # noqa: BLE001  re-raised below, after the others have been told
            failure = e
    if not info.enabled:
        if failure is not None:
            raise failure
        return value
    # the message as bytes in two broadcasts (its length, then it): a tensor collective, nothing pickled
    data = torch.tensor(list(str(failure).encode()) if failure is not None else [], dtype=torch.uint8)
    size = torch.tensor([len(data) + 1 if failure is not None else 0], dtype=torch.int64, device=info.device)
    dist.broadcast(size, src=0)
    if int(size) == 0:
        return value
    text = data.to(info.device) if info.is_main else torch.empty(int(size) - 1, dtype=torch.uint8, device=info.device)
    if len(text):
        dist.broadcast(text, src=0)
    if failure is not None:
        raise failure
    raise UserError(bytes(text.cpu().tolist()).decode())


def gather_rows(x: torch.Tensor, info: DistInfo) -> list[torch.Tensor]:
    """Every rank's `x` in rank order, on the CPU; the ranks' row counts may differ (later dimensions agree). An
    all_gather of `x` padded to the most rows, after one of the row counts: tensors only, nothing pickled."""
    if not info.enabled:
        return [x.cpu()]
    n = torch.tensor([len(x)], dtype=torch.int64, device=info.device)
    sizes = [torch.empty_like(n) for _ in range(info.world_size)]
    dist.all_gather(sizes, n)
    counts = [int(s) for s in sizes]
    padded = x.new_zeros((max(1, *counts), *x.shape[1:]), device=info.device)  # at least one row to send
    padded[:len(x)] = x
    parts = [torch.empty_like(padded) for _ in range(info.world_size)]
    dist.all_gather(parts, padded)
    return [p[:m].cpu() for p, m in zip(parts, counts, strict=True)]
