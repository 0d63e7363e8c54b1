"""Loader throughput against the tiny student's training throughput, measured in one run.

    loader samples/s (decode + student and teacher transforms + tokenise, 2 workers) / student pairs/s
    (target >= 3: data never starves training)

The data is written by the script itself: N 64 px PNG scenes with captions, as a CSV source.

    .venv/bin/python benchmarks/bench_loader.py [--quick] [--out benchmarks/out/loader.json]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

import clipdistill  # noqa: F401
from clipdistill.data import make_loader, open_source
from clipdistill.zoo import load_model

COLORS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40)}


def write_pairs(folder: Path, n: int) -> Path:
    rng = random.Random(0)
    rows = ["key,image,caption"]
    for i in range(n):
        name, col = rng.choice(list(COLORS.items()))
        im = Image.new("RGB", (64, 64), tuple(rng.randrange(60, 200) for _ in range(3)))
        x, y = rng.randrange(0, 32), rng.randrange(0, 32)
        ImageDraw.Draw(im).ellipse([x, y, x + 30, y + 30], fill=col)
        im.save(folder / f"{i}.png")
        rows.append(f"k{i},{i}.png,a {name} circle at {x} {y}")
    (folder / "pairs.csv").write_text("\n".join(rows) + "\n")
    return folder / "pairs.csv"


def loader_rate(csv: Path, student, teacher, batch: int, workers: int) -> float:
    src = open_source(str(csv))
    views = [(student.train_transform, student.tokenizer), (teacher.eval_transform, teacher.tokenizer)]
    n = 0
    t = time.perf_counter()
    for b in make_loader(src, views, batch, shuffle=True, seed=0, num_workers=workers):
        n += len(b)
    return n / (time.perf_counter() - t)


def train_rate(student, batch: int, steps: int) -> float:
    student.train()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
    images = torch.randn(batch, 3, student.image_size, student.image_size)
    ids = torch.randint(1, 1000, (batch, student.context_length))
    labels = torch.arange(batch)

    def step():
        out = student(images, ids)
        img, txt = F.normalize(out["image_features"], dim=-1), F.normalize(out["text_features"], dim=-1)
        logits = out["logit_scale"] * img @ txt.T
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", default="open_clip:cd-student-s-32", help="the presets' student")
    ap.add_argument("--teacher", default="open_clip:cd-teacher-64")
    ap.add_argument("--samples", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="1024 samples")
    ap.add_argument("--out", default="benchmarks/out/loader.json")
    args = ap.parse_args()
    if args.quick:
        args.samples = 1024
    torch.set_num_threads(2)
    student, teacher = load_model(args.student), load_model(args.teacher)
    with tempfile.TemporaryDirectory() as tmp:
        csv = write_pairs(Path(tmp), args.samples)
        loader_rate(csv, student, teacher, args.batch, args.workers)  # warm the page cache
        data = loader_rate(csv, student, teacher, args.batch, args.workers)
    train = train_rate(student, args.batch, steps=max(3, args.samples // args.batch // 4))
    ratio = data / train
    res = {"student": args.student, "teacher": args.teacher, "workers": args.workers, "batch": args.batch,
           "loader_samples_per_s": data, "train_pairs_per_s": train,
           "checks": [{"name": "loader samples/s / student train pairs/s", "value": ratio, "target": ">= 3",
                       "ok": ratio >= 3}]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
