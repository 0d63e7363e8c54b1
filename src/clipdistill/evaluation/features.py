"""Batched, normalised image / text embeddings for evaluation, with encode timings.

Images are decoded and transformed in DataLoader workers (`num_workers`); undecodable images are
dropped from the batch and counted, never fatal. The time spent inside `encode_image` /
`encode_text` is measured separately: it is the encode throughput the report shows.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from clipdistill.errors import DataError
from clipdistill.progress import StageProgress
from clipdistill.zoo import ClipModel


class ImageSet(Protocol):
    def __len__(self) -> int: ...
    def load(self, i: int): ...


@dataclass(frozen=True)
class SplitTransform:
    """An eval transform `Compose(..., ToTensor, Normalize)` cut before its ToTensor (`split_transform`)."""

    head: Callable  # the per-image steps before ToTensor (PIL resize, crop, mode)
    to_tensor: T.ToTensor
    normalize: T.Normalize


def split_transform(transform: Callable) -> SplitTransform | None:
    """ToTensor's byte -> float conversion and Normalize are elementwise, so done once on the stacked uint8 batch
    (`finish_batch`) they give the per-image floats bit for bit (tested), the loader's per-image work shrinks to
    the PIL steps and a batch crosses from loader workers at a quarter of the size. None for any other transform.
    open_clip's MaybeToTensor is a ToTensor."""
    steps = getattr(transform, "transforms", None)
    if (type(transform) is T.Compose and steps is not None and len(steps) >= 2
            and isinstance(steps[-2], T.ToTensor) and type(steps[-1]) is T.Normalize):
        return SplitTransform(T.Compose(steps[:-2]), steps[-2], steps[-1])
    return None


class TransformedImages(Dataset):
    """Item i: (image tensor or None, i). With a split transform an RGB image stays uint8 [H, W, 3] for
    `finish_batch`; anything else (another mode, a head that returns a tensor) is transformed in full."""

    def __init__(self, images: ImageSet, transform: Callable, n: int):
        self.images, self.transform, self.n = images, transform, n
        self.split = split_transform(transform)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        img = self.images.load(i)
        if img is None:
            return None, i
        if self.split is None:
            return self.transform(img), i
        img = self.split.head(img)
        if isinstance(img, Image.Image) and img.mode == "RGB":
            return torch.from_numpy(np.array(img, dtype=np.uint8)), i
        return self.split.normalize(self.split.to_tensor(img)), i


def finish_batch(x: torch.Tensor, split: SplitTransform | None) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> what ToTensor + Normalize give per image, stacked; a float batch passes through."""
    if x.dtype != torch.uint8 or split is None:
        return x
    # torchvision's to_tensor for a uint8 image: CHW-contiguous bytes, to the default float dtype, / 255
    return split.normalize(x.permute(0, 3, 1, 2).contiguous().to(dtype=torch.get_default_dtype()).div(255))


def collate_images(batch: list, split: SplitTransform | None = None) -> tuple[torch.Tensor | None, torch.Tensor, int]:
    """(stacked images or None, their dataset indices, how many were undecodable). In a batch that mixes uint8
    and fully transformed images (an image of another mode), the uint8 ones are finished one by one."""
    kept = [(x, i) for x, i in batch if x is not None]
    if not kept:
        return None, torch.empty(0, dtype=torch.long), len(batch)
    xs = [x for x, _ in kept]
    if len({x.dtype for x in xs}) > 1:
        xs = [finish_batch(x[None], split)[0] for x in xs]
    return torch.stack(xs), torch.tensor([i for _, i in kept]), len(batch) - len(kept)


def image_batches(images: ImageSet, transform: Callable, n: int, *, batch_size: int, num_workers: int
                  ) -> Iterator[tuple[torch.Tensor | None, torch.Tensor, int]]:
    """The first n images as float batches `transform` would give one by one, with their indices and skip counts."""
    ds = TransformedImages(images, transform, n)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=functools.partial(collate_images, split=ds.split))
    for x, idx, skipped in loader:
        yield (None if x is None else finish_batch(x, ds.split)), idx, skipped


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
