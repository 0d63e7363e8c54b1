"""The report's pictures: per-metric bars with seed error bars, the balance gallery (dropped beside nearest kept),
CLIP-TD token selection samples, curves from step 0; and the HTML as a real browser (headless Chromium) shows it."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import statistics
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clipdistill.cli import app
from clipdistill.report.gallery import redundancy_pairs
from clipdistill.report.plots import _by_step
from clipdistill.report.tables import comparison_table, seed_groups


def result(spec: str, acc: float, lp: float | None = None) -> list[dict]:
    out = [{"dataset": "shape", "model": "a", "pretrained": spec, "task": "zeroshot_classification",
            "metrics": {"acc1": acc}, "provenance": {"spec": spec}, "efficiency": {}}]
    if lp is not None:
        out.append({"dataset": "shape", "model": "a", "pretrained": spec, "task": "linear_probe",
                    "metrics": {"lp_acc1": lp}, "provenance": {"spec": spec}, "efficiency": {}})
    return out


def test_seed_groups_pool_a_models_seeds_and_keep_other_names_apart():
    results = [*result("open_clip:cd-teacher-64@t.pt", 0.8, 0.9), *result("run:runs/base-seed0", 0.3, 0.5),
               *result("run:runs/base-seed1", 0.5, 0.6), *result("run:runs/cid-seed0", 0.6, 0.7),
               *result("run:runs/cid-seed1", 0.7, 0.8), *result("run:runs/cid-seed2", 0.65),
               *result("open_clip:cd-student-s-32", 0.1)]
    t = comparison_table(results, teacher="open_clip:cd-teacher-64@t.pt", baseline="run:runs/base-seed0")
    groups = {g["model"]: g for g in seed_groups(t)}
    assert list(groups) == ["open_clip:cd-teacher-64@t.pt", "run:runs/base", "open_clip:cd-student-s-32",
                            "run:runs/cid"]
    assert groups["run:runs/base"]["role"] == "baseline" and groups["run:runs/base"]["n"] == 2
    cid = groups["run:runs/cid"]
    assert cid["n"] == 3 and cid["values"]["shape: zero-shot top-1"] == [0.6, 0.7, 0.65]
    assert cid["values"]["shape: linear probe top-1"] == [0.7, 0.8]  # seed 2 has no linear probe
    assert groups["open_clip:cd-student-s-32"]["n"] == 1  # `-s-32` is an architecture, not a seed


def test_bars_are_seed_means_with_std_error_bars():
    from clipdistill.report.plots import metric_bars, metric_bars_figure

    groups = [{"model": "T", "role": "teacher", "n": 1, "values": {"acc": [0.8], "lp": [0.9]}},
              {"model": "S", "role": "student", "n": 3, "values": {"acc": [0.4, 0.6, 0.5], "lp": [0.7, 0.7]}}]
    ax = metric_bars_figure(groups, ["acc", "lp"]).axes[0]
    from matplotlib.container import BarContainer

    teacher, student = [c for c in ax.containers if isinstance(c, BarContainer)]  # per model, in order
    assert [b.get_height() for b in teacher] == pytest.approx([80, 90])
    assert [b.get_height() for b in student] == pytest.approx([50, 70])
    # error bar segments: the student's acc spans mean +- std (10 points); its two equal lp seeds, +- 0
    (segments,) = student.errorbar.lines[2]
    spans = sorted(abs(seg[1][1] - seg[0][1]) for seg in segments.get_segments())
    assert spans == pytest.approx([0, 2 * 100 * statistics.stdev([0.4, 0.6, 0.5])])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["acc", "lp"]
    png = metric_bars(groups, ["acc", "lp"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and metric_bars([], ["acc"]) is None


def test_redundancy_pairs_name_each_dropped_samples_nearest_kept_one():
    v = np.array([[1, 0, 0], [0.99, 0.14, 0], [0, 1, 0], [0.1, 0.99, 0], [0, 0, 1], [0.6, 0.8, 0]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1, 1, 0])
    kept = np.array([True, False, True, False, True, False])
    groups = redundancy_pairs(v, labels, kept)
    by = {g["cluster"]: g for g in groups}
    assert by[0]["dropped"] == 2 and by[0]["kept"] == 1 and by[1]["dropped"] == 1
    (d1, k1, s1), (d2, k2, s2) = by[0]["pairs"]
    assert (d1, k1) == (1, 0) and s1 == pytest.approx(0.99 / np.hypot(0.99, 0.14), abs=1e-5)
    assert (d2, k2) == (5, 0) and s2 == pytest.approx(0.6, abs=1e-5)
    assert by[1]["pairs"][0][:2] == (3, 2)  # its nearest kept member, not the other one (row 4)


def test_td_samples_are_labelled_by_their_place_in_the_protocol_grid():
    from clipdistill.report.gallery import td_run_label

    assert td_run_label(Path("/o/td/cells/snli_ve/f0.25-s0/clip_td/td_samples.json")) == "snli_ve/f0.25-s0/clip_td"
    assert td_run_label(Path("/o/runs/ft/td_samples.json")) == "ft"


def test_curves_are_in_step_order_with_a_resumes_replayed_steps_once():
    rows = [{"step": 10, "loss": 3.0}, {"step": 20, "loss": 2.0}, {"step": 10, "loss": 2.9}, {"step": 30, "lr": 1},
            {"step": 20, "loss": 1.9}, {"step": 30, "loss": 1.5}]
    assert _by_step(rows) == [{"step": 10, "loss": 2.9}, {"step": 20, "loss": 1.9},
                              {"step": 30, "lr": 1, "loss": 1.5}]


# ---------------------------------------------------------------- a real tiny flow: world, embed, balance, CLIP-TD
def _cli(*args: str) -> str:
    r = CliRunner().invoke(app, list(args))
    assert r.exit_code == 0, r.output
    return r.output


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow")
    w, feats, bal, ft = root / "world", root / "feats", root / "bal", root / "ft"
    _cli("world", "--out", str(w), "--size", "tiny")
    _cli("embed", "--teacher", "open_clip:cd-student-xs-32", "--data", f"world:{w}", "--out", str(feats))
    _cli("balance", "--features", str(feats), "--out", str(bal), "--clusters", "6", "--target-keep", "0.5")
    repo = Path(__file__).resolve().parents[2]
    _cli("finetune", str(repo / "configs" / "td" / "finetune_tiny.yaml"), "--set", f"world={w}", "--set",
         "task.name=snli_ve", "--set", "task.kind=snli_ve", "--set", "task.folder=tasks/snli_ve", "--set",
         "task.val_split=dev", "--set", "task.shift_splits=[]", "--set", "teacher.models=[open_clip:cd-student-xs-32]",
         "--set", "td.method=clip_td", "--set", "train.epochs=1", "--set", "fraction=0.25", "--set", f"out={ft}")
    results = root / "results"
    results.mkdir()
    for i, (spec, acc) in enumerate([("T", 0.8), ("B-seed0", 0.3), ("B-seed1", 0.4), ("S-seed0", 0.55),
                                     ("S-seed1", 0.65)]):
        (results / f"{i}.json").write_text(json.dumps(result(spec, acc, acc + 0.05)[0]))
        (results / f"lp{i}.json").write_text(json.dumps(result(spec, acc, acc + 0.05)[1]))
    out = root / "report"
    _cli("report", str(results), str(bal), str(ft), "--out", str(out), "--teacher", "T", "--baseline", "B-seed0")
    return {"root": root, "bal": bal, "ft": ft, "report": out}


class _Figures(HTMLParser):
    def __init__(self):
        super().__init__()
        self.alts: list[str] = []
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.alts.append(dict(attrs)["alt"])
            self.srcs.append(dict(attrs)["src"])


def _png(src: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB")).astype(int)


def test_finetune_saves_what_clip_td_distilled(flow):
    data = json.loads((flow["ft"] / "td_samples.json").read_text())
    assert data["selection"] == "teacher_relevance" and data["grid"] == 4 and len(data["samples"]) == 4
    for s in data["samples"]:
        assert len(s["patches"]) == 8  # image_fraction 0.5 of the 4x4 grid
        assert s["tokens"][0] == "<sot>" and s["tokens"][-1] == "<eot>" and len(s["tokens"]) == len(s["selected"])
        assert sum(s["selected"]) == -(-len(s["tokens"]) // 2)  # text_fraction 0.5, rounded up
        assert 0.0 <= s["weight"] <= 1.0 and 0.0 <= s["teacher_prob"] <= 1.0
        view = Image.open(flow["ft"] / s["image"])
        assert view.size == (128, 128)


def test_report_has_bars_gallery_and_td_samples(flow):
    md = (flow["report"] / "report.md").read_text()
    assert "Per metric" in md and "Semantic balance" in md and "CLIP-TD: selected tokens" in md
    parser = _Figures()
    parser.feed((flow["report"] / "report.html").read_text())
    alts = parser.alts
    assert "teacher, baseline and students per metric" in alts
    assert any(a.startswith("balance bal: what was dropped") for a in alts), alts
    assert any(a.startswith("CLIP-TD samples ft") for a in alts), alts
    gallery = _png(parser.srcs[next(i for i, a in enumerate(alts) if "what was dropped" in a)])
    assert gallery.shape[0] > 300 and len(np.unique(gallery.reshape(-1, 3), axis=0)) > 50  # real thumbnails


# ---------------------------------------------------------------- the page in a real browser
def _chromium() -> str:
    """Chromium, installed from Debian when missing (CI runs as root with the registries reachable)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("no chromium and no root apt-get to install it: `apt-get install -y chromium`")
    try:
        subprocess.run(["apt-get", "update"], capture_output=True, timeout=300, check=True)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], capture_output=True,
                       timeout=900, check=True)
    except (subprocess.SubprocessError, OSError) as e:
        pytest.skip(f"chromium could not be installed ({e}): `apt-get install -y chromium`")
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("apt-get installed no `chromium` binary")
    return path


