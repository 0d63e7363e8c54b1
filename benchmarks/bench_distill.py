"""Distillation step cost, measured side by side in one run on the same student and batch.

    cached-teacher distill step / plain CLIP step          (target <= 1.05)
    online-teacher distill step / (teacher forward + plain CLIP step)   (target <= 1.05)

The distill steps run through `DistillTask` + `WeightedLoss` (clip + crd + fd + icl, CLIP-KD's recipe); the
references are a bare open_clip-style InfoNCE step and a bare no-grad teacher forward. Timings interleave
the variants round by round and keep each one's median, so drift on a shared machine hits all alike.

    .venv/bin/python benchmarks/bench_distill.py [--quick] [--out benchmarks/out/distill.json]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import clipdistill  # noqa: F401
from benchargs import add_models, parse, parser, write_result
from clipdistill.distill.batch import DistillBatch, TeacherMode, View
from clipdistill.distill.task import DistillTask
from clipdistill.distill.teacher import FrozenTeachers
from clipdistill.features import CachedFeatures
from clipdistill.losses import build_loss
from clipdistill.zoo import load_model
from interleave import interleaved_medians, task_step

KD = {"clip": {}, "crd": {}, "fd": {"weight": 2000}, "icl": {}}


def plain_step(student, opt, view: View):
    out = student(view.image, view.text)
    img, txt = F.normalize(out["image_features"], dim=-1), F.normalize(out["text_features"], dim=-1)
    logits = out["logit_scale"] * img @ txt.T
    labels = torch.arange(len(logits))
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main() -> None:
    ap = parser(__doc__, "benchmarks/out/distill.json", quick="batch 32, 3 rounds")
    add_models(ap)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=8)
    args = parse(ap, batch=32, rounds=3)
    student = load_model(args.student).train()
    teachers = FrozenTeachers([args.teacher])
    t = teachers.models[0]
    b = args.batch
    keys = [str(i) for i in range(b)]
    view = View(torch.randn(b, 3, student.image_size, student.image_size),
                torch.randint(1, 1000, (b, student.context_length)))
    t_view = View(torch.randn(b, 3, t.image_size, t.image_size), torch.randint(1, 1000, (b, t.context_length)))
    with torch.no_grad():
        cached = CachedFeatures(t.encode_image(t_view.image, normalize=True),
                                t.encode_text(t_view.text, normalize=True), torch.tensor(100.0))
    online_batch = DistillBatch(keys, torch.arange(b), view, TeacherMode.ONLINE, [t_view])
    cached_batch = DistillBatch(keys, torch.arange(b), view, TeacherMode.CACHED, cached=cached)
    online_loss = build_loss(KD, student.embed_dim, t.embed_dim)
    cached_loss = build_loss(KD, student.embed_dim, t.embed_dim)
    online = DistillTask(student, online_loss, teachers)
    cached_task = DistillTask(student, cached_loss, None)
    opt = torch.optim.AdamW(list(student.parameters()) + list(online_loss.parameters())
                            + list(cached_loss.parameters()), lr=1e-5)

    def teacher_forward():
        with torch.no_grad():
            teachers(online_batch.teachers)

    variants = {
        "plain": lambda: plain_step(student, opt, view),
        "teacher_forward": teacher_forward,
        "cached": lambda: task_step(cached_task, opt, cached_batch),
        "online": lambda: task_step(online, opt, online_batch),
    }
    med = interleaved_medians(variants, args.rounds)
    cached_ratio = med["cached"] / med["plain"]
    online_ratio = med["online"] / (med["teacher_forward"] + med["plain"])
    res = {
        "student": args.student, "teacher": args.teacher, "batch": b, "threads": args.threads,
        "median_seconds": med,
        "checks": [
            {"name": "cached distill step / plain CLIP step", "value": cached_ratio, "target": "<= 1.05",
             "ok": cached_ratio <= 1.05},
            {"name": "online distill step / (teacher fwd + plain step)", "value": online_ratio, "target": "<= 1.05",
             "ok": online_ratio <= 1.05},
        ],
    }
    write_result(args.out, res)


if __name__ == "__main__":
    main()
