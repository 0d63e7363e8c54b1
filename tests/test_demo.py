"""The demo flow end to end on the `tiny` world (the `small` demo itself is too slow for CI), then a rerun
that reuses every stage."""

from __future__ import annotations

import json
from html.parser import HTMLParser

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

    # the final table holds the numbers the eval stage wrote, for all three models
    for name in ("teacher", "baseline", "cid"):
        row = summary[name]
        zs = json.loads((out / "eval" / f"{name}-shape-zeroshot.json").read_text())
        assert row["zeroshot_shape"] == zs["metrics"]["acc1"]
        assert 0.0 <= row["zeroshot_shape"] <= 1.0 and 0.0 <= row["linear_probe_shape"] <= 1.0
        assert row["params"] > 0 and row["image_per_s"] > 0
    assert summary["teacher"]["params"] > summary["cid"]["params"] == summary["baseline"]["params"]
    gains = summary["clip_td"]["gain_points"]
    assert gains and all(isinstance(v, float) for v in gains.values())
    printed = capsys.readouterr().out
    assert "zero-shot shape" in printed and "report.html" in printed
    cid_line = next(line for line in printed.splitlines() if line.strip("│ ").startswith("cid "))
    assert f"{100 * summary['cid']['zeroshot_shape']:.1f}" in cid_line

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
    assert printed.count("reuse") >= 8 and again["cid"] == summary["cid"]
    assert (out / "students" / "cid" / "model.safetensors").stat().st_mtime_ns == stamp


def test_demo_help_says_how_to_use_real_data():
    res = CliRunner().invoke(app, ["demo", "--help"], terminal_width=200)
    assert res.exit_code == 0
    assert "--teacher" in res.output and "--data" in res.output and ".tar" in res.output
