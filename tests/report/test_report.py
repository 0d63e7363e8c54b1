"""The report from real eval results + a run folder + balance + protocol rows: table values, gap closed,
self-contained HTML whose images decode and show the data."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from clipdistill.cli import app
from clipdistill.errors import UserError
from clipdistill.evaluation import open_imagefolder, write_result, zeroshot_eval
from clipdistill.report import build_report
from clipdistill.report.tables import comparison_table
from clipdistill.zoo import load_model

ARCH = "cd-student-xs-32"


def fake_result(spec: str, task: str, metrics: dict, params: int = 1_000_000) -> dict:
    return {"dataset": "d", "model": ARCH, "pretrained": spec, "task": task, "metrics": metrics,
            "provenance": {"spec": spec}, "efficiency": {"params": {"total": params}, "image_encode_per_s": 50.0,
                                                         "text_encode_per_s": 80.0}}


def test_gap_closed_hand_computed():
    results = [fake_result("T", "zeroshot_classification", {"acc1": 0.8}),
               fake_result("B", "zeroshot_classification", {"acc1": 0.4}),
               fake_result("S", "zeroshot_classification", {"acc1": 0.7}),
               fake_result("T", "zeroshot_retrieval",
                           {"text_retrieval_recall@1": 0.5, "image_retrieval_recall@1": 0.6}),
               fake_result("B", "zeroshot_retrieval",
                           {"text_retrieval_recall@1": 0.1, "image_retrieval_recall@1": 0.6}),
               fake_result("S", "zeroshot_retrieval",
                           {"text_retrieval_recall@1": 0.2, "image_retrieval_recall@1": 0.9})]
    t = comparison_table(results, teacher="T", baseline="B")
    assert t.columns == ["d: zero-shot top-1", "d: I->T R@1", "d: T->I R@1"]
    s = next(r for r in t.rows if r["model"] == "S")
    # zero-shot: (0.7-0.4)/(0.8-0.4) = 0.75; I->T: (0.2-0.1)/(0.5-0.1) = 0.25; T->I: teacher == baseline, left out
    assert s["gap"] == pytest.approx(0.5)
    assert [r["role"] for r in t.rows] == ["teacher", "baseline", "student"] and s["params_m"] == 1.0
    with pytest.raises(KeyError, match="not among"):
        comparison_table(results, teacher="X", baseline="B")


def test_gap_closed_skips_gaps_under_one_point():
    """A teacher that leads by 0.6 pt (or trails) gives no gap column: the ratio would be noise."""
    results = [fake_result("T", "zeroshot_classification", {"acc1": 0.986}),
               fake_result("B", "zeroshot_classification", {"acc1": 0.980}),
               fake_result("S", "zeroshot_classification", {"acc1": 0.990}),
               fake_result("T", "linear_probe", {"lp_acc1": 0.30}),
               fake_result("B", "linear_probe", {"lp_acc1": 0.35}),
               fake_result("S", "linear_probe", {"lp_acc1": 0.40})]
    s = next(r for r in comparison_table(results, teacher="T", baseline="B").rows if r["model"] == "S")
    assert s["gap"] is None
    results[0]["metrics"]["acc1"] = 0.995  # a 1.5-point lead counts: (0.990-0.980)/(0.995-0.980) = 2/3
    s = next(r for r in comparison_table(results, teacher="T", baseline="B").rows if r["model"] == "S")
    assert s["gap"] == pytest.approx(2 / 3)


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.tables, self.tags = [], 0, []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.tables += tag == "table"
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


@pytest.fixture(scope="module")
def real_results(tmp_path_factory, imagefolder_for_report):
    """Teacher, baseline and student: three real (random-init) models evaluated for real."""
    root = tmp_path_factory.mktemp("results")
    ds = open_imagefolder(imagefolder_for_report)
    specs = []
    for seed, role in enumerate(("teacher", "baseline", "student")):
        torch.manual_seed(seed)
        m = load_model(f"open_clip:{ARCH}")
        path = root / f"{role}.safetensors"
        save_file({k: v.contiguous() for k, v in m.inner.state_dict().items()}, str(path))
        spec = f"open_clip:{ARCH}@{path}"
        write_result(zeroshot_eval(load_model(spec), ds, progress=False), root / "res" / f"{role}.json")
        specs.append(spec)
    return root / "res", specs


@pytest.fixture(scope="module")
def imagefolder_for_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls")
    for i, c in enumerate(["red", "green", "blue", "grey", "white"]):
        (root / c).mkdir()
        for j in range(2):
            Image.new("RGB", (32, 32), ((50 * i) % 255, (90 * j + 40 * i) % 255, 120)).save(root / c / f"{j}.png")
    return root


def test_report_from_real_results_run_balance_and_protocol(real_results, tmp_path):
    res_dir, (teacher, baseline, student) = real_results
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"step": s, "loss": 3.0 / (s + 1), "fd": 0.5 - 0.01 * s, "lr": 1e-3} for s in range(20)]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    (run / "manifest.json").write_text(json.dumps({"stage": "distill"}))  # not a result: skipped
    balance = tmp_path / "balance_report.json"
    balance.write_text(json.dumps({"hist_before": [40, 10, 5, 1], "hist_after": [30, 10, 2, 0], "kept_fraction": 0.7}))
    rows = [{"task": "vqa", "regime": "low_shot", "fraction": f, "method": meth, "seed": s, "metric": "acc",
             "value": f * (1.2 if meth == "clip_td" else 1.0) + 0.01 * s}
            for f in (0.01, 0.1, 1.0) for meth in ("baseline", "clip_td") for s in (0, 1)]
    protocol = tmp_path / "rows.json"
    protocol.write_text(json.dumps(rows))

    md, html_path, found = build_report([res_dir, run, balance, protocol], tmp_path / "out",
                                        teacher=teacher, baseline=baseline)
    assert len(found.results) == 3 and found.skipped == 1 and len(found.lowshot) == 12
    text = md.read_text()
    assert "Teacher versus students" in text and "plots/" in text and student in text

    page = html_path.read_text()
    parser = _Images()
    parser.feed(page)
    assert parser.tables == 1 and "script" not in parser.tags
    assert len(parser.srcs) == 4  # per-metric bars, training curves, balance, one low-shot curve
    for src in parser.srcs:
        assert src.startswith("data:image/png;base64,")  # self-contained
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB")
        img.load()
        px = np.asarray(img).reshape(-1, 3).astype(int)
        assert img.width > 200 and len(np.unique(px, axis=0)) > 20
        # the data are drawn: bluish pixels of matplotlib's first series colour (tab:blue, maybe alpha-blended)
        assert ((px[:, 2] - px[:, 0]) > 60).sum() > 50

    # the table holds the real zero-shot numbers, in percent
    acc = json.loads((res_dir / "student.json").read_text())["metrics"]["acc1"]
    assert f"{100 * acc:.1f}" in text


def test_report_cli_and_refusals(real_results, tmp_path):
    res_dir, _ = real_results
    r = CliRunner().invoke(app, ["report", str(res_dir), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "report.html").is_file() and "--teacher" in (tmp_path / "o" / "report.md").read_text()
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(UserError, match="not an eval result"):
        build_report([bad], tmp_path / "o2")
    with pytest.raises(UserError, match="not among"):
        build_report([res_dir], tmp_path / "o3", teacher="open_clip:nope", baseline="x")
    broken = tmp_path / "r2"
    broken.mkdir()
    (broken / "metrics.jsonl").write_text('{"loss": 1}\n')
    with pytest.raises(UserError, match="needs a 'step'"):
        build_report([broken], tmp_path / "o4")
