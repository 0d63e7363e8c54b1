"""Batched, normalised image / text embeddings for evaluation, with encode timings.

Images are decoded and transformed in DataLoader workers (`num_workers`), up to the ToTensor of a
`Compose(..., ToTensor, Normalize)` transform, whose last two steps run once per batch (data/pixels.py);
undecodable images are dropped from the batch and counted, never fatal. The time spent inside `encode_image` /
`encode_text` is measured separately: it is the encode throughput the report shows.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from clipdistill.data.pixels import SplitTransform, split_transform
from clipdistill.errors import DataError
from clipdistill.progress import StageProgress
from clipdistill.zoo import ClipModel


class ImageSet(Protocol):
    def __len__(self) -> int: ...
    def load(self, i: int): ...


class TransformedImages(Dataset):
    """Item i: (image tensor or None, i). A `Compose(..., ToTensor, Normalize)` transform runs up to its ToTensor
    here (data/pixels.py): an RGB image stays uint8 [H, W, 3] and `image_batches` finishes the batch."""

    def __init__(self, images: ImageSet, transform: Callable, n: int):
        self.images, self.n = images, n
        self.split = split_transform(transform)
        self.transform = self.split or transform

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        img = self.images.load(i)
        return (None if img is None else self.transform(img)), i


def collate_images(batch: list, split: SplitTransform | None = None) -> tuple[torch.Tensor | None, torch.Tensor, int]:
    """(stacked images or None, their dataset indices, how many were undecodable)."""
    kept = [(x, i) for x, i in batch if x is not None]
    if not kept:
        return None, torch.empty(0, dtype=torch.long), len(batch)
    xs = [x for x, _ in kept]
    return (torch.stack(split.uniform(xs) if split else xs), torch.tensor([i for _, i in kept]),
            len(batch) - len(kept))


def image_batches(images: ImageSet, transform: Callable, n: int, *, batch_size: int, num_workers: int
                  ) -> Iterator[tuple[torch.Tensor | None, torch.Tensor, int]]:
    """The first n images as float batches `transform` would give one by one, with their indices and skip counts."""
    ds = TransformedImages(images, transform, n)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=functools.partial(collate_images, split=ds.split))
    for x, idx, skipped in loader:
        yield (x if x is None or ds.split is None else ds.split.finish(x)), idx, skipped


@dataclass
class EncodedImages:
    features: torch.Tensor  # [M, D], L2-normalised, float32 on CPU
    index: torch.Tensor  # [M] dataset index of each row (skipped images are absent)
    skipped: int
    encode_seconds: float  # time inside encode_image only


@contextmanager
def eval_mode(model: torch.nn.Module):
    """Eval + no_grad, restoring the training flag (in-loop evaluation hands us a training student)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def encode_images(model: ClipModel, images: ImageSet, *, batch_size: int = 64, num_workers: int = 0,
                  device: str = "cpu", limit: int | None = None, progress: bool = True,
                  label: str = "images") -> EncodedImages:
    n = len(images) if limit is None else min(limit, len(images))
    feats, index, skipped, seconds = [], [], 0, 0.0
    bar = StageProgress(f"encoding {label}", n, unit="images", enabled=progress, transient=True)
    with eval_mode(model), bar:
        for x, idx, n_skipped in image_batches(images, model.eval_transform, n, batch_size=batch_size,
                                               num_workers=num_workers):
            skipped += n_skipped
            if x is not None:
                t0 = time.perf_counter()
                f = model.encode_image(x.to(device))
                seconds += time.perf_counter() - t0
                feats.append(F.normalize(f.float(), dim=-1).cpu())
                index.append(idx)
            bar.advance(len(idx) + n_skipped, samples=len(idx) + n_skipped)
    if not feats:
        raise DataError(f"none of the {n} {label} could be decoded")
    return EncodedImages(torch.cat(feats), torch.cat(index), skipped, seconds)


def encode_texts(model: ClipModel, texts: list[str], *, batch_size: int = 256,
                 device: str = "cpu") -> tuple[torch.Tensor, float]:
    """([N, D] L2-normalised text embeddings, seconds inside encode_text)."""
    out, seconds = [], 0.0
    with eval_mode(model):
        for s in range(0, len(texts), batch_size):
            ids = model.tokenizer(texts[s:s + batch_size]).to(device)
            t0 = time.perf_counter()
            f = model.encode_text(ids)
            seconds += time.perf_counter() - t0
            out.append(F.normalize(f.float(), dim=-1).cpu())
    return torch.cat(out), seconds
