"""Parity with CLIP_benchmark: same open_clip checkpoint, same ImageFolder / captions, both toolkits.

CLIP_benchmark is not a dependency (its pinned requirements pull a CUDA torch), so install it without
dependencies into a throwaway folder and point --clip-benchmark at it:

    .venv/bin/python -m pip download --no-deps clip_benchmark==1.6.2 -d /tmp/cb
    .venv/bin/python -m pip install --no-deps --target /tmp/cb/target /tmp/cb/clip_benchmark-*.whl
    .venv/bin/python benchmarks/parity_clip_benchmark.py --clip-benchmark /tmp/cb/target

Their side runs through CLIP_benchmark's own loader (`clip_benchmark.models.load_clip`, i.e.
open_clip.create_model_and_transforms with the checkpoint path) and its metric functions
(`zeroshot_classification.evaluate`, `zeroshot_retrieval.evaluate`) on a torchvision ImageFolder /
caption dataset; our side is `clipdistill.evaluation` on `open_clip:ARCH@CHECKPOINT`.
Writes benchmarks/out/parity.json and exits non-zero when any metric differs by more than --tol points.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

import clipdistill  # noqa: F401  (torchvision shim first)
from clipdistill.evaluation import open_imagefolder, open_retrieval, retrieval_eval, zeroshot_eval
from clipdistill.zoo import load_model

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 30),
           "purple": (140, 40, 170), "orange": (240, 140, 20), "white": (245, 245, 245), "black": (15, 15, 15),
           "pink": (240, 120, 180), "brown": (120, 70, 30)}
SHAPES = ("square", "circle", "triangle")
TEMPLATES = ["a photo of a {c} shape.", "a {c} object.", "something {c} on a grey background."]


def draw(colour: tuple[int, int, int], shape: str, rng: random.Random, size: int = 48) -> Image.Image:
    img = Image.new("RGB", (size, size), tuple(rng.randint(90, 160) for _ in range(3)))
    d = ImageDraw.Draw(img)
    x0, y0 = rng.randint(0, size // 3), rng.randint(0, size // 3)
    x1, y1 = x0 + rng.randint(size // 3, size // 2), y0 + rng.randint(size // 3, size // 2)
    if shape == "square":
        d.rectangle((x0, y0, x1, y1), fill=colour)
    elif shape == "circle":
        d.ellipse((x0, y0, x1, y1), fill=colour)
    else:
        d.polygon([(x0, y1), (x1, y1), ((x0 + x1) // 2, y0)], fill=colour)
    return img


def make_data(root: Path, per_class: int, n_retrieval: int, unique_captions: bool,
              seed: int = 0) -> tuple[Path, Path]:
    rng = random.Random(seed)
    cls = root / "imagefolder"
    for name, rgb in COLOURS.items():
        (cls / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw(rgb, rng.choice(SHAPES), rng).save(cls / name / f"{i:04d}.png")
    (cls / "templates.txt").write_text("\n".join(TEMPLATES) + "\n")
    ret = root / "retrieval"
    ret.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_retrieval):
        name, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        draw(COLOURS[name], shape, rng).save(ret / f"{i:04d}.png")
        caps = [f"a {name} {shape}", f"a {shape} that is {name}", f"{name} {shape} on grey"][: rng.randint(1, 3)]
        if unique_captions:  # exact duplicate captions tie, and torch.topk's order among ties is unspecified
            caps = [f"{c}, picture {i}" for c in caps]
        rows.append({"image": f"{i:04d}.png", "captions": caps})
    (ret / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return cls, ret / "captions.jsonl"


def _captions_collate(batch: list) -> tuple[torch.Tensor, tuple]:
    """CLIP_benchmark's `image_captions_collate_fn` (its module imports `requests`, which we lack)."""
    images, texts = zip(*batch, strict=True)
    return torch.stack(images), texts


