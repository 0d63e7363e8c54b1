"""`CachedTeacher`: teacher outputs for a training batch read from a feature store instead of a forward.

The distill task reads `cached_t_image`, `cached_t_text` (and `cached_t_logit_scale`; for a sigmoid teacher also
`cached_t_logit_bias` with its own `cached_t_sigmoid_scale`) from the batch; this fills them by sample key.
With a store made with `--augs K`, `pick_view` chooses one stored view per sample and epoch, the loader shows
the student `replay(image, params)` of that view, and `attach(batch, views)` returns the teacher embedding of
exactly that view (MobileCLIP's reinforced-dataset replay).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch

from clipdistill.errors import UserError
from clipdistill.features.augment import replay
from clipdistill.features.store import FeatureStore


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

    def attach(self, batch: dict, views: list[int] | None = None) -> dict:
        """Add cached_t_image / cached_t_text (float32, unit) and cached_t_logit_scale for batch["key"]."""
        rows = self._rows(list(batch["key"]))
        if views is None:
            image = self.store.rows("image", rows)
        else:
            image = self.store.rows("aug_image", rows)[np.arange(len(rows)), np.asarray(views)]
        batch["cached_t_image"] = torch.from_numpy(image.astype(np.float32))
        batch["cached_t_text"] = torch.from_numpy(self.store.rows("text", rows).astype(np.float32))
        batch["cached_t_logit_scale"] = self.logit_scale
        if self.logit_bias is not None:  # kept apart from cached_t_logit_scale, which a fixed teacher scale replaces
            batch["cached_t_sigmoid_scale"] = self.sigmoid_scale
            batch["cached_t_logit_bias"] = self.logit_bias
        return batch
