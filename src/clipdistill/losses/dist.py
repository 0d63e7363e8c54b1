"""Cross-rank feature gathering for batch-contrastive losses, with a plain single-process path.

With `world_size > 1` features are all-gathered with gradient flowing back to the local shard
(`torch.distributed.nn.functional.all_gather`). Its backward sums the gradients every rank's loss sends
to this shard; with the same global loss on every rank that is `world_size * dL/dx`, which the DDP
gradient average divides back out, so parameter gradients equal those of one process on the whole
batch. Shards must have equal sizes (the loaders use `drop_last`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    # local_loss: logits rows are this rank's samples, columns the gathered batch (open_clip --local-loss)
    local_loss: bool = False

    @classmethod
    def current(cls, local_loss: bool = False) -> DistContext:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), local_loss)
        return cls(0, 1, local_loss)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return x
        if x.requires_grad:
            return torch.cat(dist_fn.all_gather(x), dim=0)
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    def labels(self, n_local: int, device: torch.device, local: bool) -> torch.Tensor:
        """Index of each row's positive column: offset by rank when rows are local."""
        if local:
            return torch.arange(n_local, device=device) + n_local * self.rank
        return torch.arange(n_local * self.world_size, device=device)
