"""Zero-shot / retrieval / linear probe on a tiny model, checked against CLIP_benchmark-style references,
and the `eval` commands (result JSON, --skip-existing, build, refusals)."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn.functional as F
from eval_helpers import write_imagefolder
from safetensors.torch import save_file
from typer.testing import CliRunner

from clipdistill.cli import app
from clipdistill.errors import DataError, UserError
from clipdistill.evaluation import (
    linear_probe_eval,
    open_imagefolder,
    open_retrieval,
    read_result,
    retrieval_eval,
    zeroshot_eval,
)
from clipdistill.zoo import load_model

ARCH = "cd-student-xs-32"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    m = load_model(f"open_clip:{ARCH}")
    path = tmp_path_factory.mktemp("ckpt") / "w.safetensors"
    save_file({k: v.contiguous() for k, v in m.inner.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def model(ckpt):
    return load_model(f"open_clip:{ARCH}@{ckpt}")


def clip_benchmark_zeroshot(model, ds):
    """CLIP_benchmark's zero_shot_classifier + run_classification, one class at a time."""
    with torch.no_grad():
        weights = []
        for c in ds.classnames:
            e = F.normalize(model.encode_text(model.tokenizer([t.format(c=c) for t in ds.templates])), dim=-1)
            w = e.mean(0)
            weights.append(w / w.norm())
        images = torch.stack([model.eval_transform(ds.load(i)) for i in range(len(ds))])
        logits = 100.0 * F.normalize(model.encode_image(images), dim=-1) @ torch.stack(weights, 1)
    target = torch.tensor(ds.labels)
    return (logits.argmax(1) == target).float().mean().item(), logits


def test_zeroshot_matches_clip_benchmark_reference_and_schema(model, imagefolder):
    ds = open_imagefolder(imagefolder)
    assert ds.classnames == ["black", "blue", "green", "red", "yellow"] and len(ds.templates) == 2
    rec = zeroshot_eval(model, ds, batch_size=4, progress=False)
    ref_acc1, logits = clip_benchmark_zeroshot(model, ds)
    assert rec["metrics"]["acc1"] == pytest.approx(ref_acc1, abs=1e-6)
    assert rec["metrics"]["acc5"] == 1.0  # 5 classes: the target is always in the top 5
    target, pred = torch.tensor(ds.labels), logits.argmax(1)
    assert rec["metrics"]["per_class_recall"] == pytest.approx(
        {c: (pred[target == i] == i).float().mean().item() for i, c in enumerate(ds.classnames)})
    assert {"dataset", "model", "pretrained", "task", "metrics"} <= rec.keys()
    assert rec["task"] == "zeroshot_classification" and rec["model"] == ARCH
    prov = rec["provenance"]
    assert prov["weights_hash"] == model.weights_hash() and prov["templates"] == ds.templates
    assert prov["data_fingerprint"] == open_imagefolder(imagefolder).fingerprint() and prov["samples"] == 15
    assert rec["efficiency"]["params"]["total"] == model.num_params()["total"]


def test_imagefolder_reads_exactly_torchvisions_suffixes(tmp_path):
    """Evaluation folders read what torchvision's ImageFolder (so CLIP_benchmark) reads, any case: a .gif in a class
    folder is not scored, as there; .tif / .pgm / .webp are."""
    from PIL import Image
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from clipdistill.evaluation.datasets import IMAGE_EXTS

    for cls, names in {"cat": ["a.gif", "b.TIF", "c.pgm", "notes.txt"], "dog": ["d.tiff", "e.JPG", "f.webp"]}.items():
        (tmp_path / cls).mkdir()
        for n in names:
            if n.endswith(".txt"):
                (tmp_path / cls / n).write_text("not an image")
            else:
                fmt = {"gif": "GIF", "tif": "TIFF", "tiff": "TIFF", "pgm": "PPM", "jpg": "JPEG", "webp": "WEBP"}
                mode = "L" if n.endswith(".pgm") else "RGB"
                Image.new(mode, (8, 8), 90).save(tmp_path / cls / n, format=fmt[n.rsplit(".", 1)[1].lower()])
    ds = open_imagefolder(tmp_path)
    assert sorted(p.name for p in ds.paths) == ["b.TIF", "c.pgm", "d.tiff", "e.JPG", "f.webp"]
    assert ds.labels == [0, 0, 1, 1, 1] and all(ds.load(i) is not None for i in range(len(ds.paths)))
    assert set(IMAGE_EXTS) == set(IMG_EXTENSIONS)


def test_undecodable_image_is_a_counted_skip(model, tmp_path):
    root = write_imagefolder(tmp_path / "data", per_class=2)
    (root / "red" / "broken.png").write_bytes(b"not a png")
    rec = zeroshot_eval(model, open_imagefolder(root), progress=False)
    assert rec["provenance"]["skipped"] == 1 and rec["provenance"]["samples"] == 10


