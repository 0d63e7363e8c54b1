"""Helpers for the feature tests (a module of its own: `conftest` names clash across test folders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clipdistill.features.store import shard_name, write_shard
from clipdistill.manifest import write_manifest


def make_store(root: Path, keys: list[str], image: np.ndarray, text: np.ndarray | None = None,
               shard_size: int = 1000, teacher: str = "synthetic", fingerprint: str = "fp",
               phash: np.ndarray | None = None) -> Path:
    """A feature store with given embeddings (rows unit-normalised, fp16) and optional perceptual hashes, as
    `embed` lays it out."""
    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)

    image = unit(image)
    text = unit(text) if text is not None else image
    names = []
    for i, lo in enumerate(range(0, len(keys), shard_size)):
        sl = slice(lo, lo + shard_size)
        arrays = {"image": image[sl], "text": text[sl]} | ({} if phash is None else {"phash": phash[sl]})
        write_shard(root, i, keys[sl], arrays, None, {})
        names.append(shard_name(i))
    write_manifest(root, "embed", teacher={"spec": teacher, "embed_dim": image.shape[1]},
                   source={"spec": "synthetic", "fingerprint": fingerprint}, shards=names,
                   fields=["image", "text"] + ([] if phash is None else ["phash"]),
                   counts={"samples": len(keys), "skipped": 0, "shards": len(names)}, skips={})
    return root
