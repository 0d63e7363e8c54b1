"""Helpers for the feature tests (a module of its own: `conftest` names clash across test folders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clipdistill.features.store import shard_name, write_shard
from clipdistill.manifest import write_manifest


def make_store(root: Path, keys: list[str], image: np.ndarray, text: np.ndarray | None = None,
               shard_size: int = 1000, teacher: str = "synthetic", fingerprint: str = "fp") -> Path:
    """A feature store with given embeddings (rows unit-normalised, fp16), as `embed` lays it out."""
    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)

    image = unit(image)
    text = unit(text) if text is not None else image
    names = []
    for i, lo in enumerate(range(0, len(keys), shard_size)):
        sl = slice(lo, lo + shard_size)
        write_shard(root, i, keys[sl], {"image": image[sl], "text": text[sl]}, None, {})
        names.append(shard_name(i))
    write_manifest(root, "embed", teacher={"spec": teacher, "embed_dim": image.shape[1]},
                   source={"spec": "synthetic", "fingerprint": fingerprint}, shards=names, fields=["image", "text"],
                   counts={"samples": len(keys), "skipped": 0, "shards": len(names)}, skips={})
    return root
