"""`distill` with a cached teacher (feature store) and on a balance output (data.keep), on the tiny world:
cached features join by key (same first-step loss as the online teacher), data.keep trains on the kept keys
with the balance's labels and centres, stores / balances of other inputs are refused, and an `--augs` store
shows the student the very view whose teacher embedding it reads."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clipdistill.data import open_source
from clipdistill.distill.batch import DistillBatch
from clipdistill.distill.config import DistillConfig
from clipdistill.distill.run import run_distill
from clipdistill.distill.task import DistillTask
from clipdistill.errors import ManifestMismatch, UserError
from clipdistill.features import BalanceResult, CachedTeacher
from clipdistill.features.balance import BalanceOptions, run_balance
from clipdistill.features.embed import EmbedOptions, embed_features
from clipdistill.losses.cluster import ClusterDiscrimination
from clipdistill.zoo import load_model

ARCH = "open_clip:cd-student-xs-32"
BATCH = 16
CID = {"clip": {}, "cluster": {}, "instance": {}}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from clipdistill.world.build import build_world

    root = tmp_path_factory.mktemp("world") / "tiny"
    build_world(root, "tiny", seed=0)
    return root


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> str:
    """Saved weights, so the online teacher and the one that made the store are the same model."""
    from safetensors.torch import save_file

    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("teacher") / "t.safetensors"
    save_file({k: v.contiguous() for k, v in load_model(ARCH).inner.state_dict().items()}, str(path))
    return f"{ARCH}@{path}"


def embed(data: str, teacher: str, out: Path, **kw) -> Path:
    return embed_features(EmbedOptions(teacher=teacher, data=data, batch_size=64, device="cpu", **kw), out)


@pytest.fixture(scope="module")
def store(world, teacher, tmp_path_factory) -> Path:
    return embed(f"world:{world}", teacher, tmp_path_factory.mktemp("feats") / "store")


@pytest.fixture(scope="module")
def balance(store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bal") / "bal"
    run_balance(store, out, BalanceOptions(clusters=8, target_keep=0.5, device="cpu"))
    return out


def cfg(world, out_steps: int | None = None, **kw) -> DistillConfig:
    train = {"epochs": 1, "steps": out_steps, "device": "cpu", "progress": False, "tensorboard": False,
             "log_every": 1, "lr": 1e-4}
    data = {"source": f"world:{world}", "batch_size": BATCH, **kw.pop("data", {})}
    return DistillConfig(student={"model": ARCH}, data=data, train=train, **kw)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def spy(monkeypatch) -> list[tuple[DistillTask, DistillBatch]]:
    """Every (task, batch) a training step sees."""
    seen, real = [], DistillTask.training_step

    def step(self, batch):
        seen.append((self, copy.deepcopy(batch)))
        return real(self, batch)

    monkeypatch.setattr(DistillTask, "training_step", step)
    return seen


def test_cached_teacher_gives_the_online_first_step_loss(world, teacher, store, tmp_path):
    loss = {"fd": {}, "logit_kd": {}}
    online = run_distill(cfg(world, 1, teacher={"mode": "online", "models": [teacher]}, loss=loss), tmp_path / "on")
    cached = run_distill(cfg(world, 1, teacher={"mode": "cached", "features": str(store)}, loss=loss), tmp_path / "c")
    on, ca = metrics(online)[0], metrics(cached)[0]
    for term in ("fd", "logit_kd"):  # same student init and batch; the store holds fp16 features
        assert ca[term] == pytest.approx(on[term], rel=2e-3), term
    assert abs(ca["fd"] - on["fd"]) < 0.01 * on["fd"]
    manifest = json.loads((cached / "manifest.json").read_text())
    assert manifest["teachers"][0]["features"] == str(store)
    assert manifest["teachers"][0]["weights_sha256"] == json.loads((online / "manifest.json").read_text())[
        "teachers"][0]["weights_sha256"]


def test_keep_trains_on_kept_keys_with_the_balance_labels(world, store, balance, tmp_path, spy, monkeypatch):
    got_labels = []
    real_forward = ClusterDiscrimination.forward

    def forward(self, f):
        got_labels.append(f.inputs.cluster_labels.clone())
        return real_forward(self, f)

    monkeypatch.setattr(ClusterDiscrimination, "forward", forward)
    run = run_distill(cfg(world, teacher={"mode": "cached", "features": str(store)}, data={"keep": str(balance)},
                          loss=CID), tmp_path / "cid")
    bal = BalanceResult(balance)
    kept = bal.kept_keys
    assert 0 < len(kept) < len(open_source(f"world:{world}"))
    keys = [k for _, b in spy for k in b.keys]
    assert len(spy) == len(metrics(run)) == len(kept) // BATCH  # steps in the epoch: the kept count, not all
    assert len(set(keys)) == len(keys) == len(spy) * BATCH and set(keys) <= set(kept)
    for (_, b), labels in zip(spy, got_labels, strict=True):
        want = torch.from_numpy(bal.labels_for(b.keys))
        assert torch.equal(labels, want) and torch.equal(b.cluster_labels, want)
    centres = spy[0][0].loss.terms["cluster"].centres
    assert torch.equal(centres, torch.from_numpy(bal.centroids()))
    keep = json.loads((run / "manifest.json").read_text())["data"]["keep"]
    assert keep["dir"] == str(balance) and keep["kept"] == len(kept) and keep["clusters"] == bal.num_clusters


def test_keep_without_filter_trains_on_all_samples_with_labels(world, store, balance, tmp_path, spy):
    run = run_distill(cfg(world, teacher={"mode": "cached", "features": str(store)},
                          data={"keep": str(balance), "filter": False}, loss=CID), tmp_path / "cid_all")
    n = len(open_source(f"world:{world}"))
    assert len(metrics(run)) == n // BATCH > len(BalanceResult(balance).kept_keys) // BATCH
    batch = spy[0][1]
    assert torch.equal(batch.cluster_labels, torch.from_numpy(BalanceResult(balance).labels_for(batch.keys)))
    assert json.loads((run / "manifest.json").read_text())["data"]["keep"]["filter"] is False


def test_cluster_loss_without_keep_is_a_clear_error(world, store, tmp_path):
    with pytest.raises(UserError, match="data.keep"):
        run_distill(cfg(world, 1, teacher={"mode": "cached", "features": str(store)}, loss=CID), tmp_path / "r")


def test_store_or_balance_from_other_inputs_is_refused(world, teacher, store, balance, tmp_path):
    with open(world / "pairs.csv") as f:  # other data: a subset of the world under another table
        rows = list(csv.DictReader(f))[:40]
    other = tmp_path / "other.csv"
    with open(other, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["key", "image", "caption"], extrasaction="ignore")
        w.writeheader()
        w.writerows({**r, "image": str(world / r["image"])} for r in rows)
    other_store = embed(str(other), teacher, tmp_path / "other_store")
    with pytest.raises(ManifestMismatch, match=r"feature store [^\n]*other_store(.|\n)*source.fingerprint"):
        run_distill(cfg(world, 1, teacher={"mode": "cached", "features": str(other_store)}, loss={"fd": {}}),
                    tmp_path / "r1")
    with pytest.raises(ManifestMismatch, match=r"balance output(.|\n)*source.fingerprint"):
        run_distill(cfg(world, 1, data={"source": str(other), "keep": str(balance)}, loss={"clip": {}}),
                    tmp_path / "r2")
    # centres from another teacher's space: an online teacher other than the one balance clustered with
    with pytest.raises(ManifestMismatch, match="teacher.weights_sha256"):
        run_distill(cfg(world, 1, teacher={"mode": "online", "models": [ARCH]}, data={"keep": str(balance)},
                        loss=CID), tmp_path / "r3")


def test_augs_store_shows_the_student_the_replayed_view(world, teacher, tmp_path, spy):
    aug_store = embed(f"world:{world}", teacher, tmp_path / "aug", augs=2)
    run_distill(cfg(world, 2, teacher={"mode": "cached", "features": str(aug_store)}, loss={"fd": {}}),
                tmp_path / "run")
    cached, source = CachedTeacher(aug_store), open_source(f"world:{world}")
    student = load_model(ARCH)
    picked = set()
    for _, b in spy:
        rows = cached.store.rows_of(b.keys)
        for i, (key, index) in enumerate(zip(b.keys, b.index.tolist(), strict=True)):
            view = cached.pick_view(key, 0)  # epoch 0, train.seed 0
            picked.add(view)
            sample, _ = source.load(index)
            assert sample.key == key
            want = student.eval_transform(cached.view_image(key, sample.image, view))
            assert torch.equal(b.student.image[i], want), key
            stored = cached.store.rows("aug_image", rows[i:i + 1])[0, view].astype(np.float32)
            assert torch.equal(b.cached.image[i], torch.from_numpy(stored)), key
    assert picked == {0, 1}  # views really vary by key


def test_keep_random_trains_on_a_seeded_same_size_sample(world, store, balance, tmp_path, spy):
    def run(seed: int, name: str) -> tuple[Path, set[str]]:
        start = len(spy)
        c = cfg(world, teacher={"mode": "cached", "features": str(store)},
                data={"keep": str(balance), "filter": "random"}, loss=CID)
        c.train.seed = seed
        out = run_distill(c, tmp_path / name)
        return out, {k for _, b in spy[start:] for k in b.keys}

    bal = BalanceResult(balance)
    out, seen = run(0, "r0")
    assert len(metrics(out)) == len(bal.kept_keys) // BATCH  # the kept-list's size, so its steps per epoch
    assert seen <= set(bal.keys) and not seen <= set(bal.kept_keys)  # not the kept-list itself
    batch = spy[0][1]
    assert torch.equal(batch.cluster_labels, torch.from_numpy(bal.labels_for(batch.keys)))
    assert json.loads((out / "manifest.json").read_text())["data"]["keep"]["filter"] == "random"
    assert run(0, "r0_again")[1] == seen and run(1, "r1")[1] != seen  # drawn with train.seed
    with pytest.raises(ValueError, match="random"):
        cfg(world, data={"keep": str(balance), "filter": "rand"})
