"""The data loader now against the loader of an earlier commit: same source, views, batch, workers, alternated.

    seconds per batch over one pass (decode + student and teacher transforms + tokenise + collate + transfer
    to the main process), median of rounds; ratio now / then (< 1: faster now)

The earlier `clipdistill/data/loader.py` is read with `git show REV:...` and imported as its own module; the
source (bench_peer's CSV of 64 px PNGs) and everything else are today's.

    .venv/bin/python benchmarks/bench_loader_ab.py --against REV [--samples 1024] [--batch 128] [--workers 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import clipdistill  # noqa: F401
from clipdistill.data import loader as now_loader
from clipdistill.data import open_source
from clipdistill.zoo import load_model

HERE = Path(__file__).resolve().parent


def old_module(rev: str):
    text = subprocess.run(["git", "show", f"{rev}:src/clipdistill/data/loader.py"], cwd=HERE.parent,
                          capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "loader_then.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("loader_then", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["loader_then"] = mod  # worker processes unpickle the dataset class by module name
    spec.loader.exec_module(mod)
    return mod


def one_pass(mod, source, views, batch: int, workers: int) -> float:
    t0 = time.perf_counter()
    n = sum(1 for _ in mod.make_loader(source, views, batch, shuffle=True, seed=0, num_workers=workers))
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", required=True, help="git revision of the earlier loader")
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default="/tmp/clipdistill-peer")
    ap.add_argument("--out", default=str(HERE / "out" / "loader_ab.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    sys.path.insert(0, str(HERE))
    from bench_peer import make_pairs

    source = open_source(str(make_pairs(Path(args.work) / "data", args.samples, 64)))
    s, t = load_model("open_clip:cd-student-s-64"), load_model("open_clip:cd-teacher-64")
    views = [(s.train_transform, s.tokenizer), (t.eval_transform, t.tokenizer)]
    then = old_module(args.against)
    # a loader from before the typed LoaderBatch took its views as a dict of key prefixes
    then_views = views if hasattr(then, "LoaderBatch") else dict(zip(("", "teacher_"), views, strict=True))
    times: dict[str, list[float]] = {"now": [], "then": []}
    for _ in range(args.rounds):
        for name, mod, v in (("now", now_loader, views), ("then", then, then_views)):
            times[name].append(one_pass(mod, source, v, args.batch, args.workers))
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {"against": args.against, "samples": args.samples, "batch": args.batch, "workers": args.workers,
           "seconds_per_batch": times, "median": med, "ratio_now_then": med["now"] / med["then"]}
    print(json.dumps(res, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
