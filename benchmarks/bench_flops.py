"""Achieved FLOP/s of a student training step as a share of this machine's measured matmul peak.

The step (forward, symmetric InfoNCE, backward, the training loop's AdamW) is counted with torch's
FlopCounterMode and timed separately; the peak is the best of several large fp32 matmuls with the same thread
count.

    .venv/bin/python benchmarks/bench_flops.py [--arch cd-student-s-32] [--batch 128] [--threads 2]
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import clipdistill  # noqa: F401
from benchargs import parse, parser, write_result
from clipdistill.train.config import TrainConfig
from clipdistill.train.optim import build_optimizer
from clipdistill.zoo import load_model


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def contrastive_step(model, opt, batch: int, generator: torch.Generator | None = None):
    """A training step on fixed random inputs: forward, symmetric InfoNCE, backward, `opt`; returns the loss."""
    images = torch.randn(batch, 3, model.image_size, model.image_size, generator=generator)
    ids = torch.randint(1, 1000, (batch, model.context_length), generator=generator)
    labels = torch.arange(batch)

    def step():
        out = model(images, ids)
        img, txt = F.normalize(out["image_features"], dim=-1), F.normalize(out["text_features"], dim=-1)
        logits = out["logit_scale"] * img @ txt.T
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def student_step_flops(arch: str, batch: int, steps: int, optimizer: str = "built") -> dict:
    """`optimizer`: "built" = the training loop's (`build_optimizer`: fused AdamW), "loop" = torch's
    per-tensor AdamW (what the loop used before), for a before/after."""
    model = load_model(f"open_clip:{arch}").train()
    opt = (build_optimizer({"student": model}, TrainConfig(lr=1e-4)) if optimizer == "built"
           else torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=False))
    step = contrastive_step(model, opt, batch)

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    step()  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - t) / steps
    return {"arch": arch, "batch": batch, "step_flops": flops, "step_seconds": seconds,
            "achieved_flops": flops / seconds}


def main() -> None:
    ap = parser(__doc__, "benchmarks/out/flops.json", quick="batch 32, 2 timed steps")
    ap.add_argument("--arch", default="cd-student-s-32")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--optimizer", choices=["built", "loop"], default="built")
    args = parse(ap, batch=32, steps=2)
    res = student_step_flops(args.arch, args.batch, args.steps, args.optimizer)
    res["optimizer"] = args.optimizer
    res["matmul_peak_flops"] = matmul_peak()
    res["share_of_peak"] = res["achieved_flops"] / res["matmul_peak_flops"]
    res["threads"] = args.threads
    res["checks"] = [{"name": "student step FLOP/s / matmul peak", "value": res["share_of_peak"],
                      "target": "report", "ok": True}]
    write_result(args.out, res)


if __name__ == "__main__":
    main()
