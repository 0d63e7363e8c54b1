"""`balance`: planted near-duplicates go, singletons stay, the target keep fraction is met, foreign
stores are refused, and the outputs read back through `BalanceResult`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from feat_helpers import make_store
from typer.testing import CliRunner

from clipdistill.cli import app
from clipdistill.errors import ConfigError, ManifestMismatch, UserError
from clipdistill.features.balance import BalanceOptions, run_balance
from clipdistill.features.balance_output import BalanceResult


@pytest.fixture(scope="module")
def world_store(world, tmp_path_factory):
    """The tiny world's pairs with stand-in embeddings: one random direction per scene group, members
    jittered around it. (A random-init teacher maps different scenes to cosine ~1, so it cannot be the
    test's judge of what a duplicate is; the world's ground truth can.)"""
    truth = json.loads((world / "pairs_groundtruth.json").read_text())
    keys = sorted(truth)
    groups = sorted({truth[k]["group"] for k in keys})
    rng = np.random.default_rng(0)
    centre = dict(zip(groups, rng.standard_normal((len(groups), 64)), strict=True))
    emb = np.stack([centre[truth[k]["group"]] for k in keys])
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True) + 0.01 * rng.standard_normal(emb.shape)
    return make_store(tmp_path_factory.mktemp("wstore"), keys, emb, shard_size=128), truth


@pytest.mark.parametrize("order", ["store", "far"])
def test_planted_duplicates_removed_singletons_kept(world_store, tmp_path, order):
    store, truth = world_store
    report = run_balance(store, tmp_path, BalanceOptions(clusters=8, threshold=0.99, labels="multimodal", order=order))
    kept = (tmp_path / "kept_keys.txt").read_text().split()
    groups = [truth[k]["group"] for k in kept]
    assert len(groups) == len(set(groups)) == len({v["group"] for v in truth.values()})  # one per scene
    singles = {k for k, v in truth.items() if v["singleton"]}
    assert singles <= set(kept)
    assert any(v["planted_duplicate"] for v in truth.values())
    assert report["kept"] == len(kept) and report["samples"] == len(truth)
    assert sum(report["cluster_sizes"]["after"]) == sum(report["cluster_sizes"]["random_control"]) == len(kept)
    assert (tmp_path / "clusters.png").stat().st_size > 0
    assert sum(report["hist_after"]["counts"]) == sum(report["hist_before"]["counts"]) == 8  # clusters per histogram
    from clipdistill.report.inputs import collect  # `clipdistill report` takes the balance report as it is

    assert tmp_path.name in collect([tmp_path / "report.json"]).balance  # a DIR's report.json is named by its DIR

    result = BalanceResult(tmp_path, fingerprint="fp")
    assert result.kept_keys == kept and result.space == "multimodal"
    assert result.labels_for(kept).shape == (len(kept),)
    for space in ("image", "multimodal"):
        c = result.centroids(space)
        assert c.shape == (8, 64) and np.allclose(np.linalg.norm(c, axis=1), 1, atol=1e-4)
        assert 0 <= result.labels(space).min() and result.labels(space).max() < 8
    with pytest.raises(UserError, match="no cluster label"):
        result.labels_for(["not-a-key"])
    both = result.labels_for([kept[0], "not-a-key"], space="image", missing=-1)
    assert both[1] == -1 and both[0] == result.labels("image")[result.keys.index(kept[0])]


@pytest.fixture(scope="module")
def skewed_store(tmp_path_factory):
    """4000 rows: 12 clusters of very different sizes, a quarter of them near-copies of another row."""
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((12, 32)) * 3
    sizes = np.array([1200, 700, 500, 400, 300, 250, 200, 150, 120, 80, 60, 40])
    emb = np.concatenate([c + rng.standard_normal((n, 32)) for c, n in zip(centres, sizes, strict=True)])
    copies = rng.choice(len(emb), 1000, replace=False)
    emb[copies] = emb[rng.integers(0, len(emb), 1000)] + 0.002 * rng.standard_normal((1000, 32))
    keys = [f"k{i:05d}" for i in range(len(emb))]
    return make_store(tmp_path_factory.mktemp("skew"), keys, emb, shard_size=1500)


@pytest.mark.parametrize("given", [{}, {"cap": 400}, {"threshold": 0.999}])
def test_target_keep_met_within_one_percent(skewed_store, tmp_path, given):
    report = run_balance(skewed_store, tmp_path, BalanceOptions(clusters=12, target_keep=0.563, **given))
    assert abs(report["kept_fraction"] - 0.563) <= 0.01 * 0.563
    assert report["target_met_within_1pct"] is True
    if "cap" in given:
        assert max(report["cluster_sizes"]["after"]) <= 400
    if "threshold" in given:
        assert report["threshold"] == 0.999
    # balancing flattens the cluster distribution more than a random subset of the same size does
    stats = report["cluster_size_stats"]
    assert stats["after"]["normalised_entropy"] > stats["random_control"]["normalised_entropy"]


def test_threshold_too_strict_for_the_target_is_refused(skewed_store, tmp_path):
    with pytest.raises(UserError, match="raise --threshold"):
        run_balance(skewed_store, tmp_path, BalanceOptions(clusters=12, target_keep=0.9, threshold=0.0))
    with pytest.raises(UserError, match="raise --cap"):
        run_balance(skewed_store, tmp_path, BalanceOptions(clusters=12, target_keep=0.9, cap=50))


def test_foreign_store_and_result_refused(skewed_store, tmp_path):
    with pytest.raises(ManifestMismatch, match="teacher.spec: manifest has 'synthetic', this run uses 'open_clip:x'"):
        run_balance(skewed_store, tmp_path, BalanceOptions(clusters=4), teacher="open_clip:x")
    run_balance(skewed_store, tmp_path, BalanceOptions(clusters=4, threshold=0.99))
    with pytest.raises(ManifestMismatch, match="source.fingerprint"):
        BalanceResult(tmp_path, fingerprint="another dataset")
    with pytest.raises(ManifestMismatch, match="made by stage 'embed', expected 'balance'"):
        BalanceResult(skewed_store)


def test_perceptual_duplicates_dropped_first(skewed_store, tmp_path):
    """50 pictures stored 3 times each (one pHash per picture, near-identical embeddings) among 150 singles:
    --perceptual 0 keeps one of each, at a semantic threshold that on its own keeps everything."""
    rng = np.random.default_rng(2)
    base = rng.standard_normal((200, 64))
    emb = np.concatenate([np.repeat(base[:50], 3, axis=0), base[50:]])
    emb = emb + 0.02 * rng.standard_normal(emb.shape)
    phash = np.concatenate([np.repeat(np.arange(50), 3), 1000 + np.arange(150)]).astype(np.uint64) << np.uint64(20)
    keys = [f"k{i:03d}" for i in range(len(emb))]
    store = make_store(tmp_path / "store", keys, emb, phash=phash)
    alone = run_balance(store, tmp_path / "semantic", BalanceOptions(clusters=4, threshold=0.99999))
    assert alone["kept"] == 300 and alone["perceptual_duplicates"] is None
    report = run_balance(store, tmp_path / "both", BalanceOptions(clusters=4, threshold=0.99999, perceptual=0))
    kept = (tmp_path / "both" / "kept_keys.txt").read_text().split()
    assert report["perceptual_duplicates"] == 100 and report["kept"] == len(kept) == 200
    assert sorted(phash[[keys.index(k) for k in kept]].tolist()) == sorted(set(phash.tolist()))  # one per picture
    with pytest.raises(UserError, match="re-embed with --phash"):
        run_balance(skewed_store, tmp_path / "x", BalanceOptions(clusters=4, perceptual=0))


def test_multimodal_space_keeps_one_picture_with_different_captions(tmp_path):
    """100 pictures stored twice, each copy with an unrelated caption: image-space de-dup drops the second copy,
    de-dup on norm(norm(img) + norm(txt)) (cosine ~0.5 between the copies) keeps both."""
    rng = np.random.default_rng(3)
    image = np.repeat(rng.standard_normal((100, 64)), 2, axis=0) + 0.001 * rng.standard_normal((200, 64))
    keys = [f"k{i:03d}" for i in range(200)]
    store = make_store(tmp_path / "store", keys, image, text=rng.standard_normal((200, 64)))
    by_image = run_balance(store, tmp_path / "image", BalanceOptions(clusters=4, threshold=0.99))
    joint = run_balance(store, tmp_path / "mm", BalanceOptions(clusters=4, threshold=0.99, space="multimodal"))
    assert by_image["kept"] == 100 and by_image["space"] == "image"
    assert joint["kept"] == 200 and joint["space"] == "multimodal"
    # the cluster loss still gets the image clustering unless --labels says otherwise
    result = BalanceResult(tmp_path / "mm")
    assert result.space == "image" and result.labels().shape == result.labels("multimodal").shape == (200,)
    assert sorted(np.bincount(result.labels("multimodal"), minlength=4)) == sorted(joint["cluster_sizes"]["before"])


def test_options_refused():
    with pytest.raises(ValueError, match="at most one"):
        BalanceOptions(clusters=4, target_keep=0.5, threshold=0.9, cap=3)


def test_cli_help_and_errors(skewed_store, tmp_path):
    runner = CliRunner()
    for verb in ("balance", "embed"):
        out = runner.invoke(app, [verb, "--help"], terminal_width=200)
        assert out.exit_code == 0 and "Example: clipdistill " + verb in out.output
    assert "RECONSTRUCTION" in runner.invoke(app, ["balance", "--help"]).output
    bad = runner.invoke(app, ["balance", "--features", str(skewed_store), "--out", str(tmp_path),
                              "--clusters", "99999"])
    assert isinstance(bad.exception, UserError) and "more than the 4000 samples" in str(bad.exception)
    bad = runner.invoke(app, ["balance", "--features", str(skewed_store), "--out", str(tmp_path),
                              "--clusters", "4", "--order", "sideways"])
    assert isinstance(bad.exception, ConfigError) and "order" in str(bad.exception)
    bad = runner.invoke(app, ["balance", "--features", str(skewed_store), "--out", str(tmp_path),
                              "--clusters", "4", "--space", "text"])
    assert isinstance(bad.exception, ConfigError) and "space" in str(bad.exception)


def test_rewrite_killed_halfway_leaves_a_dir_readers_refuse(skewed_store, tmp_path, monkeypatch):
    run_balance(skewed_store, tmp_path, BalanceOptions(clusters=4, threshold=0.99))
    assert BalanceResult(tmp_path).kept_keys  # complete
    real_save, saves = np.save, []

    def dying_save(path, arr):  # the second run is killed after writing its first array
        saves.append(path)
        if len(saves) > 1:
            raise KeyboardInterrupt
        real_save(path, arr)

    monkeypatch.setattr(np, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        run_balance(skewed_store, tmp_path, BalanceOptions(clusters=6, threshold=0.99))
    with pytest.raises(UserError, match="incomplete"):
        BalanceResult(tmp_path)
