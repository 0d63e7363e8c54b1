"""Speed against the peer toolkits, same model, same data, same machine, runs alternated round by round.

    ours / open_clip_train, plain CLIP training (InfoNCE, no teacher)            wall time of the command
    ours / open_clip_train --distill-model (online teacher, InfoNCE + logit KD)   wall time of the command
    ours / clip_benchmark, zero-shot classification over an ImageFolder          wall time, model load included

Both trainers read one CSV of PNG files (open_clip's `filepath` / `title` columns), train the same open_clip
architecture for the same steps (batch, epochs, lr, warmup, workers, threads, fp32 on CPU), and save once at
the end. The teacher is a `clipdistill export` folder: open_clip_train loads its architecture by name and its
weights with `--distill-pretrained`; ours reads the same file as `open_clip:ARCH@FILE`. open_clip_train feeds
its teacher the student's images, so student and teacher share image size and tokenizer here.

The peers are optional: open_clip_train ships inside the open_clip_torch wheel but needs pandas, and
clip_benchmark is its own package. Install both with the `bench` extra (`pip install -e '.[bench]'`, pins
that keep the CPU torch), or into a side folder (`pip install --no-deps --target DIR pandas==3.1.1
clip_benchmark==1.6.2 pycocotools pycocoevalcap`) and pass `--peer-path DIR` (or set CLIPDISTILL_PEER_PATH).
A peer that cannot be imported is skipped with that message; the other comparisons still run.

    .venv/bin/python benchmarks/bench_peer.py [--quick] [--rounds 3] [--peer-path DIR] [--out benchmarks/out/peer.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import clipdistill  # noqa: F401  (torchvision shim before open_clip)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
INSTALL_HINT = ("install the peers with `pip install -e '.[bench]'`, or `pip install --no-deps --target DIR "
                "pandas==3.1.1 clip_benchmark==1.6.2 pycocotools pycocoevalcap` and pass --peer-path DIR")
# open_clip_train's own entry point, after our architectures are registered with open_clip by name (as any
# user with a custom config does); clipdistill first so the torchvision shim is in place
PEER_MAIN = ("import sys, clipdistill\n"
             "from clipdistill.zoo.openclip_backend import register_shipped_configs\n"
             "register_shipped_configs()\n"
             "from open_clip_train.main import main\n"
             "main(sys.argv[1:])\n")


def peer_env(peer_path: str | None, threads: int) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONHASHSEED="0")
    if peer_path:
        env["PYTHONPATH"] = os.pathsep.join([peer_path, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def importable(modules: list[str], env: dict[str, str]) -> str | None:
    """None when every module imports in a fresh interpreter with `env`, else the first error line."""
    code = "import clipdistill\n" + "".join(f"import {m}\n" for m in modules)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if proc.returncode == 0:
        return None
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit {proc.returncode}"


def make_pairs(root: Path, n: int, size: int) -> Path:
    """`n` PNG scenes (coloured shape on grey) and `pairs.csv` with open_clip's comma-separated columns."""
    import csv
    import random

    sys.path.insert(0, str(HERE))
    from parity_clip_benchmark import COLOURS, SHAPES, draw

    rng = random.Random(0)
    img_dir = root / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        name, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        path = img_dir / f"{i:05d}.png"
        if not path.exists():
            draw(COLOURS[name], shape, rng, size).save(path)
        rows.append((str(path), f"a {name} {shape} on a grey background"))
    out = root / "pairs.csv"
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filepath", "title"])
        w.writerows(rows)
    return out


