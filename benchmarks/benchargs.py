"""Command-line setup the timing benchmarks share (bench_distill, bench_td, bench_profile, bench_flops): the
`--threads` / `--quick` / `--out` options (and the student / teacher pair), what `--quick` shrinks, torch's threads
and seed, the result JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def parser(doc: str, out: str, quick: str, threads: int = 2) -> argparse.ArgumentParser:
    """The benchmark's parser (its docstring as the description) with the shared options; `quick` is the help of
    `--quick`, saying what it shrinks."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=threads)
    ap.add_argument("--quick", action="store_true", help=quick)
    ap.add_argument("--out", default=out)
    return ap


def add_models(ap: argparse.ArgumentParser) -> None:
    """`--student` / `--teacher` SPECs; by default the presets' student (configs/cid.yaml) and tinyclip.yaml's
    teacher."""
    ap.add_argument("--student", default="open_clip:cd-student-s-32", help="student SPEC")
    ap.add_argument("--teacher", default="open_clip:cd-teacher-64", help="teacher SPEC")


def parse(ap: argparse.ArgumentParser, **quick) -> argparse.Namespace:
    """Parsed arguments, with `quick`'s values in place under `--quick`; torch set to `--threads` and seed 0."""
    args = ap.parse_args()
    if args.quick:
        vars(args).update(quick)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return args


def write_result(out: str, res: dict, echo: bool = True) -> None:
    """`res` as JSON in `out` (run_all.py gathers its `checks`), and on stdout unless `echo` is off."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(res, indent=2))
    if echo:
        print(json.dumps(res, indent=2))
