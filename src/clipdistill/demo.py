"""`clipdistill demo`: the whole flow on the embedded world, through the same CLI verbs a user would type.

world -> test sets -> stand-in teacher -> embed -> balance -> distill (baseline, cid) -> eval -> CLIP-TD
mini-protocol (VQA, the shipped pretrained ViLT as student) -> report

Each stage prints the command it runs and records it in `OUT/.stages/<stage>.json` when it finishes. A rerun
reuses a finished stage whose command is unchanged and whose upstream stages were all reused, so a second
`make demo` is quick and a changed option reruns exactly the stages it affects.
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clipdistill.errors import UserError
from clipdistill.progress import StageProgress

# a log file (`make demo > demo.log`) gets rich's 80-column default, which cut the summary's cells to "21,311…"
console = Console() if sys.stdout.isatty() else Console(width=160)


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
    td_steps: int  # optimizer steps of each CLIP-TD protocol cell
    test_per_class: int  # images per class of the shape set the final table is scored on (zero-shot, probe)


SIZES = {
    "tiny": Sizes("tiny", 2, 2, 32, 8, (0.25,), (0,), 2, 6),
    # 750 shape images per class (6,000): the world's own 160-image split carries +-6 pt of 95% sampling noise,
    # too much to tell a distilled student from the baseline; on 6,000 the interval of a difference is ~1.3-1.5 pt
    "small": Sizes("small", 16, 8, 128, 64, (0.25,), (0, 1), 150, 750),
}

# A ResNet stand-in: within the demo's budget it learns the small world's shapes (a ViT teacher of this size
# stays at chance on them, leaving no gap for the student to close) and trains 16 epochs in a few minutes.
TEACHER_ARCH = "open_clip:cd-teacher-rn-64"
DISTILLED = ("cid",)  # students taught by the teacher; each is compared with the baseline
MODELS = ("teacher", "baseline", *DISTILLED)
STUDENT_ARCH = "open_clip:cd-student-s-32"
# The CLIP-TD part's student: a ViLT pretrained on the demo's world by `vlpretrain` and shipped with the package
# (its README.md; experiments/demo_vilt.sh makes it in ~2.5 h), as a user would start from a Hub checkpoint
VL_STUDENT = "vilt-small-s0"


def preset(name: str) -> str:
    return str(resources.files("clipdistill") / "configs" / f"{name}.yaml")


def td_preset() -> str:
    return str(resources.files("clipdistill") / "configs" / "td" / "protocol_demo.yaml")


def vl_student() -> str:
    return f"hf:{resources.files('clipdistill') / 'world' / 'pretrained' / VL_STUDENT}"


def plan(out: Path, s: Sizes, teacher: str | None, data: str | None) -> list[tuple[str, str, list[list[str]]]]:
    """(stage, what it does, commands). `teacher`/`data` point stages at a real teacher / real pairs."""
    world, source = out / "world", data or f"world:{out / 'world'}"
    teacher_spec = teacher or f"run:{out / 'teacher'}"
    common = ["--set", f"data.source={source}", "--set", f"data.batch_size={s.batch_size}"]
    stages: list[tuple[str, str, list[list[str]]]] = [
        ("world", "build the embedded world (a stand-in for real data)",
         [["world", "--out", str(world), "--size", s.world, "--seed", "0"]]),
        ("test_sets", f"larger test sets ({s.test_per_class} images per class), drawn like the world's own",
         [[EXTRA_TEST, str(world), str(out / "test"), "--per-class", str(s.test_per_class)]]),
    ]
    if teacher is None:
        stages.append(("teacher", "train the stand-in teacher (contrastive, no teacher of its own)",
                       [["distill", preset("baseline"), "--out", str(out / "teacher"), "--overwrite", *common,
                         "--set", f"student.model={TEACHER_ARCH}", "--set", f"train.epochs={s.teacher_epochs}",
                         "--set", "train.warmup=0.05"]]))
    stages += [
        ("embed", "teacher features for every pair, stored once",
         [["embed", "--teacher", teacher_spec, "--data", source, "--out", str(out / "features")]]),
        ("balance", "semantic balance (our reconstruction of CLIP-CID's step): keep ~56%",
         [["balance", "--features", str(out / "features"), "--out", str(out / "balance"), "--overwrite",
           "--clusters", str(s.clusters), "--target-keep", "0.563"]]),
        ("baseline", "baseline student: contrastive loss only, all data",
         [["distill", preset("baseline"), "--out", str(out / "students" / "baseline"), "--overwrite", *common,
           "--set", f"student.model={STUDENT_ARCH}", "--set", f"train.epochs={s.student_epochs}",
           "--set", "train.warmup=0.05"]]),
        # all the pairs, as the baseline: on this world the balanced 56% at the same epochs does not keep the
        # teacher's gain (benchmarks/RESULTS.md); the balance stage still gives the cluster loss its clusters
        ("cid", "CLIP-CID student: clip + cluster + instance on all the pairs (clusters from balance), teacher "
                "read from the store",
         [["distill", preset("cid"), "--out", str(out / "students" / "cid"), "--overwrite", *common,
           "--set", f"student.model={STUDENT_ARCH}", "--set", f"teacher.models=[{teacher_spec}]",
           "--set", "teacher.mode=cached", "--set", f"teacher.features={out / 'features'}",
           "--set", f"data.keep={out / 'balance'}", "--set", "data.filter=false",
           "--set", f"train.epochs={s.student_epochs}", "--set", "train.warmup=0.05"]]),
    ]
    models = {"teacher": teacher_spec, "baseline": f"run:{out / 'students' / 'baseline'}",
              "cid": f"run:{out / 'students' / 'cid'}"}
    evals = []
    for name, spec in models.items():
        # colour saturates near 98% for every model: the world's own 200 images say so, and spare ~7,500 encodes
        for cset, folder in (("shape", out / "test" / "shape"), ("color", world / "classify" / "color" / "test")):
            evals.append(["eval", "zeroshot", "--model", spec, "--data", str(folder), "--name", cset,
                          "--output", str(out / "eval" / f"{name}-{cset}-zeroshot.json")])
        evals.append(["eval", "linear-probe", "--model", spec, "--train", str(world / "classify" / "shape" / "train"),
                      "--data", str(out / "test" / "shape"), "--name", "shape",
                      "--output", str(out / "eval" / f"{name}-shape-linear_probe.json")])
    stages.append(("eval", "zero-shot and linear probe of teacher, baseline and CLIP-CID student", evals))
    fr = "[" + ",".join(str(f) for f in s.td_fractions) + "]"
    seeds = "[" + ",".join(str(x) for x in s.td_seeds) + "]"
    stages.append(("clip_td", "CLIP-TD mini-protocol (our reconstruction) on VQA: a pretrained ViLT fine-tuned "
                              "without and with CLIP-TD",
                   [["protocol", td_preset(), "--set", f"world={world}",
                     "--set", f"teacher.models={json.dumps([teacher_spec])}",
                     "--set", f"student={json.dumps({'model': vl_student()})}", "--set", f"fractions={fr}",
                     "--set", f"seeds={seeds}", "--set", f"budget.steps={s.td_steps}",
                     "--out", str(out / "clip_td")]]))
    stages.append(("report", "markdown + html report",
                   [["report", str(out / "eval"), str(out / "students" / "baseline"), str(out / "students" / "cid"),
                     str(out / "balance"), str(out / "clip_td"), "--out", str(out / "report"),
                     "--teacher", teacher_spec, "--baseline", models["baseline"], "--title", "clipdistill demo"]]))
    return stages


# Not a CLI verb: the test_sets stage is experiments/extra_test.py (world.build.write_extra_test), run in-process.
EXTRA_TEST = "experiments/extra_test.py"


def _extra_test(world: str, out: str, flag: str, per_class: str) -> None:
    from clipdistill.world.build import write_extra_test

    # a rerun (new --per-class, or a rebuilt world) replaces the sets the demo drew before: they are derived
    # from the world alone; written beside, then renamed, so an interrupted stage leaves no half set behind
    tmp = Path(f"{out}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    write_extra_test(world, tmp, int(per_class))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def _shown(argv: list[str]) -> str:
    return f"python {shlex.join(argv)}" if argv[0] == EXTRA_TEST else f"clipdistill {shlex.join(argv)}"


def print_command(argv: list[str]) -> None:
    """The command exactly as it runs, on one line whatever the width, so it can be pasted back: escaped, since
    rich reads `[run:DIR]` in a `--set 'teacher.models=[...]'` as a markup tag and drops it."""
    console.print(f"[dim]$ {escape(_shown(argv))}[/]", soft_wrap=True)


def _run(argv: list[str]) -> None:
    from clipdistill.cli import app

    if argv[0] == EXTRA_TEST:
        _extra_test(*argv[1:])
        return
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
        # the world is the same bytes for the same command (seeded), and `world` never writes over a folder:
        # --force reruns every stage after it
        same = mark.is_file() and json.loads(mark.read_text())["commands"] == commands
        if same and (not upstream_changed or name == "world"):
            console.print(f"[green]reuse[/] {name}: {escape(what)}")
            bar.advance()
            continue
        upstream_changed = True
        console.rule(f"[bold]{name}[/]: {escape(what)}")
        t = time.perf_counter()
        for argv in commands:
            print_command(argv)
            _run(argv)
        timings[name] = round(time.perf_counter() - t, 1)
        mark.write_text(json.dumps({"commands": commands, "seconds": timings[name]}))
        bar.advance()
    bar.close()
    summary = summarise(out, teacher)
    console.print(summary_table(summary))
    console.print(f"report: [bold]{escape(str(out / 'report' / 'report.html'))}[/]")
    return summary


def _metric(path: Path, key: str) -> tuple[float | None, int | None]:
    """(score, number of test images) from an eval result file; (None, None) when the stage did not write it."""
    if not path.is_file():
        return None, None
    doc = json.loads(path.read_text())
    return doc["metrics"].get(key), doc.get("provenance", {}).get("samples")


def lead(p1: float | None, n1: int | None, p0: float | None, n0: int | None) -> dict | None:
    """Points p1 - p0 and the half-width of its normal 95% interval, the two scores taken as independent
    proportions on n1 and n0 images. Both models see the same images, so the paired interval would be narrower:
    this one is the cautious choice. It covers the test set's sampling only, not the spread between trainings."""
    if None in (p1, n1, p0, n0) or not n1 or not n0:
        return None
    half = 1.96 * math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
    return {"points": 100 * (p1 - p0), "half_width": 100 * half, "beyond": abs(p1 - p0) > half}


