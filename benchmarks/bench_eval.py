"""Zero-shot evaluation throughput: is the evaluation around the image forward passes cheap?

Three timings over the same N images (an ImageFolder of PNGs written to --work), one run, one machine:
  forward_only   encode_image over pre-decoded, pre-transformed batches held in memory
  bare_pipeline  the same DataLoader zero-shot uses (decode + transform in --workers) + encode_image
  zeroshot       clipdistill's `zeroshot_eval` (text classifier, loader, forward, metrics, record)
The target is zeroshot <= 1.2 x forward_only. Writes benchmarks/out/eval.json.

    .venv/bin/python benchmarks/bench_eval.py --images 10000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

import torch
from PIL import Image

import clipdistill  # noqa: F401  (torchvision shim first)
from clipdistill.evaluation import open_imagefolder, zeroshot_eval
from clipdistill.evaluation.features import image_batches
from clipdistill.zoo import load_model


def write_images(root: Path, n: int, classes: int, size: int) -> Path:
    if len(list(root.rglob("*.png"))) == n:
        return root
    rng = random.Random(0)
    for i in range(n):
        d = root / f"class_{i % classes:02d}"
        d.mkdir(parents=True, exist_ok=True)
        c = i % classes
        Image.new("RGB", (size, size), (25 * c % 255, rng.randint(0, 255), 255 - 20 * c % 255)).save(d / f"{i:05d}.png")
    (root / "templates.txt").write_text("a photo of a {c}.\na picture of a {c}.\n")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--arch", default="cd-student-s-64")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=1, help="decoding workers (the model runs in the main process)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the forward passes")
    ap.add_argument("--work", default="/tmp/clipdistill-bench-eval")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "eval.json"))
    ap.add_argument("--quick", action="store_true", help="2,000 images (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.images = 2000
    torch.set_num_threads(args.threads)
    ds = open_imagefolder(write_images(Path(args.work), args.images, args.classes, 64))
    torch.manual_seed(0)
    model = load_model(f"open_clip:{args.arch}")

    def loader():
        return image_batches(ds, model.eval_transform, len(ds), batch_size=args.batch_size, num_workers=args.workers)

    batches = [x for x, _, _ in loader()]  # decoded once, up front, for forward_only
    with torch.no_grad():
        model.encode_image(batches[0])  # warm-up
        t0 = time.perf_counter()
        for x in batches:
            model.encode_image(x)
        forward_only = time.perf_counter() - t0
        t0 = time.perf_counter()
        for x, _, _ in loader():
            model.encode_image(x)
        bare_pipeline = time.perf_counter() - t0
    t0 = time.perf_counter()
    rec = zeroshot_eval(model, ds, batch_size=args.batch_size, num_workers=args.workers, progress=False)
    zeroshot = time.perf_counter() - t0

    result = {
        "images": len(ds), "arch": args.arch, "batch_size": args.batch_size, "workers": args.workers,
        "torch_threads": args.threads, "seconds": {"forward_only": forward_only, "bare_pipeline": bare_pipeline,
                                                   "zeroshot": zeroshot},
        "ratio_zeroshot_vs_forward_only": zeroshot / forward_only,
        "ratio_zeroshot_vs_bare_pipeline": zeroshot / bare_pipeline, "target_ratio": 1.2,
        "zeroshot_acc1": rec["metrics"]["acc1"],
        "checks": [{"name": "zero-shot time / bare image forward time", "value": zeroshot / forward_only,
                    "target": "<= 1.2", "ok": zeroshot / forward_only <= 1.2}],
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "processor": platform.processor()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