def _their_accuracy_numpy2(output: torch.Tensor, target: torch.Tensor, topk: tuple = (1,)) -> list[float]:
    """CLIP_benchmark 1.6.2's `accuracy`, line for line, except `.item()` where it calls float() on a
    1-element numpy array (an error since numpy 2.4)."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    n = len(target)
    return [correct[:k].reshape(-1).float().sum(0).item() / n for k in topk]


def theirs(cb_path: str, arch: str, ckpt: Path, cls: Path, captions: Path, ks: list[int]) -> dict[str, float]:
    sys.path.insert(0, cb_path)
    import open_clip
    from clip_benchmark.metrics import zeroshot_classification, zeroshot_retrieval
    from clip_benchmark.models import load_clip
    from torchvision.datasets import ImageFolder

    from clipdistill.zoo.openclip_backend import CONFIG_DIR

    zeroshot_classification.accuracy = _their_accuracy_numpy2
    open_clip.add_model_config(CONFIG_DIR)  # our architectures, as any user with a custom config would
    model, transform, tokenizer = load_clip("open_clip", arch, str(ckpt), cache_dir=None, device="cpu")
    model.eval()
    ds = ImageFolder(str(cls), transform=transform)
    ds.templates = (cls / "templates.txt").read_text().split("\n")[:-1]
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=False)
    zs = zeroshot_classification.evaluate(model, loader, tokenizer, ds.classes, ds.templates, device="cpu", amp=False)

    rset = open_retrieval(captions)  # only for the file list; images are decoded by their pipeline below
    pairs = [(transform(Image.open(p).convert("RGB")), c) for p, c in zip(rset.images, rset.captions, strict=True)]
    rloader = torch.utils.data.DataLoader(pairs, batch_size=64, shuffle=False, collate_fn=_captions_collate)
    ret = zeroshot_retrieval.evaluate(model, rloader, tokenizer, device="cpu", amp=False, recall_k_list=ks)
    return {"acc1": zs["acc1"], "acc5": zs["acc5"], "mean_per_class_recall": zs["mean_per_class_recall"], **ret}


def ours(spec: str, cls: Path, captions: Path, ks: list[int]) -> dict[str, float]:
    model = load_model(spec)
    zs = zeroshot_eval(model, open_imagefolder(cls), progress=False)["metrics"]
    ret = retrieval_eval(model, open_retrieval(captions), ks=tuple(ks), progress=False)["metrics"]
    return {**zs, **ret}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip-benchmark", required=True, help="folder holding the clip_benchmark package")
    ap.add_argument("--arch", default="cd-student-s-64")
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--retrieval-images", type=int, default=300)
    ap.add_argument("--duplicate-captions", action="store_true",
                    help="reuse caption strings across images (exact ties: see docs/eval.md)")
    ap.add_argument("--work", default="/tmp/clipdistill-parity")
    ap.add_argument("--tol", type=float, default=0.1, help="allowed difference, in points (percent)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "parity.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work)
    cls, captions = make_data(work, args.per_class, args.retrieval_images, not args.duplicate_captions)
    torch.manual_seed(0)
    model = load_model(f"open_clip:{args.arch}")
    ckpt = work / "random_init.pt"
    torch.save(model.inner.state_dict(), ckpt)  # a bare state dict: what open_clip's loader also reads
    ks = [1, 5, 10]
    t0 = time.perf_counter()
    a = ours(f"open_clip:{args.arch}@{ckpt}", cls, captions, ks)
    b = theirs(args.clip_benchmark, args.arch, ckpt, cls, captions, ks)
    diffs = {k: 100 * abs(a[k] - b[k]) for k in b}
    rows = {k: {"clipdistill": a[k], "clip_benchmark": b[k], "diff_points": diffs[k]} for k in b}
    report = {"arch": args.arch, "duplicate_captions": args.duplicate_captions, "images": len(open_imagefolder(cls)),
              "retrieval_images": args.retrieval_images,
              "tol_points": args.tol, "metrics": rows, "seconds": time.perf_counter() - t0,
              "pass": max(diffs.values()) <= args.tol}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    for k, r in rows.items():
        print(f"{k:28s} ours {100 * r['clipdistill']:7.2f}  CLIP_benchmark {100 * r['clip_benchmark']:7.2f}  "
              f"diff {r['diff_points']:.3f} pt")
    print("PASS" if report["pass"] else "FAIL", f"(tolerance {args.tol} pt) -> {args.out}")
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
