"""Cross-rank feature gathering for batch-contrastive losses, with a plain single-process path.

With `world_size > 1` features are all-gathered with gradient flowing back to the local shard
(`_AllGatherGrad`, what `torch.distributed.nn.functional.all_gather` did before torch 2.13 deprecated it in favour
of a private module). Its backward sums the gradients every rank's loss sends
to this shard; with the same global loss on every rank that is `world_size * dL/dx`, which the DDP
gradient average divides back out, so parameter gradients equal those of one process on the whole
batch. Shards may differ in size (a rank whose batch lost a corrupt sample): `sized` learns every rank's
row count once per forward that gathers, `gather` pads to the largest shard and strips the padding again, and `labels`
offsets by the rows of the ranks before this one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
from torch.autograd import Function


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    # local_loss: logits rows are this rank's samples, columns the gathered batch (open_clip --local-loss)
    local_loss: bool = False
    # rows per rank, from `sized`; None means equal shards (every rank has the caller's row count)
    sizes: tuple[int, ...] | None = None

    @classmethod
    def current(cls, local_loss: bool = False) -> DistContext:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), local_loss)
        return cls(0, 1, local_loss)

    def sized(self, n_local: int, device: torch.device) -> DistContext:
        """This context with every rank's row count (one small collective; every rank must call it)."""
        if self.world_size == 1:
            return self
        mine = torch.tensor([n_local], dtype=torch.long, device=device)
        parts = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(parts, mine)
        return replace(self, sizes=tuple(int(p) for p in parts))

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return x
        sizes = self.sizes or (x.shape[0],) * self.world_size
        if x.shape[0] != sizes[self.rank]:
            raise ValueError(f"rank {self.rank} gathers {x.shape[0]} rows but announced {sizes[self.rank]}")
        longest = max(sizes)
        if x.shape[0] < longest:  # all_gather needs equal shapes: pad, then drop every rank's padding
            x = torch.cat([x, x.new_zeros(longest - x.shape[0], *x.shape[1:])])
        parts = _AllGatherGrad.apply(x).split(longest)
        return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)], dim=0)

    def labels(self, n_local: int, device: torch.device, local: bool) -> torch.Tensor:
        """Index of each row's positive column in the gathered batch: offset by the earlier ranks' rows when rows
        are local."""
        sizes = self.sizes or (n_local,) * self.world_size
        if local:
            return torch.arange(n_local, device=device) + sum(sizes[: self.rank])
        return torch.arange(sum(sizes), device=device)


class _AllGatherGrad(Function):
    """all_gather of equal shards, concatenated along rows; the backward hands each rank the sum over ranks of
    the gradients sent to its shard."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.new_empty(dist.get_world_size() * x.shape[0], *x.shape[1:])
        dist.all_gather_single(out, x.contiguous())
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        mine = grad.new_empty(grad.shape[0] // dist.get_world_size(), *grad.shape[1:])
        dist.reduce_scatter_single(mine, grad.contiguous())  # gloo has it too since torch 2.13
        return mine
