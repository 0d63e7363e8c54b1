"""CLIP-TD's teacher image signals read from a feature store instead of running the teacher's image tower.

Embed a task's image folder once per teacher:

    clipdistill embed --teacher SPEC --data images:WORLD/tasks/vqa/images --tokens --out feats_vqa

and set `teacher_features: feats_vqa` on the task: every fine-tune cell (every method, fraction and seed of a
protocol) then reads each image's pooled feature and patch tokens by its path relative to that folder. The
teacher's text tower still runs (the question / hypothesis tokens and the candidate answers of the confidence
weights depend on the item, not the image). The teacher's image transform is its deterministic eval
transform, so the stored features are the ones an online teacher would compute, up to float16 rounding; they
are stored L2-normalised, which CLIP-TD's uses are insensitive to (cosine relevance and distances,
normalised candidate scores) except that pooling patch tokens onto a coarser student grid averages unit
vectors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from clipdistill.errors import DataError, ManifestMismatch, UserError
from clipdistill.features.store import FeatureStore
from clipdistill.zoo.base import ClipModel


class CachedImageTeacher:
    def __init__(self, root: str | Path, teacher: ClipModel, image_dir: str | Path):
        self.store = FeatureStore(root)  # the teacher is identified by its weights, not by how its SPEC is spelt
        stored = self.store.manifest["teacher"].get("weights_sha256")
        if stored != teacher.weights_hash():
            raise ManifestMismatch(f"feature store {root} was made with other weights for {teacher.spec} "
                                   "(teacher.weights_sha256 differs); re-embed with this teacher")
        if "image_tokens" not in self.store.fields:
            raise UserError(f"feature store {root} has no patch tokens; re-embed with --tokens")
        self.root, self.image_dir = Path(root), Path(image_dir).resolve()

    def _keys(self, paths: list[Path]) -> list[str]:
        keys = []
        for p in paths:
            p = Path(p).resolve()
            keys.append(p.relative_to(self.image_dir).as_posix() if p.is_relative_to(self.image_dir) else str(p))
        return keys

    def _rows(self, paths: list[Path]) -> np.ndarray:
        keys = self._keys(paths)
        rows = self.store.rows_of(keys)
        missing = [k for k, r in zip(keys, rows, strict=True) if r < 0]
        if missing:
            raise DataError(f"{len(missing)} of {len(keys)} task images are not in feature store {self.root} "
                            f"(e.g. {missing[0]!r}); embed the task's images: clipdistill embed --teacher SPEC "
                            f"--data images:{self.image_dir} --tokens --out {self.root}")
        return rows

    def check_covers(self, paths: list[Path]) -> None:
        """Fail before training when any image the run will read is missing from the store."""
        self._rows(sorted(set(paths)))

    def signals(self, paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled [B, D], patch tokens [B, P, D]) float32, L2-normalised, for the images at `paths`."""
        rows = self._rows(paths)
        pooled = torch.from_numpy(self.store.rows("image", rows).astype(np.float32))
        patches = torch.from_numpy(self.store.rows("image_tokens", rows).astype(np.float32))
        return pooled, patches
