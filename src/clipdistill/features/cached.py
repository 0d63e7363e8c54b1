"""`CachedTeacher`: teacher outputs for a training batch read from a feature store instead of a forward.

`features(keys)` reads a batch's `CachedFeatures` (image, text, logit scale; for a sigmoid teacher also its own
scale and bias) by sample key; the distill batch carries them. With a store made with `--augs K`, `pick_view`
chooses one stored view per sample and epoch, the loader shows the student `replay(image, params)` of that
view, and `features(keys, views)` returns the teacher embedding of exactly that view (MobileCLIP's
reinforced-dataset replay).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clipdistill.errors import UserError
from clipdistill.features.augment import replay
from clipdistill.features.store import FeatureStore


@dataclass(frozen=True)
class CachedFeatures:
    """A batch's teacher outputs read from the store."""

    image: torch.Tensor  # float32 [B, D] unit
    text: torch.Tensor  # float32 [B, D] unit
    logit_scale: torch.Tensor  # the teacher's (clamped) scale, or `teacher.logit_scale` when fixed
    # a sigmoid (SigLIP) teacher's own (unclamped scale, bias): apart from logit_scale, which a fixed one replaces
    sigmoid: tuple[torch.Tensor, torch.Tensor] | None = None

    def to(self, device: torch.device, non_blocking: bool = False) -> CachedFeatures:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=non_blocking)

        sigmoid = None if self.sigmoid is None else (move(self.sigmoid[0]), move(self.sigmoid[1]))
        return CachedFeatures(move(self.image), move(self.text), move(self.logit_scale), sigmoid)


class CachedTeacher:
    def __init__(self, root: str | Path, *, teacher: str | None = None, fingerprint: str | None = None):
        self.store = FeatureStore(root, teacher=teacher, fingerprint=fingerprint)
        self.logit_scale = torch.tensor(float(self.store.manifest["teacher"].get("logit_scale", 100.0)))
        teacher = self.store.manifest["teacher"]
        bias = teacher.get("logit_bias")  # stores of sigmoid (SigLIP) teachers only, with their unclamped scale
        self.logit_bias = None if bias is None else torch.tensor(float(bias))
        self.sigmoid_scale = torch.tensor(float(teacher.get("sigmoid_scale", self.logit_scale)))
        self.num_views = int(self.store.manifest.get("options", {}).get("augs") or 0)

    def _rows(self, keys: list[str]) -> np.ndarray:
        rows = self.store.rows_of(keys)
        if (rows < 0).any():
            missing = keys[int(np.argmax(rows < 0))]
            raise UserError(f"feature store {self.store.root} has no features for sample {missing!r} "
                            "(embed it, or train on the keys it holds)")
        return rows

    def pick_view(self, key: str, epoch: int, seed: int = 0) -> int:
        """Which stored augmented view a sample shows in an epoch (a pure function: resumable, rank-free)."""
        if not self.num_views:
            raise UserError(f"feature store {self.store.root} has no augmented views (embed with --augs K)")
        return zlib.crc32(f"{seed}/{epoch}/{key}".encode()) % self.num_views

    def view_image(self, key: str, image, view: int):
        """The augmented image the teacher saw for (key, view)."""
        return replay(image, self.store.aug_params(self._rows([key]))[0][view])

    def features(self, keys: list[str], views: list[int] | None = None) -> CachedFeatures:
        """The stored teacher outputs of `keys` (of each key's augmented view `views[i]` when given)."""
        rows = self._rows(list(keys))
        if views is None:
            image = self.store.rows("image", rows)
        else:
            image = self.store.rows("aug_image", rows)[np.arange(len(rows)), np.asarray(views)]
        sigmoid = None if self.logit_bias is None else (self.sigmoid_scale, self.logit_bias)
        return CachedFeatures(torch.from_numpy(image.astype(np.float32)),
                              torch.from_numpy(self.store.rows("text", rows).astype(np.float32)), self.logit_scale,
                              sigmoid)
