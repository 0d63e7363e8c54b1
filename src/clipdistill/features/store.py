"""The teacher feature store: one folder of fp16 `.npy` shards keyed by sample keys, plus a manifest.

Layout (docs/features.md)::

    DIR/manifest.json                    stage "embed": teacher, preprocessing, source, counts, skips
    DIR/plan.json                        what a (resumed) run must match before it may add shards
    DIR/shard-00000/keys.txt             one sample key per line: the row order of every array below
    DIR/shard-00000/image.npy            [n, D] float16, L2-normalised teacher image embeddings
    DIR/shard-00000/text.npy             [n, D] float16, L2-normalised teacher text embeddings
    DIR/shard-00000/image_tokens.npy     [n, P, D] float16 projected patch tokens          (--tokens)
    DIR/shard-00000/text_tokens.npy      [n, L, D] float16 projected text tokens           (--tokens)
    DIR/shard-00000/text_mask.npy        [n, L] bool, real tokens up to EOS                 (--tokens)
    DIR/shard-00000/aug_image.npy        [n, K, D] float16 embeddings of K augmented views  (--augs K)
    DIR/shard-00000/aug_params.json      [n][K] replayable augmentation parameters          (--augs K)
    DIR/shard-00000/meta.json            {"count", "skips"} of this shard

A shard folder is written under a temporary name and renamed into place, so a folder that exists is
complete: a rerun after a crash computes only the missing ones. Arrays are opened with
`np.load(mmap_mode="r")` one shard at a time, so N may exceed RAM.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from clipdistill.errors import DataError, UserError
from clipdistill.manifest import read_checked
from clipdistill.zoo.spec import same_model_spec

STAGE = "embed"
TMP_PREFIX = ".tmp-"
PARAMS_CACHE = 4  # parsed aug_params shards kept per reader


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def write_shard(out: Path, index: int, keys: list[str], arrays: dict[str, np.ndarray],
                aug_params: list | None, skips: dict[str, int]) -> Path:
    """Write one shard under `.tmp-shard-NNNNN-PID`, then rename: nobody ever sees half a shard.

    A failed write (disk full, permissions) removes the temp folder and raises a `UserError` naming the
    path: a rerun then recomputes just this shard instead of trusting a partial one."""
    final = Path(out) / shard_name(index)
    tmp = final.with_name(f"{TMP_PREFIX}{final.name}-{os.getpid()}")
    for name, arr in arrays.items():
        if len(arr) != len(keys):
            raise ValueError(f"shard {index}: {name} has {len(arr)} rows for {len(keys)} keys")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr))
        (tmp / "keys.txt").write_text("".join(f"{k}\n" for k in keys))
        if aug_params is not None:
            (tmp / "aug_params.json").write_text(json.dumps(aug_params, sort_keys=True))
        (tmp / "meta.json").write_text(json.dumps({"count": len(keys), "skips": dict(sorted(skips.items()))}))
        os.replace(tmp, final)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"could not write feature shard {final} ({e.filename or tmp}: {e.strerror or e}); "
                        "free space or fix the folder, then rerun the same command: finished shards are "
                        "kept and only the missing ones are computed") from e
    return final


def clean_temp(out: Path) -> None:
    """Remove temporary shard folders a crashed run left behind."""
    for tmp in Path(out).glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(tmp, ignore_errors=True)


class FeatureStore:
    """Read side of the store. `teacher` / `fingerprint`: what the caller was told to use; a store made
    by another teacher or from another source raises `ManifestMismatch` naming the differing field."""

    def __init__(self, root: str | Path, *, teacher: str | None = None, fingerprint: str | None = None):
        self.root = Path(root)
        self.manifest = read_checked(self.root, STAGE, "feature store", teacher=teacher, fingerprint=fingerprint,
                                     same_teacher=same_model_spec)
        self.names: list[str] = list(self.manifest["shards"])
        self.starts: list[int] = []
        self.counts: list[int] = []
        n = 0
        for name in self.names:
            meta = self.root / name / "meta.json"
            if not meta.is_file():
                raise DataError(f"{self.root}: {name} is missing; rerun `clipdistill embed` with the same "
                                "arguments to finish it")
            self.starts.append(n)
            self.counts.append(json.loads(meta.read_text())["count"])
            n += self.counts[-1]
        self.n = n
        self._keys: list[str] | None = None
        self._row_of: dict[str, int] | None = None
        self._params: dict[int, list] = {}

    def __len__(self) -> int:
        return self.n

    @property
    def fields(self) -> list[str]:
        return list(self.manifest["fields"])

    @property
    def keys(self) -> list[str]:
        """Every key in store (row) order."""
        if self._keys is None:
            self._keys = [k for name in self.names for k in (self.root / name / "keys.txt").read_text().splitlines()]
        return self._keys

    def array(self, field: str, shard: int) -> np.ndarray:
        """One shard's array, memory-mapped read-only (pages load on access)."""
        if field not in self.fields:
            raise UserError(f"{self.root} has no {field!r} features (it has {self.fields}); "
                            "re-embed with --tokens / --augs to add them")
        return np.load(self.root / self.names[shard] / f"{field}.npy", mmap_mode="r")

    def chunks(self, field: str, chunk: int = 65536, rank: int = 0, world: int = 1
               ) -> Iterator[tuple[int, np.ndarray]]:
        """(global start row, in-memory copy of up to `chunk` rows) of every `world`-th chunk from the `rank`-th
        (the others are not read), shard by shard; each shard's map is dropped before the next is opened, so
        resident memory stays near one chunk."""
        i = 0
        for s, (start, count) in enumerate(zip(self.starts, self.counts, strict=True)):
            arr = self.array(field, s)
            for a in range(0, count, chunk):
                if i % world == rank:
                    yield start + a, np.array(arr[a:a + chunk])
                i += 1
            del arr

    def _owner(self, rows: np.ndarray) -> np.ndarray:
        if rows.size and (rows.min() < 0 or rows.max() >= self.n):
            raise IndexError(f"row index out of range for a store of {self.n} rows")
        return np.searchsorted(np.array(self.starts), rows, side="right") - 1

    def rows(self, field: str, rows: np.ndarray) -> np.ndarray:
        """Rows by global index (any order), gathered shard by shard."""
        rows = np.asarray(rows, dtype=np.int64)
        owner = self._owner(rows)
        out = None
        for s in np.unique(owner):
            sel = np.nonzero(owner == s)[0]
            part = self.array(field, int(s))[np.sort(rows[sel] - self.starts[s])]
            order = np.argsort(np.argsort(rows[sel] - self.starts[s], kind="stable"), kind="stable")
            if out is None:
                out = np.empty((len(rows), *part.shape[1:]), dtype=part.dtype)
            out[sel] = part[order]
        if out is None:  # no rows asked for
            shape = self.array(field, 0).shape[1:] if self.names else (0,)
            out = np.empty((0, *shape), dtype=np.float16)
        return out

    def rows_of(self, keys: list[str]) -> np.ndarray:
        """Global row of each key; -1 for keys the store does not hold (skipped or foreign samples)."""
        if self._row_of is None:
            self._row_of = {k: i for i, k in enumerate(self.keys)}
        return np.array([self._row_of.get(k, -1) for k in keys], dtype=np.int64)

    def aug_params(self, rows: np.ndarray) -> list[list[dict]]:
        """Stored augmentation parameters of global rows (replay them with `features.augment.replay`)."""
        if "aug_image" not in self.fields:
            raise UserError(f"{self.root} holds no augmented views; re-embed with --augs K")
        rows = np.asarray(rows, dtype=np.int64)
        return [self._shard_params(int(s))[r - self.starts[s]] for r, s in zip(rows, self._owner(rows), strict=True)]

    def _shard_params(self, shard: int) -> list:
        """One shard's parsed aug_params.json; the last few stay parsed, as training asks one key at a time."""
        if shard not in self._params:
            if len(self._params) >= PARAMS_CACHE:
                self._params.pop(next(iter(self._params)))
            self._params[shard] = json.loads((self.root / self.names[shard] / "aug_params.json").read_text())
        return self._params[shard]
