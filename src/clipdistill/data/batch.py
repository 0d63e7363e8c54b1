"""What `make_loader` yields: `LoaderBatch`, one batch of samples with each model's `View` of them."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from clipdistill.data.sources import SkipCounter


@dataclass(frozen=True)
class View:
    """One model's inputs: images through its transform, captions through its tokenizer."""

    image: torch.Tensor
    text: torch.Tensor

    def to(self, device: torch.device, non_blocking: bool = False) -> View:
        return View(self.image.to(device, non_blocking=non_blocking), self.text.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> View:
        """A copy in page-locked memory: a DataLoader with `pin_memory=True` pins a batch object only through this
        method (without it the batch comes back unpinned, silently)."""
        return View(self.image.pin_memory(), self.text.pin_memory())


@dataclass(frozen=True)
class LoaderBatch:
    keys: list[str]  # sample keys (what every join matches on)
    captions: list[str]  # the raw captions, as the source read them (caption limits applied)
    index: torch.Tensor  # source row (map source) or position in its tar (stream): never a join key
    views: tuple[View, ...]  # one per (transform, tokenizer) passed to make_loader, in that order: student first
    # drops made while reading this batch, and kept samples' fix-ups (caption_truncated): they ride in the batch
    # because loader workers count them in another process; data.Batches adds them to the source's counter
    skips: SkipCounter
    items: int  # samples read for this batch, dropped ones included (a stream's drop_last compares it)

    @property
    def student(self) -> View:
        return self.views[0]

    def __len__(self) -> int:
        return len(self.keys)

    def to(self, device: torch.device, non_blocking: bool = False) -> LoaderBatch:
        """Every tensor on `device` (what the training loop calls)."""
        return replace(self, index=self.index.to(device, non_blocking=non_blocking),
                       views=tuple(v.to(device, non_blocking) for v in self.views))

    def pin_memory(self) -> LoaderBatch:
        """Every tensor in page-locked memory, the other fields as they are (see `View.pin_memory`)."""
        return replace(self, index=self.index.pin_memory(), views=tuple(v.pin_memory() for v in self.views))
