"""Replayable image augmentations (the ml-dr `dr/transforms.py` idea, written for this toolkit).

`sample_params` draws one augmentation as a plain JSON-able dict; `replay(image, params)` applies exactly
that augmentation. `embed --augs K` stores K parameter dicts per image next to the teacher embedding of
each augmented view, so at training time the student sees the very view whose teacher embedding was
stored (MobileCLIP's cached-teacher lesson), without running the teacher.

Parameters come from a generator seeded by (seed, key, view): the same sample gets the same views whatever
the rank, shard split or batch it lands in.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
from PIL import Image, ImageEnhance
from pydantic import Field

from clipdistill.config import StrictModel


class AugmentOptions(StrictModel):
    """Ranges of the random views (RandomResizedCrop + horizontal flip + colour jitter)."""

    size: int = Field(64, ge=8, description="output side of every view (px); the teacher transform resizes after")
    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = Field(0.5, ge=0, le=1)
    jitter: float = Field(0.3, ge=0, lt=1, description="brightness/contrast/saturation factor in 1 +- jitter")


def view_rng(seed: int, key: str, view: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode()), view])


def _crop_box(rng: np.random.Generator, width: int, height: int, opts: AugmentOptions) -> list[int]:
    """torchvision RandomResizedCrop.get_params with our generator: [top, left, height, width]."""
    area = width * height
    log_ratio = (math.log(opts.ratio[0]), math.log(opts.ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*opts.scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return [int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w]
    side = min(width, height)  # fallback: centre square (as torchvision does for extreme aspect ratios)
    return [(height - side) // 2, (width - side) // 2, side, side]


def sample_params(rng: np.random.Generator, width: int, height: int, opts: AugmentOptions) -> dict:
    lo, hi = 1 - opts.jitter, 1 + opts.jitter
    return {
        "crop": _crop_box(rng, width, height, opts),
        "size": opts.size,
        "flip": bool(rng.random() < opts.flip_p),
        "brightness": float(rng.uniform(lo, hi)),
        "contrast": float(rng.uniform(lo, hi)),
        "saturation": float(rng.uniform(lo, hi)),
    }


def replay(image: Image.Image, params: dict) -> Image.Image:
    """Apply one stored augmentation exactly (pure function of image and params)."""
    top, left, h, w = params["crop"]
    out = image.convert("RGB").resize((params["size"], params["size"]), Image.BICUBIC,
                                      box=(left, top, left + w, top + h))
    if params["flip"]:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    out = ImageEnhance.Brightness(out).enhance(params["brightness"])
    out = ImageEnhance.Contrast(out).enhance(params["contrast"])
    return ImageEnhance.Color(out).enhance(params["saturation"])


def views(image: Image.Image, key: str, k: int, seed: int,
          opts: AugmentOptions) -> tuple[list[Image.Image], list[dict]]:
    """K augmented views of one image and their replay parameters."""
    params = [sample_params(view_rng(seed, key, v), image.width, image.height, opts) for v in range(k)]
    return [replay(image, p) for p in params], params