def export_teacher(arch: str, out: Path) -> Path:
    """A randomly initialised teacher (seed 0) written by `clipdistill export` (open_clip format)."""
    weights = out / "open_clip_model.safetensors"
    if not weights.is_file():
        proc = subprocess.run([sys.executable, "-m", "clipdistill", "export", "--model", f"open_clip:{arch}",
                               "--format", "open_clip", "--out", str(out)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"clipdistill export failed: {proc.stderr.strip()[-400:]}")
    return weights


def our_cmd(args, work: Path, pairs: Path, name: str, teacher: Path | None) -> list[str]:
    import yaml

    cfg = {"student": {"model": f"open_clip:{args.student}"},
           "data": {"source": str(pairs), "batch_size": args.batch, "num_workers": args.workers},
           "loss": {"clip": {}},
           "train": {"epochs": args.epochs, "lr": 5e-4, "weight_decay": 0.1, "warmup_steps": 2, "device": "cpu",
                     "threads": args.threads, "save_every": 10**6, "log_every": 10**6, "progress": False,
                     "tensorboard": False, "seed": 0}}
    if teacher is not None:
        cfg["teacher"] = {"mode": "online", "models": [f"open_clip:{args.teacher}@{teacher}"]}
        cfg["loss"]["logit_kd"] = {"teacher_scale": None}  # the teacher's own scale, as DistillClipLoss
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return [sys.executable, "-m", "clipdistill", "distill", str(path), "--out", str(work / "runs" / name)]


def peer_cmd(args, work: Path, pairs: Path, name: str, teacher: Path | None) -> list[str]:
    cmd = [sys.executable, "-c", PEER_MAIN, "--train-data", str(pairs), "--dataset-type", "csv",
           "--csv-separator", ",", "--csv-img-key", "filepath", "--csv-caption-key", "title",
           "--train-num-samples", str(args.samples), "--model", args.student, "--batch-size", str(args.batch),
           "--epochs", str(args.epochs), "--lr", "5e-4", "--wd", "0.1", "--warmup", "2", "--workers",
           str(args.workers), "--precision", "fp32", "--seed", "0", "--logs", str(work / "runs"), "--name", name,
           "--log-every-n-steps", str(10**6), "--save-frequency", "1", "--report-to", ""]
    if teacher is not None:
        cmd += ["--distill-model", args.teacher, "--distill-pretrained", str(teacher)]
    return cmd


def timed(cmd: list[str], env: dict[str, str], run_dir: Path) -> float:
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)  # open_clip_train refuses an existing --name; ours would resume
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip())[-600:]
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}): {tail}")
    return seconds


def zeroshot_ours(spec: str, cls: Path) -> float:
    from clipdistill.evaluation import open_imagefolder, zeroshot_eval
    from clipdistill.zoo import load_model

    t0 = time.perf_counter()
    zeroshot_eval(load_model(spec), open_imagefolder(cls), progress=False)
    return time.perf_counter() - t0