PROBE = ("<script>addEventListener('load', () => { const r = [...document.images].map(i => [i.alt, i.complete, "
         "i.naturalWidth, i.naturalHeight]); document.body.setAttribute('data-probe', JSON.stringify(r)); });"
         "</script>")


def _browser(chromium: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", "--hide-scrollbars", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_report_renders_in_a_headless_browser(flow, tmp_path):
    chromium = _chromium()
    page = (flow["report"] / "report.html").read_text()
    n_images = page.count("<img ")
    assert n_images >= 5
    # the report has no scripts of its own; a copy gets one that records what the browser decoded
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"))
    dom = _browser(chromium, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    probe = dom.stdout.split('data-probe="', 1)[1].split('"', 1)[0].replace("&quot;", '"')
    images = json.loads(probe)
    assert len(images) == n_images
    for alt, complete, width, height in images:
        assert complete and width > 100 and height > 100, (alt, width, height)
    shot = tmp_path / "shot.png"
    r = _browser(chromium, "--virtual-time-budget=10000", "--window-size=1280,6000", f"--screenshot={shot}",
                 (flow["report"] / "report.html").as_uri())
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    px = np.asarray(Image.open(shot).convert("L")).astype(float)
    assert px.shape == (6000, 1280)
    rows = px.std(axis=1)
    assert px.std() > 20 and (rows > 10).mean() > 0.3  # not a blank page: much of its height is drawn
