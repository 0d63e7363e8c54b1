"""`embed` throughput against a bare forward loop of the same teacher, measured in one run.

    embed samples/s (whole stage: read + decode PNGs + teacher transform + tokenise in a loader worker,
    teacher forward, normalise, fp16 shards, manifest) / bare loop samples/s (the same teacher's image +
    text forward on tensors decoded beforehand, same batch size, same torch threads)      target >= 0.9

The data is the embedded world (`clipdistill world --size small`, ~3000 pairs, 64 px PNGs) read as CSV.
The stage time includes its fixed costs (teacher load + weights hash, source fingerprint), so the ratio is
a conservative one.

    .venv/bin/python benchmarks/bench_embed.py [--quick] [--out benchmarks/out/embed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import clipdistill  # noqa: F401
from clipdistill.data import open_source
from clipdistill.features.embed import EmbedOptions, embed_features
from clipdistill.world import build_world
from clipdistill.zoo import load_model


def bare_rate(spec: str, source: str, batch: int) -> tuple[float, int]:
    """Samples/s of teacher image + text forward on tensors decoded and transformed beforehand."""
    teacher = load_model(spec)
    samples = list(open_source(source))
    images = torch.stack([teacher.eval_transform(s.image) for s in samples])
    ids = teacher.tokenizer([s.text for s in samples])
    with torch.inference_mode():
        teacher.encode_image(images[:batch]), teacher.encode_text(ids[:batch])  # warm-up
        t = time.perf_counter()
        for lo in range(0, len(samples), batch):
            img = F.normalize(teacher.encode_image(images[lo:lo + batch]).float(), dim=-1)
            txt = F.normalize(teacher.encode_text(ids[lo:lo + batch]).float(), dim=-1)
            img.half(), txt.half()
        return len(samples) / (time.perf_counter() - t), len(samples)


def embed_rate(spec: str, source: str, out: Path, batch: int, workers: int) -> tuple[float, int]:
    opts = EmbedOptions(teacher=spec, data=source, batch_size=batch, num_workers=workers, device="cpu")
    t = time.perf_counter()
    embed_features(opts, out)
    seconds = time.perf_counter() - t
    n = json.loads((out / "manifest.json").read_text())["counts"]["samples"]
    return n / seconds, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="open_clip:cd-teacher-64", help="the presets' teacher")
    ap.add_argument("--world-size", default="small", choices=["tiny", "small"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1, help="embed loader workers (decode beside the forward)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both loops")
    ap.add_argument("--quick", action="store_true", help="the tiny world (~300 pairs)")
    ap.add_argument("--out", default="benchmarks/out/embed.json")
    args = ap.parse_args()
    if args.quick:
        args.world_size = "tiny"
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        build_world(Path(tmp) / "world", args.world_size, seed=0)
        source = str(Path(tmp) / "world" / "pairs.csv")
        list(open_source(source))  # warm the page cache for both loops
        load0 = os.getloadavg()[0]
        # bare loop before and after the stage, the faster one counts: neighbours' load cannot flatter the ratio
        bare1, n_bare = bare_rate(args.teacher, source, args.batch)
        embed, n_embed = embed_rate(args.teacher, source, Path(tmp) / "store", args.batch, args.workers)
        bare2, _ = bare_rate(args.teacher, source, args.batch)
    bare = max(bare1, bare2)
    ratio = embed / bare
    res = {"teacher": args.teacher, "world": args.world_size, "batch": args.batch, "workers": args.workers,
           "threads": args.threads, "samples": {"bare": n_bare, "embed": n_embed},
           "bare_samples_per_s": [bare1, bare2], "embed_samples_per_s": embed,
           "loadavg_1min_before": load0, "loadavg_1min_after": os.getloadavg()[0],
           "checks": [{"name": "embed samples/s / bare forward samples/s", "value": ratio, "target": ">= 0.9",
                       "ok": ratio >= 0.9}]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