def zeroshot_theirs(arch: str, ckpt: Path, cls: Path) -> float:
    import open_clip
    import torch
    from clip_benchmark.metrics import zeroshot_classification
    from clip_benchmark.models import load_clip
    from torchvision.datasets import ImageFolder

    from clipdistill.zoo.openclip_backend import CONFIG_DIR
    from parity_clip_benchmark import _their_accuracy_numpy2

    zeroshot_classification.accuracy = _their_accuracy_numpy2  # numpy >= 2.4 fix only, see parity script
    open_clip.add_model_config(CONFIG_DIR)
    t0 = time.perf_counter()
    model, transform, tokenizer = load_clip("open_clip", arch, str(ckpt), cache_dir=None, device="cpu")
    model.eval()
    ds = ImageFolder(str(cls), transform=transform)
    templates = (cls / "templates.txt").read_text().split("\n")[:-1]
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=False)
    zeroshot_classification.evaluate(model, loader, tokenizer, ds.classes, templates, device="cpu", amp=False)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", default="cd-student-s-64")
    ap.add_argument("--teacher", default="cd-teacher-64", help="same image size and tokenizer as the student")
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-class", type=int, default=100, help="zero-shot images per class (10 classes)")
    ap.add_argument("--only", nargs="*", choices=["plain", "distill", "zeroshot"], default=None)
    ap.add_argument("--peer-path", default=os.environ.get("CLIPDISTILL_PEER_PATH"),
                    help="folder with pandas + clip_benchmark installed (--target), when not in this venv")
    ap.add_argument("--work", default="/tmp/clipdistill-peer")
    ap.add_argument("--quick", action="store_true", help="256 samples, batch 32, 1 round, 20 images per class")
    ap.add_argument("--out", default=str(HERE / "out" / "peer.json"))
    args = ap.parse_args()
    if args.quick:
        args.samples, args.batch, args.rounds, args.per_class = 256, 32, 1, 20
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = peer_env(args.peer_path, args.threads)
    only = set(args.only or ["plain", "distill", "zeroshot"])
    report: dict = {"student": args.student, "teacher": args.teacher, "samples": args.samples, "batch": args.batch,
                    "epochs": args.epochs, "workers": args.workers, "threads": args.threads, "rounds": args.rounds,
                    "skipped": {}, "seconds": {}, "checks": []}
    train_skip = importable(["pandas", "open_clip_train.main"], env)
    cb_skip = importable(["clip_benchmark.metrics.zeroshot_classification", "clip_benchmark.models"], env)
    variants: dict = {}
    if only & {"plain", "distill"}:
        if train_skip:
            report["skipped"]["open_clip_train"] = f"{train_skip}; {INSTALL_HINT}"
        else:
            pairs = make_pairs(work / "data", args.samples, 64)
            teacher = export_teacher(args.teacher, work / "teacher") if "distill" in only else None
            for kind in ("plain", "distill"):
                if kind not in only:
                    continue
                t = teacher if kind == "distill" else None
                for side, build in (("ours", our_cmd), ("peer", peer_cmd)):
                    name = f"{side}_{kind}"
                    cmd = build(args, work, pairs, name, t)
                    variants[name] = (lambda c=cmd, n=name: timed(c, env, work / "runs" / n))
    if "zeroshot" in only:
        if cb_skip:
            report["skipped"]["clip_benchmark"] = f"{cb_skip}; {INSTALL_HINT}"
        else:
            if args.peer_path:
                sys.path.insert(0, args.peer_path)
            sys.path.insert(0, str(HERE))
            from clipdistill.zoo import load_model
            from parity_clip_benchmark import make_data

            cls, _ = make_data(work / "zs", args.per_class, 0, True)
            torch.manual_seed(0)
            ckpt = work / "zs_random_init.pt"
            torch.save(load_model(f"open_clip:{args.student}").inner.state_dict(), ckpt)
            variants["ours_zeroshot"] = lambda: zeroshot_ours(f"open_clip:{args.student}@{ckpt}", cls)
            variants["peer_zeroshot"] = lambda: zeroshot_theirs(args.student, ckpt, cls)
    for why in report["skipped"].values():
        print(f"SKIP: {why}")
    times: dict[str, list[float]] = {k: [] for k in variants}
    for name in ("ours_zeroshot", "peer_zeroshot"):
        # in-process: a first call pays for kernel and page-cache warm-up that whichever side ran first would carry
        if name in variants:
            variants[name]()
    for r in range(args.rounds):
        # kind by kind; ours first in even rounds, theirs first in odd ones, so load that drifts over a round
        # does not always favour the side that runs second
        names = list(variants)
        pairs = [names[i:i + 2] for i in range(0, len(names), 2)]
        for name in [n for pair in pairs for n in (pair if r % 2 == 0 else pair[::-1])]:
            times[name].append(variants[name]())
            print(f"round {r}: {name:<16} {times[name][-1]:7.1f} s", flush=True)
    report["seconds"] = times
    for kind in ("plain", "distill", "zeroshot"):
        if f"ours_{kind}" in times and times[f"ours_{kind}"]:
            ours, theirs = statistics.median(times[f"ours_{kind}"]), statistics.median(times[f"peer_{kind}"])
            pairwise = [a / b for a, b in zip(times[f"ours_{kind}"], times[f"peer_{kind}"], strict=True)]
            report["checks"].append({"name": f"{kind}: ours / peer wall time (median of rounds)",
                                     "value": ours / theirs, "target": "<= 1.0", "ok": ours / theirs <= 1.0,
                                     "pairwise": pairwise})
            print(f"{kind:<9} ours {ours:7.1f} s  peer {theirs:7.1f} s  ratio {ours / theirs:.3f} "
                  f"(per round {', '.join(f'{p:.3f}' for p in pairwise)})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