def test_retrieval_groups_captions_and_matches_dense(model, retrieval_jsonl):
    ds = open_retrieval(retrieval_jsonl)
    assert len(ds) == 5 and [len(c) for c in ds.captions] == [2, 1, 2, 1, 2]
    rec = retrieval_eval(model, ds, ks=(1, 2), chunk=3, progress=False)
    with torch.no_grad():
        img = F.normalize(model.encode_image(torch.stack([model.eval_transform(ds.load(i)) for i in range(5)])), dim=-1)
        caps = [c for cs in ds.captions for c in cs]
        txt = F.normalize(model.encode_text(model.tokenizer(caps)), dim=-1)
    owner = torch.tensor([i for i, cs in enumerate(ds.captions) for _ in cs])
    scores = txt @ img.T
    t2i = (scores.topk(2, dim=1).indices == owner[:, None]).any(1).float().mean().item()
    i2t = torch.stack([(owner[scores.T[i].topk(1).indices] == i).any() for i in range(5)]).float().mean().item()
    assert rec["metrics"]["image_retrieval_recall@2"] == pytest.approx(t2i)
    assert rec["metrics"]["text_retrieval_recall@1"] == pytest.approx(i2t)
    assert rec["provenance"]["captions"] == 8


def test_linear_probe_record_and_class_mismatch(model, tmp_path):
    train = open_imagefolder(write_imagefolder(tmp_path / "train", per_class=4, shift=3))
    test = open_imagefolder(write_imagefolder(tmp_path / "test", per_class=2))
    rec = linear_probe_eval(model, train, test, val_proportion=0.25, max_iter=50, progress=False)
    m = rec["metrics"]
    assert 0.0 <= m["lp_acc1"] <= 1.0 and m["weight_decay"] > 0 and rec["provenance"]["train_samples"] == 20
    recalls = m["lp_per_class_recall"]
    assert list(recalls) == test.classnames
    assert sum(recalls.values()) / len(recalls) == pytest.approx(m["lp_mean_per_class_recall"])
    (tmp_path / "test" / "zzz").mkdir()
    (tmp_path / "test" / "red" / "0.png").rename(tmp_path / "test" / "zzz" / "0.png")
    with pytest.raises(DataError, match="different classes"):
        linear_probe_eval(model, train, open_imagefolder(tmp_path / "test"), progress=False)


def test_bad_inputs_are_user_errors(tmp_path, imagefolder):
    with pytest.raises(DataError, match="class sub-folders"):
        open_imagefolder(tmp_path)
    bad = tmp_path / "t.txt"
    bad.write_text("a photo of a thing\n")
    with pytest.raises(DataError, match="needs '\\{c\\}'"):
        open_imagefolder(imagefolder, templates_file=bad)
    rows = tmp_path / "r.jsonl"
    rows.write_text('{"image": "a.png"}\n')
    with pytest.raises(DataError, match="row 1"):
        open_retrieval(rows)
    with pytest.raises(UserError, match="not a result JSON"):
        read_result(rows)


def test_eval_commands_write_skip_and_build(ckpt, imagefolder, retrieval_jsonl, tmp_path):
    runner = CliRunner()
    spec = f"open_clip:{ARCH}@{ckpt}"
    out = tmp_path / "res" / "{dataset}_{task}.json"
    r = runner.invoke(app, ["eval", "zeroshot", "--model", spec, "--data", str(imagefolder), "--output", str(out)])
    assert r.exit_code == 0, r.output
    zs = tmp_path / "res" / "colours_zeroshot_classification.json"
    assert read_result(zs)["provenance"]["spec"] == spec
    before = zs.stat().st_mtime_ns
    r = runner.invoke(app, ["eval", "zeroshot", "--model", spec, "--data", str(imagefolder), "--output", str(out),
                            "--skip-existing"])
    assert r.exit_code == 0 and "skip" in r.output and zs.stat().st_mtime_ns == before
    r = runner.invoke(app, ["eval", "retrieval", "--model", spec, "--data", str(retrieval_jsonl), "--output",
                            str(out), "--recall-k", "1", "--recall-k", "3"])
    assert r.exit_code == 0, r.output
    (tmp_path / "res" / "manifest.json").write_text(json.dumps({"stage": "x"}))  # not a result: skipped
    r = runner.invoke(app, ["eval", "build", str(tmp_path / "res"), "--out", str(tmp_path / "table.csv")])
    assert r.exit_code == 0 and "2 row(s)" in r.output and "skipped 1" in r.output
    rows = list(csv.DictReader(open(tmp_path / "table.csv")))
    assert {row["task"] for row in rows} == {"zeroshot_classification", "zeroshot_retrieval"}
    ret = next(row for row in rows if row["task"] == "zeroshot_retrieval")
    assert "image_retrieval_recall@3" in ret and ret["model_fullname"] == f"{ARCH} {ckpt}"
    r = runner.invoke(app, ["eval", "zeroshot", "--help"])
    assert "Example:" in r.output
