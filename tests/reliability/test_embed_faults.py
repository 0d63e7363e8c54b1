"""`embed` killed or failing mid-way: reruns finish the store byte-identically, redoing only missing shards;
a store made from other data is refused."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rel_cases import case
from rel_helpers import write_pairs, write_tar

from clipdistill.errors import ManifestMismatch, UserError
from clipdistill.features import embed as embed_mod
from clipdistill.features.embed import EmbedOptions, embed_features
from clipdistill.features.store import FeatureStore

ARCH = "open_clip:cd-student-xs-32"
KILL_AT_SHARD = """
import os, signal, sys
import clipdistill
from clipdistill.features import embed
from clipdistill.features.embed import EmbedOptions, embed_features
write, calls = embed.write_shard, [0]
def dying(*a, **k):
    calls[0] += 1
    if calls[0] == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return write(*a, **k)
embed.write_shard = dying
embed_features(EmbedOptions(teacher=sys.argv[1], data=sys.argv[2], shard_size=8, batch_size=8, device="cpu"),
               sys.argv[3])
"""


def opts(data, teacher: str) -> EmbedOptions:
    return EmbedOptions(teacher=teacher, data=str(data), shard_size=8, batch_size=8, device="cpu")


def shard_bytes(store) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.glob("shard-*/*"))}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> str:
    """A teacher with saved weights: the same in every process (a random init is not)."""
    from safetensors.torch import save_file

    from clipdistill.zoo import load_model

    path = tmp_path_factory.mktemp("teacher") / "t.safetensors"
    save_file({k: v.contiguous() for k, v in load_model(ARCH).inner.state_dict().items()}, str(path))
    return f"{ARCH}@{path}"


@pytest.fixture(scope="module")
def reference(pairs, teacher, tmp_path_factory):
    return embed_features(opts(pairs, teacher), tmp_path_factory.mktemp("ref") / "store")


@case("kill", "SIGKILL `embed` while it writes its 3rd of 4 store shards, then rerun",
      "the rerun computes only the 2 missing shards (finished ones untouched); every shard file is "
      "byte-identical to an uninterrupted run")
def test_kill_embed_then_rerun(tmp_path, pairs, teacher, reference):
    out = tmp_path / "store"
    killed = subprocess.run([sys.executable, "-c", KILL_AT_SHARD, teacher, str(pairs), str(out)],
                            capture_output=True, text=True, timeout=240)
    assert killed.returncode == -9, killed.stderr
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-00000", "shard-00001"]
    with pytest.raises(UserError):
        FeatureStore(out)  # not finished: no manifest yet, so nothing downstream can trust it
    before = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("shard-*/keys.txt")}
    embed_features(opts(pairs, teacher), out)
    assert {n: (out / n / "keys.txt").stat().st_mtime_ns for n in before} == before
    assert shard_bytes(out) == shard_bytes(reference)
    assert len(FeatureStore(out)) == 32


@case("disk", "the disk fills up while `embed` writes its 2nd store shard",
      "a clear error naming the shard path and the cause (`No space left on device`); the half-written "
      "shard's temp folder is removed, no reader ever sees it; the rerun computes the missing shards and "
      "completes byte-identical")
def test_embed_write_fails(tmp_path, pairs, teacher, reference, monkeypatch):
    real_save, calls = np.save, [0]

    def save(path, arr, *a, **k):
        calls[0] += 1
        if calls[0] == 3:  # 2 arrays per shard: the 1st array of the 2nd shard
            with open(path, "wb") as f:
                f.write(b"\x93NUMPY partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_save(path, arr, *a, **k)

    monkeypatch.setattr("clipdistill.features.store.np.save", save)
    out = tmp_path / "store"
    with pytest.raises(UserError, match=r"shard-00001 .*No space left"):
        embed_features(opts(pairs, teacher), out)
    assert sorted(p.name for p in out.iterdir() if "shard" in p.name) == ["shard-00000"]  # temp folder gone too
    monkeypatch.setattr("clipdistill.features.store.np.save", real_save)
    embed_features(opts(pairs, teacher), out)
    assert shard_bytes(out) == shard_bytes(reference)


@case("config", "a feature store made from other data (or another teacher) given to a reader or to `embed --out`",
      "`ManifestMismatch` naming the differing field (`source.fingerprint`, `teacher.spec`)")
def test_feature_store_from_other_data(tmp_path, pairs, teacher, reference):
    from clipdistill.data import open_source

    assert len(FeatureStore(reference, teacher=teacher, fingerprint=open_source(str(pairs)).fingerprint())) == 32
    other = write_pairs(tmp_path / "other", 16)
    with pytest.raises(ManifestMismatch, match="source.fingerprint"):
        FeatureStore(reference, fingerprint=open_source(str(other)).fingerprint())
    with pytest.raises(ManifestMismatch, match="teacher.spec"):
        FeatureStore(reference, teacher="open_clip:cd-teacher-64")
    with pytest.raises(ManifestMismatch):
        embed_features(opts(other, teacher), reference)


def test_store_read_with_another_spelling_of_its_teacher(pairs, teacher, reference, monkeypatch):
    """The manifest records the teacher with its local paths absolute: a relative spelling of the same file
    (or the spelling of an older store) matches, another file does not."""
    import json

    arch, _, path = teacher.partition("@")
    recorded = json.loads((reference / "manifest.json").read_text())["teacher"]["spec"]
    assert recorded == f"{arch}@{Path(path).resolve()}"
    monkeypatch.chdir(Path(path).parent.parent)
    relative = f"{arch}@./{Path(path).parent.name}/{Path(path).name}"
    assert len(FeatureStore(reference, teacher=relative)) == 32
    before = shard_bytes(reference)
    embed_features(opts(pairs, relative), reference)  # the same job: nothing to redo, nothing refused
    assert shard_bytes(reference) == before
    other = Path(path).parent / "copy.safetensors"
    other.write_bytes(Path(path).read_bytes())
    with pytest.raises(ManifestMismatch, match="teacher.spec"):
        FeatureStore(reference, teacher=f"{arch}@{other}")


@case("config", "`embed --out` rerun into a partial store naming the same data by another spelling of its path "
      "(`./pairs.csv` for `/abs/pairs.csv`), or naming a copy of that data in another folder",
      "the same job: only the missing shards are computed, byte-identical to an uninterrupted run; the copy "
      "elsewhere is refused as `ManifestMismatch` naming `source.spec`")
def test_embed_resumes_with_another_spelling_of_its_data(tmp_path, pairs, teacher, reference, monkeypatch):
    import json
    import shutil

    from clipdistill.data.sources import same_source_spec

    partial = shutil.copytree(reference, tmp_path / "store")
    for name in ("manifest.json", "shard-00002", "shard-00003"):
        shutil.rmtree(partial / name) if (partial / name).is_dir() else (partial / name).unlink()
    assert json.loads((partial / embed_mod.PLAN).read_text())["source"]["spec"] == str(pairs)  # as spelt
    monkeypatch.chdir(pairs.parent.parent)
    relative = f"./{pairs.parent.name}/../{pairs.parent.name}/{pairs.name}"
    computed, real = [], embed_mod.embed_shard
    monkeypatch.setattr(embed_mod, "embed_shard", lambda *a: computed.append(1) or real(*a))
    embed_features(opts(relative, teacher), partial)
    assert len(computed) == 2 and shard_bytes(partial) == shard_bytes(reference)
    copy = shutil.copytree(pairs.parent, tmp_path / "copy")
    with pytest.raises(ManifestMismatch, match="source.spec"):
        embed_features(opts(copy / pairs.name, teacher), partial)
    shards = tmp_path / "shards"  # a shard pattern: the shard files it names, wherever it was written from
    for i in range(2):
        write_tar(shards / f"s-{i}.tar", [])
    monkeypatch.chdir(tmp_path.parent)
    assert same_source_spec(f"{shards}/s-{{0..1}}.tar", f"./{tmp_path.name}/shards/s-{{0,1}}.tar")
    assert not same_source_spec(f"{shards}/s-{{0..1}}.tar", f"{shards}/s-{{1,0}}.tar")  # another order


@case("config", "`embed --out` rerun into an existing store with other source options (`max_caption_chars`, "
      "`max_pixels`, `separator`, columns), or into a store whose plan predates recorded source options",
      "`ManifestMismatch` naming the option (`source.options.max_caption_chars` ...) before any shard is written: "
      "shards read two ways are never mixed")
def test_embed_rerun_with_other_source_options(tmp_path, pairs, teacher, reference):
    import json
    import shutil

    before = shard_bytes(reference) | {"plan": (reference / embed_mod.PLAN).read_bytes()}
    for field, value in (("max_caption_chars", 100), ("max_pixels", 10**6), ("separator", ",")):
        with pytest.raises(ManifestMismatch, match=rf"source\.options\.{field}: manifest has .*, this run uses "
                                                   rf"{value!r}"):
            embed_features(opts(pairs, teacher).model_copy(update={field: value}), reference)
    assert shard_bytes(reference) | {"plan": (reference / embed_mod.PLAN).read_bytes()} == before
    old = shutil.copytree(reference, tmp_path / "old")
    plan = json.loads((old / embed_mod.PLAN).read_text())
    del plan["source"]["options"]
    (old / embed_mod.PLAN).write_text(json.dumps(plan))
    with pytest.raises(ManifestMismatch, match=r"source\.options\.max_pixels: manifest has None"):
        embed_features(opts(pairs, teacher), old)
    assert embed_features(opts(pairs, teacher), reference) == reference  # the same options: resumes (nothing to do)


assert embed_mod.write_shard  # the kill script patches this name


@case("stop", "SIGTERM reaches `embed` (CLI) while it writes its 2nd of 4 store shards",
      "that shard is finished, the job stops (exit 143) saying to rerun the same command; the rerun computes "
      "the 2 missing shards and the store is byte-identical to an uninterrupted run")
def test_sigterm_embed_then_rerun(tmp_path, pairs, teacher, reference):
    from rel_helpers import HERE, cli

    out = tmp_path / "store"
    args = ["embed", "--teacher", teacher, "--data", str(pairs), "--out", str(out), "--shard-size", "8",
            "--batch-size", "8", "--device", "cpu"]
    stopped = subprocess.run([sys.executable, str(HERE / "faulty_cli.py"), "sigterm-in-shard:2", *args],
                             capture_output=True, text=True, timeout=240)
    assert stopped.returncode == 143, stopped.stderr
    assert "stopped by SIGTERM after writing shard shard-00001" in stopped.stderr, stopped.stderr
    assert f"Continue with: clipdistill embed --teacher {teacher}" in stopped.stderr
    assert "--resume" not in stopped.stderr and "Traceback" not in stopped.stderr
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-00000", "shard-00001"]
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert shard_bytes(out) == shard_bytes(reference)
