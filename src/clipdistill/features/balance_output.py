"""Files of a balance DIR, and `BalanceResult`, the reader `distill` uses.

    manifest.json         stage "balance": the feature store's teacher + source, options, solved threshold/cap
    keys.txt              every sample key, store order (the row order of the arrays below)
    labels.npy            int32 [N] image-cluster label        centroids.npy     float32 [K, D] unit
    mm_labels.npy         int32 [N] multimodal label            mm_centroids.npy  (with labels or space multimodal)
    kept.npy              bool [N]                              kept_keys.txt     kept keys, store order
    report.json           kept fraction, cluster-size histograms before/after/random control, timings
    clusters.png          the same as a plot
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clipdistill.errors import UserError
from clipdistill.features.store import FeatureStore
from clipdistill.manifest import MANIFEST, read_checked, write_manifest
from clipdistill.zoo.spec import same_model_spec

if TYPE_CHECKING:  # the reader below is imported by distill, which need not load faiss
    from clipdistill.features.balance import Balanced

STAGE = "balance"


def write_outputs(out: Path, store: FeatureStore, opts_dump: dict, result: Balanced, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # the manifest marks a complete DIR: drop an earlier run's first, so a rewrite killed halfway leaves a DIR
    # that readers refuse instead of the old manifest vouching for a mix of old and new files
    (out / MANIFEST).unlink(missing_ok=True)
    (out / "keys.txt").write_text("".join(f"{k}\n" for k in store.keys))
    np.save(out / "labels.npy", result.image.labels)
    np.save(out / "centroids.npy", result.image.centroids.astype(np.float32))
    if result.multimodal is not None:
        np.save(out / "mm_labels.npy", result.multimodal.labels)
        np.save(out / "mm_centroids.npy", result.multimodal.centroids.astype(np.float32))
    np.save(out / "kept.npy", result.kept)
    (out / "kept_keys.txt").write_text("".join(f"{k}\n" for k, m in zip(store.keys, result.kept, strict=True) if m))
    (out / "report.json").write_text(json.dumps(report, indent=2))
    fm = store.manifest
    write_manifest(out, STAGE, features=str(store.root), teacher=fm["teacher"], source=fm["source"],
                   options=opts_dump, solved={"threshold": result.threshold, "cap": result.cap},
                   label_space=opts_dump["labels"],
                   counts={"samples": len(store), "kept": int(result.kept.sum()),
                           "clusters": int(result.image.centroids.shape[0])})


class BalanceResult:
    """Read side of a balance DIR.

    r = BalanceResult(DIR, teacher=SPEC, fingerprint=src.fingerprint())   # refuses other inputs
    r.kept_keys                          list[str], the training subset
    r.labels_for(keys)                   int64 cluster labels (label space: --labels, image by default)
    r.centroids()                        float32 [K, D] unit centres of that label space
    r.num_clusters, r.keys, r.labels()   (space="image" | "multimodal" to pick one explicitly)
    """

    def __init__(self, root: str | Path, *, teacher: str | None = None, fingerprint: str | None = None):
        self.root = Path(root)
        self.manifest = read_checked(self.root, STAGE, "balance output", teacher=teacher, fingerprint=fingerprint,
                                     same_teacher=same_model_spec)
        self.space = self.manifest["label_space"]
        self._keys: list[str] | None = None
        self._index: dict[str, int] | None = None

    def _file(self, space: str | None, name: str) -> Path:
        space = space or self.space
        if space not in ("image", "multimodal"):
            raise UserError(f"label space must be image or multimodal, got {space!r}")
        path = self.root / (name if space == "image" else f"mm_{name}")
        if not path.is_file():
            raise UserError(f"{self.root} has no {space} labels: rerun balance with --labels {space}")
        return path

    @property
    def keys(self) -> list[str]:
        if self._keys is None:
            self._keys = (self.root / "keys.txt").read_text().splitlines()
        return self._keys

    @property
    def kept_keys(self) -> list[str]:
        return (self.root / "kept_keys.txt").read_text().splitlines()

    @property
    def num_clusters(self) -> int:
        return int(self.centroids().shape[0])

    def labels(self, space: str | None = None) -> np.ndarray:
        return np.load(self._file(space, "labels.npy"))

    def centroids(self, space: str | None = None) -> np.ndarray:
        return np.load(self._file(space, "centroids.npy"))

    def labels_for(self, keys: list[str], space: str | None = None, missing: int | None = None) -> np.ndarray:
        """int64 labels of `keys`; a key the balance never saw is an error, or `missing` when given (e.g. -1
        for a per-dataset-index table whose unembedded rows are never drawn because they are not kept)."""
        if self._index is None:
            self._index = {k: i for i, k in enumerate(self.keys)}
        rows = np.array([self._index.get(k, -1) for k in keys], dtype=np.int64)
        if missing is None and (rows < 0).any():
            raise UserError(f"balance output {self.root} has no cluster label for sample "
                            f"{keys[int(np.argmax(rows < 0))]!r}")
        labels = self.labels(space)[np.maximum(rows, 0)].astype(np.int64)
        return np.where(rows < 0, missing if missing is not None else 0, labels)
