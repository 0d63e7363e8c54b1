"""Feature store layout: atomic shards, gathers across shards, chunked reads, manifest refusals."""

from __future__ import annotations

import numpy as np
import pytest

from clipdistill.errors import DataError, ManifestMismatch, UserError
from clipdistill.features.store import FeatureStore, clean_temp, shard_name, write_shard
from clipdistill.manifest import write_manifest


def _store(root, sizes=(4, 3, 5), with_augs=False):
    """Three shards of sizes `sizes`; row r holds the value r in every column (easy to check gathers)."""
    names, r = [], 0
    for i, n in enumerate(sizes):
        keys = [f"k{r + j}" for j in range(n)]
        image = np.repeat(np.arange(r, r + n, dtype=np.float16)[:, None], 2, axis=1)
        arrays = {"image": image, "text": -image}
        params = None
        if with_augs:
            arrays["aug_image"] = np.stack([image, image + 0.5], axis=1)
            params = [[{"row": r + j, "view": v} for v in range(2)] for j in range(n)]
        write_shard(root, i, keys, arrays, params, {"zero_byte": i})
        names.append(shard_name(i))
        r += n
    fields = ["image", "text"] + (["aug_image"] if with_augs else [])
    write_manifest(root, "embed", teacher={"spec": "open_clip:T@w", "embed_dim": 2},
                   source={"spec": "world:W", "fingerprint": "abc"}, shards=names, fields=fields,
                   counts={"samples": r, "skipped": 3, "shards": len(names)})
    return root


def test_rows_and_chunks_read_back_across_shards(tmp_path):
    store = FeatureStore(_store(tmp_path))
    assert len(store) == 12 and store.keys == [f"k{i}" for i in range(12)]
    rows = np.array([11, 0, 5, 4, 3, 5, 7])  # any order, repeats, shard boundaries (3|4, 6|7)
    assert store.rows("image", rows)[:, 0].tolist() == rows.tolist()
    assert store.rows("text", rows)[:, 1].tolist() == (-rows).tolist()
    starts, values = [], []
    for start, block in store.chunks("image", chunk=2):
        starts.append(start)
        values.extend(block[:, 0].tolist())
    assert values == list(range(12))
    assert starts == [0, 2, 4, 6, 7, 9, 11]  # a chunk never spans two shards
    assert store.rows_of(["k6", "nope", "k0"]).tolist() == [6, -1, 0]
    assert store.rows("image", np.array([], dtype=np.int64)).shape == (0, 2)
    with pytest.raises(IndexError):
        store.rows("image", np.array([12]))


def test_arrays_are_memory_mapped_and_read_only(tmp_path):
    store = FeatureStore(_store(tmp_path))
    arr = store.array("image", 1)
    assert isinstance(arr, np.memmap) and arr.dtype == np.float16 and arr.shape == (3, 2)
    assert not arr.flags.writeable


def test_other_teacher_or_source_is_refused_by_field(tmp_path):
    root = _store(tmp_path)
    FeatureStore(root, teacher="open_clip:T@w", fingerprint="abc")  # the right inputs are accepted
    with pytest.raises(ManifestMismatch, match="teacher.spec: manifest has 'open_clip:T@w'"):
        FeatureStore(root, teacher="open_clip:other")
    with pytest.raises(ManifestMismatch, match="source.fingerprint"):
        FeatureStore(root, fingerprint="xyz")


def test_incomplete_store_and_missing_field_are_clear_errors(tmp_path):
    root = _store(tmp_path)
    with pytest.raises(UserError, match="--tokens"):
        FeatureStore(root).rows("image_tokens", np.array([0]))
    with pytest.raises(UserError, match="--augs"):
        FeatureStore(root).aug_params(np.array([0]))
    (root / shard_name(1) / "meta.json").unlink()
    with pytest.raises(DataError, match="shard-00001 is missing; rerun"):
        FeatureStore(root)


def test_write_shard_is_atomic_and_checks_row_counts(tmp_path):
    with pytest.raises(ValueError, match="2 rows for 3 keys"):
        write_shard(tmp_path, 0, ["a", "b", "c"], {"image": np.zeros((2, 2), np.float16)}, None, {})
    assert not (tmp_path / shard_name(0)).exists()  # a failed write leaves no shard that looks complete
    assert all(p.name.startswith(".tmp-shard-00000-") for p in tmp_path.iterdir())
    clean_temp(tmp_path)
    assert list(tmp_path.iterdir()) == []
    write_shard(tmp_path, 0, ["a"], {"image": np.ones((1, 2), np.float16)}, None, {"missing_caption": 2})
    assert sorted(p.name for p in (tmp_path / shard_name(0)).iterdir()) == ["image.npy", "keys.txt", "meta.json"]


def test_aug_params_follow_rows(tmp_path):
    store = FeatureStore(_store(tmp_path, with_augs=True))
    params = store.aug_params(np.array([8, 2]))
    assert [p[1] for p in params] == [{"row": 8, "view": 1}, {"row": 2, "view": 1}]
    assert store.rows("aug_image", np.array([8]))[0, :, 0].tolist() == [8.0, 8.5]
