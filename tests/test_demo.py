"""The demo flow end to end on the `tiny` world (the `small` demo itself is too slow for CI), then a rerun
that reuses every stage."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
from typer.testing import CliRunner

from clipdistill import demo
from clipdistill.cli import app
from clipdistill.demo import run_demo


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs).get("src", ""))


def test_demo_tiny_end_to_end_then_reuse(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(demo.console, "width", 200)  # keep the final table on one line per row
    out = tmp_path / "demo"
    summary = run_demo(out, size="tiny")

    # the final table holds the numbers the eval stage wrote, for every model, scored on the test sets the
    # test_sets stage drew (6 per class on the tiny world), not on the world's own 4-per-class split
    for name in demo.MODELS:
        row = summary[name]
        zs = json.loads((out / "eval" / f"{name}-shape-zeroshot.json").read_text())
        assert row["zeroshot_shape"] == zs["metrics"]["acc1"]
        assert row["shape_images"] == zs["provenance"]["samples"] == 8 * 6 == row["probe_images"]
        assert 0.0 <= row["zeroshot_shape"] <= 1.0 and 0.0 <= row["linear_probe_shape"] <= 1.0
        assert row["params"] > 0 and row["image_per_s"] > 0
    assert summary["teacher"]["params"] > summary["cid"]["params"] == summary["baseline"]["params"]
    gains = summary["clip_td"]["gain_points"]
    assert gains and all(isinstance(v, float) for v in gains.values())
    printed = capsys.readouterr().out
    assert "zero-shot shape" in printed and "report.html" in printed
    cid_line = next(line for line in printed.splitlines() if line.strip("│ ").startswith("cid "))
    assert f"{100 * summary['cid']['zeroshot_shape']:.1f}" in cid_line
    # each distilled student's lead over the baseline, printed with its interval
    for name in demo.DISTILLED:
        line = next(row for row in printed.splitlines() if row.strip("│ ").startswith(f"{name} "))
        for metric in ("zeroshot_shape", "linear_probe_shape"):
            d = summary[name][f"{metric}_lead"]
            assert d["points"] == pytest.approx(100 * (summary[name][metric] - summary["baseline"][metric]))
            assert f"{d['points']:+.1f} +- {d['half_width']:.1f}" in line

    # the balance stage kept about the target share and the cid student trained on that kept-list
    balance = json.loads((out / "balance" / "report.json").read_text())
    assert 0.4 < balance["kept_fraction"] < 0.7
    manifest = json.loads((out / "students" / "cid" / "manifest.json").read_text())
    assert "balance" in json.dumps(manifest)

    html = (out / "report" / "report.html").read_text()
    parser = _Images()
    parser.feed(html)
    assert parser.srcs and all(s.startswith("data:image/png;base64,") for s in parser.srcs)
    assert "cid" in html and (out / "report" / "report.md").is_file()

    # second run: every stage reused, nothing retrained
    stamp = (out / "students" / "cid" / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    again = run_demo(out, size="tiny")
    printed = capsys.readouterr().out
    assert printed.count("reuse") >= 10 and again["cid"] == summary["cid"]
    assert (out / "students" / "cid" / "model.safetensors").stat().st_mtime_ns == stamp

    # --force: every stage after the (seeded, never overwritten) world runs again over its own outputs
    world_stamp = (out / "world" / "world.json").stat().st_mtime_ns
    forced = run_demo(out, size="tiny", force=True)
    printed = capsys.readouterr().out
    assert printed.count("reuse") == 1 and "reuse world" in printed
    assert (out / "students" / "cid" / "model.safetensors").stat().st_mtime_ns != stamp
    assert (out / "world" / "world.json").stat().st_mtime_ns == world_stamp
    assert forced["cid"]["zeroshot_shape"] == summary["cid"]["zeroshot_shape"]  # seeded: the same student again


def test_demo_help_says_how_to_use_real_data():
    res = CliRunner().invoke(app, ["demo", "--help"], terminal_width=200)
    assert res.exit_code == 0
    assert "--teacher" in res.output and "--data" in res.output and ".tar" in res.output


def test_lead_interval_is_the_normal_95pct_interval_of_a_difference():
    # 0.30 vs 0.25 on 6,000 images each: 1.96 * sqrt(.3 * .7 / 6000 + .25 * .75 / 6000) = 1.595 pt
    d = demo.lead(0.30, 6000, 0.25, 6000)
    assert d["points"] == pytest.approx(5.0) and d["half_width"] == pytest.approx(1.5954, abs=1e-3) and d["beyond"]
    small = demo.lead(0.30, 160, 0.25, 160)  # the world's own 160-image split: the same 5 pt is inside the noise
    assert small["half_width"] == pytest.approx(9.769, abs=0.01) and not small["beyond"]
    assert demo.lead(None, 6000, 0.25, 6000) is None and demo.lead(0.3, 0, 0.25, 6000) is None


def test_summary_in_a_log_file_is_not_cut_to_80_columns():
    """`make demo > demo.log`: rich's width off a terminal is 80, which cut the summary's cells ("21,311…")."""
    row = {"params": 21311921, "image_per_s": 926, "zeroshot_shape": 0.229, "zeroshot_color": 0.975,
           "linear_probe_shape": 0.337, "shape_images": 6000}
    summary = {m: dict(row) for m in demo.MODELS}
    summary["cid"]["zeroshot_shape_lead"] = {"points": 2.0, "half_width": 1.3}
    with demo.console.capture() as captured:  # pytest's captured stdout is not a terminal, as a log file is not
        demo.console.print(demo.summary_table(summary))
    out = captured.get()
    assert "…" not in out and "21,311,921" in out and "+2.0 +- 1.3" in out and "linear probe shape" in out, out
