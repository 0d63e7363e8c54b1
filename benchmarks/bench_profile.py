"""Where a distillation step spends its CPU time: torch.profiler over optimizer steps of `DistillTask`.

Two steps, cached teacher (features come with the batch) and online teacher (a no-grad teacher forward in
the step), each with CLIP-KD's loss recipe and the optimizer the training loop builds
(`train.optim.build_optimizer`). `--optimizer loop` swaps in torch's per-tensor AdamW (the loop's optimizer
before it moved to the fused kernel), for a before/after. Prints the top ops by self CPU time and writes them
as JSON.

    .venv/bin/python benchmarks/bench_profile.py [--optimizer built|loop] [--quick] [--out benchmarks/out/profile.json]
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import clipdistill  # noqa: F401
from benchargs import add_models, parse, parser, write_result
from clipdistill.distill.batch import DistillBatch, TeacherMode, View
from clipdistill.distill.task import DistillTask
from clipdistill.distill.teacher import FrozenTeachers
from clipdistill.features import CachedFeatures
from clipdistill.losses import build_loss
from clipdistill.train.config import TrainConfig
from clipdistill.train.optim import build_optimizer
from clipdistill.zoo import load_model

KD = {"clip": {}, "crd": {}, "fd": {"weight": 2000}, "icl": {}}


def tops(prof, n: int) -> list[dict]:
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [{"op": e.key, "self_cpu_share": round(e.self_cpu_time_total / total, 4), "calls": e.count}
            for e in events[:n]]


def main() -> None:
    ap = parser(__doc__, "benchmarks/out/profile.json", quick="batch 32, 2 steps")
    add_models(ap)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--optimizer", choices=["built", "loop"], default="built")
    ap.add_argument("--top", type=int, default=12)
    args = parse(ap, batch=32, steps=2)
    teachers = FrozenTeachers([args.teacher])
    t = teachers.models[0]
    b = args.batch
    result: dict = {"optimizer": args.optimizer, "batch": b, "threads": args.threads, "student": args.student}
    for mode in ("cached", "online"):
        student = load_model(args.student).train()
        loss = build_loss(KD, student.embed_dim, t.embed_dim)
        task = DistillTask(student, loss, teachers if mode == "online" else None)
        modules = task.trainable()
        opt = (build_optimizer(modules, TrainConfig()) if args.optimizer == "built" else
               torch.optim.AdamW([p for m in modules.values() for p in m.parameters()], foreach=False))
        keys, index = [str(i) for i in range(b)], torch.arange(b)
        view = View(torch.randn(b, 3, student.image_size, student.image_size),
                    student.tokenizer(["a photo of a red square"] * b))
        if mode == "online":
            t_view = View(torch.randn(b, 3, t.image_size, t.image_size), t.tokenizer(["a photo of a red square"] * b))
            batch = DistillBatch(keys, index, view, TeacherMode.ONLINE, [t_view])
        else:
            cached = CachedFeatures(F.normalize(torch.randn(b, t.embed_dim), dim=-1),
                                    F.normalize(torch.randn(b, t.embed_dim), dim=-1), torch.tensor(100.0))
            batch = DistillBatch(keys, index, view, TeacherMode.CACHED, cached=cached)

        def step(task=task, batch=batch, opt=opt):
            out = task.training_step(batch)
            out["loss"].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        step()  # warm-up (allocations, lazy optimizer state)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        seconds = (time.perf_counter() - t0) / args.steps
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                step()
        result[mode] = {"step_s": round(seconds, 4), "top": tops(prof, args.top)}
        print(f"{mode} teacher, optimizer={args.optimizer}: {seconds * 1000:.1f} ms/step (batch {b})")
        for row in result[mode]["top"]:
            print(f"  {row['self_cpu_share'] * 100:5.1f}%  {row['op']}  x{row['calls']}")
    write_result(args.out, result, echo=False)


if __name__ == "__main__":
    main()
