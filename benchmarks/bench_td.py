"""CLIP-TD step cost with the teacher's image half read from a feature store vs run online, side by side.

    baseline step (task loss only)  |  CLIP-TD step, online teacher  |  CLIP-TD step, cached image features
    |  CLIP-TD step, online teacher, candidate texts re-encoded every step (no memo)

Same VL student (the protocol's default: 64 px, width 128, 4 layers), same VQA batch of the tiny world, same
teacher weights; variants interleave round by round and keep each one's median. Steady state: the teacher's
candidate-text embeddings are memoised after the warm-up step (as from a run's second epoch on). No target in
the issues: the figures say what `task.teacher_features` saves per step (the text tower still runs in both)
and what a CLIP-TD step costs over the plain fine-tune step.

    .venv/bin/python benchmarks/bench_td.py [--quick] [--teacher-arch cd-teacher-rn-64] [--out ...]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

import clipdistill  # noqa: F401
from benchargs import parse, parser, write_result
from clipdistill.data.tasks import open_task
from clipdistill.features.embed import EmbedOptions, embed_features
from clipdistill.td.cached import CachedImageTeacher
from clipdistill.td.heads import build_answer_vocab
from clipdistill.td.student import VLStudent, VLStudentConfig
from clipdistill.td.task import CandidateMemo, Collator, TDConfig, TDTask
from clipdistill.world.build import build_world
from clipdistill.zoo import load_model
from interleave import interleaved_medians, task_step


def main() -> None:
    ap = parser(__doc__, "benchmarks/out/td.json", quick="batch 8, 3 rounds")
    ap.add_argument("--teacher-arch", default="cd-teacher-rn-64")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=8)
    args = parse(ap, batch=8, rounds=3)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        world = tmp / "world"
        build_world(world, "tiny", seed=0)
        images = world / "tasks" / "vqa" / "images"
        weights = tmp / "teacher.safetensors"  # fixed weights, so embed and the run see the same teacher
        inner = load_model(f"open_clip:{args.teacher_arch}").inner
        save_file({k: v.contiguous() for k, v in inner.state_dict().items()}, str(weights))
        spec = f"open_clip:{args.teacher_arch}@{weights}"
        embed_features(EmbedOptions(teacher=spec, data=f"images:{images}", tokens=True, device="cpu"), tmp / "feats")
        teacher = load_model(spec)
        exs = open_task("vqa", world / "tasks" / "vqa", "train").examples[: args.batch]
        vocab = build_answer_vocab([e.answers for e in exs], 50)
        student_cfg = VLStudentConfig(image_size=64, patch_size=8, width=128, layers=4, heads=4, context_length=32)
        tasks = {m: TDTask("vqa", VLStudent(student_cfg), TDConfig(method=m), teacher, vocab)
                 for m in ("baseline", "clip_td")}
        no_memo = TDTask("vqa", tasks["clip_td"].student, TDConfig(method="clip_td"), teacher, vocab)
        no_memo._candidates = CandidateMemo(teacher, capacity=0)  # every candidate re-encoded, as before the memo
        cached = CachedImageTeacher(tmp / "feats", teacher, images)
        batches = {"baseline": Collator("vqa", tasks["baseline"].student, None, vocab)(exs),
                   "online": Collator("vqa", tasks["clip_td"].student, teacher, vocab)(exs),
                   "cached": Collator("vqa", tasks["clip_td"].student, teacher, vocab, cached=cached)(exs)}
        params = [p for t in tasks.values() for m in t.trainable().values() for p in m.parameters()]
        opt = torch.optim.AdamW(params, lr=1e-5)
        variants = {"baseline": lambda: task_step(tasks["baseline"], opt, batches["baseline"]),
                    "online": lambda: task_step(tasks["clip_td"], opt, batches["online"]),
                    "cached": lambda: task_step(tasks["clip_td"], opt, batches["cached"]),
                    "online_no_memo": lambda: task_step(no_memo, opt, batches["online"])}
        med = interleaved_medians(variants, args.rounds)
    res = {"teacher": args.teacher_arch, "batch": args.batch, "threads": args.threads, "median_seconds": med,
           # figures without a target: "ok" is None (run_all prints "-")
           "checks": [{"name": "CLIP-TD step, cached image half / online", "value": med["cached"] / med["online"],
                       "target": "none", "ok": None},
                      {"name": "CLIP-TD step, cached / baseline step", "value": med["cached"] / med["baseline"],
                       "target": "none", "ok": None},
                      {"name": "CLIP-TD step, online with / without candidate memo",
                       "value": med["online"] / med["online_no_memo"], "target": "none", "ok": None}]}
    write_result(args.out, res)


if __name__ == "__main__":
    main()
