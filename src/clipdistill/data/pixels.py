"""Image transforms cut before their ToTensor: loaders hand over uint8 pixels, the batch is made float once.

A model's transform is `Compose([... PIL steps ..., ToTensor, Normalize])` (open_clip's, and the Hugging Face
backends' mirrors of their processors). ToTensor's byte -> float conversion and Normalize are elementwise and draw
no random numbers, so doing them once on the stacked uint8 batch (`SplitTransform.finish`) gives the per-image
floats bit for bit (tested) and the same augmentation draws. The per-image work in loader workers, which share the
cores with the compute threads on a CPU machine, shrinks to the PIL steps, and a batch crosses from a worker at a
quarter of the size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T


@dataclass(frozen=True)
class SplitTransform:
    """A transform's steps before ToTensor (`head`), and its ToTensor and Normalize. Called on an image it runs
    the head and returns uint8 [H, W, 3] for an RGB result; any other result (another mode, a tensor) gets the
    ToTensor and Normalize at once, so it comes back as the whole transform would give it."""

    head: Callable
    to_tensor: T.ToTensor
    normalize: T.Normalize

    def __call__(self, image) -> torch.Tensor:
        image = self.head(image)
        if isinstance(image, Image.Image) and image.mode == "RGB":
            return torch.from_numpy(np.array(image, dtype=np.uint8))
        return self.normalize(self.to_tensor(image))

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] -> the whole transform's floats, stacked; a float batch passes through."""
        if x.dtype != torch.uint8:
            return x
        # torchvision's to_tensor for a uint8 image: CHW-contiguous bytes, to the default float dtype, / 255; then
        # Normalize's sub_ / div_, in place on this batch we own (Normalize itself would clone it first)
        x = x.permute(0, 3, 1, 2).contiguous().to(dtype=torch.get_default_dtype()).div_(255)
        return T.functional.normalize(x, self.normalize.mean, self.normalize.std, inplace=True)

    def uniform(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """One batch's outputs of `__call__`, made stackable: in a batch that mixes uint8 and finished images (an
        image of another mode) the uint8 ones are finished one by one; a uint8-only batch is left for `finish`."""
        if len({x.dtype for x in images}) > 1:
            return [self.finish(x[None])[0] for x in images]
        return images


def _is_to_tensor(step) -> bool:
    # torchvision's own, or open_clip's MaybeToTensor (a ToTensor that passes tensors through); not another
    # subclass, which may convert otherwise
    kind = type(step)
    return kind is T.ToTensor or (kind.__name__ == "MaybeToTensor" and kind.__module__ == "open_clip.transform")


def split_transform(transform: Callable) -> SplitTransform | None:
    """The transform cut before its ToTensor, or None when it is not `Compose(..., ToTensor, Normalize)`."""
    steps = getattr(transform, "transforms", None)
    if (type(transform) is T.Compose and steps is not None and len(steps) >= 2
            and _is_to_tensor(steps[-2]) and type(steps[-1]) is T.Normalize):
        return SplitTransform(T.Compose(steps[:-2]), steps[-2], steps[-1])
    return None
