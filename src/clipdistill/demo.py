"""`clipdistill demo`: the whole flow on the embedded world, through the same CLI verbs a user would type.

world -> stand-in teacher -> embed -> balance -> distill (baseline, cid) -> eval -> CLIP-TD mini-protocol -> report

Each stage prints the command it runs and records it in `OUT/.stages/<stage>.json` when it finishes. A rerun
reuses a finished stage whose command is unchanged and whose upstream stages were all reused, so a second
`make demo` is quick and a changed option reruns exactly the stages it affects.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.table import Table

from clipdistill.errors import UserError
from clipdistill.progress import StageProgress

console = Console()


@dataclass(frozen=True)
class Sizes:
    """How much work each stage does; `tiny` is for tests, `small` is `make demo` (< 15 min on 2 cores)."""

    world: str
    teacher_epochs: int
    student_epochs: int
    batch_size: int
    clusters: int
    td_fractions: tuple[float, ...]
    td_seeds: tuple[int, ...]
    td_epochs: int


SIZES = {
    "tiny": Sizes("tiny", 2, 2, 32, 8, (0.25,), (0,), 1),
    "small": Sizes("small", 16, 10, 128, 64, (0.05, 0.25), (0, 1), 4),
}

# A ResNet stand-in: within the demo's budget it learns the small world's shapes (a ViT teacher of this size
# stays at chance on them, leaving no gap for the student to close) and trains 16 epochs in a few minutes.
TEACHER_ARCH = "open_clip:cd-teacher-rn-64"
STUDENT_ARCH = "open_clip:cd-student-s-32"


def preset(name: str) -> str:
    return str(resources.files("clipdistill") / "configs" / f"{name}.yaml")


def td_preset() -> str:
    return str(resources.files("clipdistill") / "configs" / "td" / "protocol_demo.yaml")


def plan(out: Path, s: Sizes, teacher: str | None, data: str | None) -> list[tuple[str, str, list[list[str]]]]:
    """(stage, what it does, commands). `teacher`/`data` point stages at a real teacher / real pairs."""
    world, source = out / "world", data or f"world:{out / 'world'}"
    teacher_spec = teacher or f"run:{out / 'teacher'}"
    common = ["--set", f"data.source={source}", "--set", f"data.batch_size={s.batch_size}"]
    stages: list[tuple[str, str, list[list[str]]]] = [
        ("world", "build the embedded world (a stand-in for real data)",
         [["world", "--out", str(world), "--size", s.world, "--seed", "0"]]),
    ]
    if teacher is None:
        stages.append(("teacher", "train the stand-in teacher (contrastive, no teacher of its own)",
                       [["distill", preset("baseline"), "--out", str(out / "teacher"), "--overwrite", *common,
                         "--set", f"student.model={TEACHER_ARCH}", "--set", f"train.epochs={s.teacher_epochs}",
                         "--set", "train.warmup_steps=20"]]))
    stages += [
        ("embed", "teacher features for every pair, stored once",
         [["embed", "--teacher", teacher_spec, "--data", source, "--out", str(out / "features")]]),
        ("balance", "semantic balance (our reconstruction of CLIP-CID's step): keep ~56%",
         [["balance", "--features", str(out / "features"), "--out", str(out / "balance"), "--overwrite",
           "--clusters", str(s.clusters), "--target-keep", "0.563"]]),
        ("baseline", "baseline student: contrastive loss only, all data",
         [["distill", preset("baseline"), "--out", str(out / "students" / "baseline"), "--overwrite", *common,
           "--set", f"student.model={STUDENT_ARCH}", "--set", f"train.epochs={s.student_epochs}",
           "--set", "train.warmup_steps=20"]]),
        ("cid", "CLIP-CID student: balanced data + clip + cluster + instance, teacher read from the store",
         [["distill", preset("cid"), "--out", str(out / "students" / "cid"), "--overwrite", *common,
           "--set", f"student.model={STUDENT_ARCH}", "--set", f"teacher.models=[{teacher_spec}]",
           "--set", "teacher.mode=cached", "--set", f"teacher.features={out / 'features'}",
           "--set", f"data.keep={out / 'balance'}", "--set", f"train.epochs={s.student_epochs}",
           "--set", "train.warmup_steps=20"]]),
    ]
    models = {"teacher": teacher_spec, "baseline": f"run:{out / 'students' / 'baseline'}",
              "cid": f"run:{out / 'students' / 'cid'}"}
    evals = []
    for name, spec in models.items():
        for cset in ("shape", "color"):
            folder = world / "classify" / cset
            evals.append(["eval", "zeroshot", "--model", spec, "--data", str(folder / "test"), "--name", cset,
                          "--output", str(out / "eval" / f"{name}-{cset}-zeroshot.json")])
        evals.append(["eval", "linear-probe", "--model", spec, "--train", str(world / "classify" / "shape" / "train"),
                      "--data", str(world / "classify" / "shape" / "test"), "--name", "shape",
                      "--output", str(out / "eval" / f"{name}-shape-linear_probe.json")])
    stages.append(("eval", "zero-shot and linear probe of teacher, baseline and CLIP-CID student", evals))
    fr = "[" + ",".join(str(f) for f in s.td_fractions) + "]"
    seeds = "[" + ",".join(str(x) for x in s.td_seeds) + "]"
    stages.append(("clip_td", "CLIP-TD mini-protocol (our reconstruction) on SNLI-VE: baseline vs CLIP-TD",
                   [["protocol", td_preset(), "--set", f"world={world}",
                     "--set", f"teacher.models={json.dumps([teacher_spec])}", "--set", f"fractions={fr}",
                     "--set", f"seeds={seeds}", "--set", f"train.epochs={s.td_epochs}",
                     "--out", str(out / "clip_td")]]))
    stages.append(("report", "markdown + html report",
                   [["report", str(out / "eval"), str(out / "students" / "baseline"), str(out / "students" / "cid"),
                     str(out / "balance"), str(out / "clip_td"), "--out", str(out / "report"),
                     "--teacher", teacher_spec, "--baseline", models["baseline"], "--title", "clipdistill demo"]]))
    return stages


def _run(argv: list[str]) -> None:
    from clipdistill.cli import app

    try:
        app(argv, standalone_mode=False)
    except SystemExit as e:  # typer exits on --help-style paths; anything non-zero is a failure
        if e.code:
            raise UserError(f"stage command failed (exit {e.code}): clipdistill {shlex.join(argv)}") from None


def run_demo(out: Path, size: str = "small", teacher: str | None = None, data: str | None = None,
             force: bool = False) -> dict:
    if size not in SIZES:
        raise UserError(f"--size must be one of {', '.join(SIZES)}")
    out.mkdir(parents=True, exist_ok=True)
    marks = out / ".stages"
    marks.mkdir(exist_ok=True)
    upstream_changed = force
    timings = {}
    stages = plan(out, SIZES[size], teacher, data)
    # plain lines even on a terminal: the stages draw their own bars, and rich allows one at a time
    bar = StageProgress("demo", len(stages), unit="stages", tty=False)
    for name, what, commands in stages:
        bar.update(info=name)
        mark = marks / f"{name}.json"
        if not upstream_changed and mark.is_file() and json.loads(mark.read_text())["commands"] == commands:
            console.print(f"[green]reuse[/] {name}: {what}")
            bar.advance()
            continue
        upstream_changed = True
        console.rule(f"[bold]{name}[/]: {what}")
        t = time.perf_counter()
        for argv in commands:
            console.print(f"[dim]$ clipdistill {shlex.join(argv)}[/]")
            _run(argv)
        timings[name] = round(time.perf_counter() - t, 1)
        mark.write_text(json.dumps({"commands": commands, "seconds": timings[name]}))
        bar.advance()
    bar.close()
    summary = summarise(out, teacher)
    console.print(summary_table(summary))
    console.print(f"report: [bold]{out / 'report' / 'report.html'}[/]")
    return summary


def _metric(path: Path, key: str) -> float | None:
    if not path.is_file():
        return None
    return json.loads(path.read_text())["metrics"].get(key)


def summarise(out: Path, teacher: str | None) -> dict:
    """The final table's numbers, read back from the files the stages wrote."""
    rows = {}
    for name in ("teacher", "baseline", "cid"):
        ev = out / "eval"
        res = ev / f"{name}-shape-zeroshot.json"
        data = json.loads(res.read_text()) if res.is_file() else {}
        eff = data.get("efficiency", {})
        rows[name] = {
            "params": eff.get("params", {}).get("total") if isinstance(eff.get("params"), dict) else eff.get("params"),
            "image_per_s": eff.get("image_encode_per_s"),
            "zeroshot_shape": _metric(res, "acc1"),
            "zeroshot_color": _metric(ev / f"{name}-color-zeroshot.json", "acc1"),
            "linear_probe_shape": _metric(ev / f"{name}-shape-linear_probe.json", "lp_acc1"),
        }
    td_file = out / "clip_td" / "summary.json"
    rows["clip_td"] = json.loads(td_file.read_text()) if td_file.is_file() else None
    return rows


def summary_table(summary: dict) -> Table:
    table = Table(title="clipdistill demo (embedded world, stand-in teacher)")
    for col in ("model", "params", "images/s", "zero-shot shape", "zero-shot colour", "linear probe shape"):
        table.add_column(col)

    def f(v, pct=True):
        return "-" if v is None else (f"{100 * v:.1f}" if pct else f"{v:,.0f}")

    for name in ("teacher", "baseline", "cid"):
        r = summary[name]
        table.add_row(name, f(r["params"], False), f(r["image_per_s"], False), f(r["zeroshot_shape"]),
                      f(r["zeroshot_color"]), f(r["linear_probe_shape"]))
    td = summary.get("clip_td")
    if td:
        table.caption = "CLIP-TD gain over the baseline fine-tune: " + ", ".join(
            f"{k}: {v:+.1f} pt" for k, v in td.get("gain_points", {}).items())
    return table