def summarise(out: Path, teacher: str | None) -> dict:
    """The final table's numbers, read back from the files the stages wrote."""
    rows = {}
    for name in MODELS:
        ev = out / "eval"
        res = ev / f"{name}-shape-zeroshot.json"
        data = json.loads(res.read_text()) if res.is_file() else {}
        eff = data.get("efficiency", {})
        (zs, zs_n), (lp, lp_n) = _metric(res, "acc1"), _metric(ev / f"{name}-shape-linear_probe.json", "lp_acc1")
        rows[name] = {
            "params": eff.get("params", {}).get("total") if isinstance(eff.get("params"), dict) else eff.get("params"),
            "image_per_s": eff.get("image_encode_per_s"),
            "zeroshot_shape": zs, "shape_images": zs_n,
            "zeroshot_color": _metric(ev / f"{name}-color-zeroshot.json", "acc1")[0],
            "linear_probe_shape": lp, "probe_images": lp_n,
        }
    base = rows["baseline"]
    for name in DISTILLED:
        r = rows[name]
        r["zeroshot_shape_lead"] = lead(r["zeroshot_shape"], r["shape_images"], base["zeroshot_shape"],
                                        base["shape_images"])
        r["linear_probe_shape_lead"] = lead(r["linear_probe_shape"], r["probe_images"], base["linear_probe_shape"],
                                            base["probe_images"])
    td_file = out / "clip_td" / "summary.json"
    rows["clip_td"] = json.loads(td_file.read_text()) if td_file.is_file() else None
    return rows


def summary_table(summary: dict) -> Table:
    n = summary["baseline"].get("shape_images")
    table = Table(title="clipdistill demo (embedded world, stand-in teacher)"
                  + (f"; shape scored on {n:,} test images" if n else ""))
    for col in ("model", "params", "images/s", "zero-shot shape", "vs baseline, 95% CI", "zero-shot colour",
                "linear probe shape", "vs baseline, 95% CI"):
        table.add_column(col)

    def f(v, pct=True):
        return "-" if v is None else (f"{100 * v:.1f}" if pct else f"{v:,.0f}")

    def d(v):
        return "-" if v is None else f"{v['points']:+.1f} +- {v['half_width']:.1f}"

    for name in MODELS:
        r = summary[name]
        table.add_row(name, f(r["params"], False), f(r["image_per_s"], False), f(r["zeroshot_shape"]),
                      d(r.get("zeroshot_shape_lead")), f(r["zeroshot_color"]), f(r["linear_probe_shape"]),
                      d(r.get("linear_probe_shape_lead")))
    td = summary.get("clip_td")
    if td:
        table.caption = "CLIP-TD gain over the baseline fine-tune: " + ", ".join(
            f"{k}: {v:+.1f} pt" for k, v in td.get("gain_points", {}).items())
    return table
