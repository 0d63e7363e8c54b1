"""`embed`: resume after a crash equals an uninterrupted run, 2 processes equal 1, tokens and replayable
augmented views are stored, skips are counted, and a rerun into a store of other inputs is refused."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from clipdistill.errors import ManifestMismatch
from clipdistill.features import embed as embed_mod
from clipdistill.features import replay
from clipdistill.features.augment import AugmentOptions, views
from clipdistill.features.embed import EmbedOptions, embed_features
from clipdistill.features.store import FeatureStore
from ddp_helpers import free_port


def shard_bytes(store) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.glob("shard-*/*"))}


@pytest.fixture(scope="module")
def pairs(world):
    """24 world pairs + one row whose image is missing + one with an empty caption, as a CSV source."""
    with open(world / "pairs.csv") as f:
        rows = list(csv.DictReader(f))[:24]
    rows += [{"key": "gone", "image": "images/none.png", "caption": "x"},
             {"key": "mute", "image": rows[0]["image"], "caption": ""}]
    path = world / "pairs24.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["key", "image", "caption"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def opts(data, teacher, **kw) -> EmbedOptions:
    return EmbedOptions(teacher=teacher, data=str(data), shard_size=8, batch_size=8, device="cpu", **kw)


@pytest.fixture(scope="module")
def reference(pairs, teacher, tmp_path_factory):
    return embed_features(opts(pairs, teacher), tmp_path_factory.mktemp("ref") / "store")


def test_store_contents_and_skips(reference, pairs):
    store = FeatureStore(reference)
    assert len(store) == 24 and store.keys[:2] == ["p000000", "p000001"]
    assert store.manifest["skips"] == {"missing_caption": 1, "missing_image": 1}
    assert store.manifest["counts"] == {"samples": 24, "skipped": 2, "shards": 4}
    image = store.rows("image", np.arange(24))
    assert image.dtype == np.float16 and np.allclose(np.linalg.norm(image.astype(np.float32), axis=1), 1, atol=2e-3)
    assert len(store.manifest["teacher"]["weights_sha256"]) == 64
    assert store.manifest["preprocessing"]["image_size"] == 32


def test_tar_shards_give_the_same_features(reference, world, teacher, tmp_path):
    out = embed_features(opts(f"{world}/pairs/shard-00000.tar", teacher), tmp_path / "tar")
    store, ref = FeatureStore(out), FeatureStore(reference)
    assert store.manifest["shards"] == ["shard-00000"] and store.keys[0] == "shard-00000/p000000"
    assert np.array_equal(store.rows("image", np.arange(24)), ref.rows("image", np.arange(24)))


def test_resume_after_crash_equals_uninterrupted(reference, pairs, teacher, tmp_path, monkeypatch):
    out = tmp_path / "store"
    real, written = embed_mod.write_shard, []

    def crash_on_third(*a, **k):
        if len(written) == 2:
            raise RuntimeError("simulated crash")
        written.append(real(*a, **k))

    monkeypatch.setattr(embed_mod, "write_shard", crash_on_third)
    with pytest.raises(RuntimeError):
        embed_features(opts(pairs, teacher), out)
    assert not (out / "manifest.json").exists()
    monkeypatch.setattr(embed_mod, "write_shard", real)
    computed, real_embed_shard = [], embed_mod.embed_shard
    monkeypatch.setattr(embed_mod, "embed_shard", lambda *a: computed.append(1) or real_embed_shard(*a))
    embed_features(opts(pairs, teacher), out)
    assert len(computed) == 2  # only the two missing shards
    assert shard_bytes(out) == shard_bytes(reference)


def test_rerun_with_other_inputs_refused(reference, world, teacher):
    with pytest.raises(ManifestMismatch, match="source.fingerprint"):
        embed_features(opts(f"world:{world}", teacher), reference)


def test_phash_stores_each_pictures_perceptual_hash(reference, pairs, teacher, tmp_path):
    import imagehash
    from PIL import Image

    out = embed_features(opts(pairs, teacher, phash=True), tmp_path / "store")
    store = FeatureStore(out)
    assert store.fields == ["image", "text", "phash"] and store.manifest["options"]["phash"] is True
    hashes = store.rows("phash", np.arange(len(store)))
    assert hashes.dtype == np.uint64 and len(hashes) == 24
    for row in (0, 13):  # the hash of the picture as stored, bit for bit imagehash's pHash
        image = Image.open(pairs.parent / "images" / "pairs" / f"{store.keys[row]}.png")
        assert f"{int(hashes[row]):016x}" == str(imagehash.phash(image))
    assert np.array_equal(store.rows("image", np.arange(24)), FeatureStore(reference).rows("image", np.arange(24)))
    with pytest.raises(ManifestMismatch, match="options.phash"):  # a resume must not mix shards with and without
        embed_features(opts(pairs, teacher), out)


def test_two_processes_equal_one(reference, pairs, teacher, tmp_path):
    out = tmp_path / "store2"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "clipdistill", "embed", "--teacher", teacher, "--data", str(pairs), "--out", str(out),
           "--shard-size", "8", "--batch-size", "8", "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shard_bytes(out) == shard_bytes(reference)
    assert FeatureStore(out).manifest["skips"] == FeatureStore(reference).manifest["skips"]


def test_tokens_and_replayable_augmentations(pairs, teacher, tmp_path):
    from PIL import Image

    from clipdistill.zoo import load_model

    out = embed_features(opts(pairs, teacher, tokens=True, augs=2), tmp_path / "store")
    store = FeatureStore(out)
    d = store.manifest["teacher"]["embed_dim"]
    assert store.rows("image_tokens", [0]).shape == (1, 64, d)  # 32 px / patch 4 = 8 x 8 patches
    mask = store.rows("text_mask", np.arange(3))
    assert mask[:, 0].all() and not mask[:, -1].all()  # real tokens first, padding after EOS
    assert store.rows("aug_image", [5]).shape == (1, 2, d)
    # replay the stored parameters of row 5 and the teacher gives back the stored embedding of each view
    model = load_model(teacher)
    row = 5
    image = Image.open(pairs.parent / "images" / "pairs" / f"{store.keys[row]}.png").convert("RGB")
    for v, params in enumerate(store.aug_params(np.array([row]))[0]):
        view = replay(image, params)
        assert view.size == (params["size"], params["size"])
        with torch.no_grad():
            emb = torch.nn.functional.normalize(model.encode_image(model.eval_transform(view)[None]), dim=-1)
        assert np.allclose(emb[0].numpy(), store.rows("aug_image", [row])[0, v].astype(np.float32), atol=3e-3)
    # views differ from each other and are a pure function of (seed, key, view)
    a, b = store.aug_params(np.array([row]))[0]
    assert a != b
    again = views(image, store.keys[row], 2, 0, AugmentOptions())[1]
    assert again == [a, b]


def test_cached_teacher_fills_a_batch(pairs, teacher, tmp_path):
    from PIL import Image

    from clipdistill.errors import UserError
    from clipdistill.features import CachedTeacher

    out = embed_features(opts(pairs, teacher, augs=3), tmp_path / "store")
    cached = CachedTeacher(out, teacher=teacher)
    store = cached.store
    keys = [store.keys[4], store.keys[0]]
    feats = cached.features(keys)
    assert torch.equal(feats.image, torch.from_numpy(store.rows("image", [4, 0]).astype(np.float32)))
    assert feats.text.shape == (2, store.manifest["teacher"]["embed_dim"])
    assert float(feats.logit_scale) == pytest.approx(store.manifest["teacher"]["logit_scale"])
    views = [cached.pick_view(k, epoch=1) for k in keys]
    assert views == [cached.pick_view(k, epoch=1) for k in keys] and all(0 <= v < 3 for v in views)
    feats = cached.features(keys, views)
    assert torch.equal(feats.image[1],
                       torch.from_numpy(store.rows("aug_image", [0])[0, views[1]].astype(np.float32)))
    image = Image.open(pairs.parent / "images" / "pairs" / f"{keys[1]}.png").convert("RGB")
    assert cached.view_image(keys[1], image, views[1]).size == (64, 64)
    with pytest.raises(UserError, match="no features for sample 'nope'"):
        cached.features(["nope"])
    with pytest.raises(ManifestMismatch, match="teacher.spec"):
        CachedTeacher(out, teacher="open_clip:other")
