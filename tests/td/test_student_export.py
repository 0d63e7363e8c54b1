import dataclasses

import torch
from td_helpers import open_examples
from torch.utils.flop_counter import FlopCounterMode

from clipdistill.td.contracts import StudentOutput
from clipdistill.td.examples import vcr_items
from clipdistill.td.heads import build_answer_vocab
from clipdistill.td.student import VLStudent, VLStudentConfig, build_student, init_from_clip
from clipdistill.td.task import Collator, TDConfig, TDTask

SMALL = VLStudentConfig(image_size=32, patch_size=8, width=32, layers=2, heads=2, context_length=16)


def _flops(modules, batch, kind):
    with FlopCounterMode(display=False) as fc:
        out = modules["student"](batch.image, batch.ids)
        modules["head"](out.cls)
    return fc.get_total_flops()


def test_exported_model_same_size_and_cost_with_and_without_clip_td(world, teacher):
    exs = open_examples(world, "vqa")
    vocab = build_answer_vocab([e.answers for e in exs], 10)
    tasks = {}
    for method in ("baseline", "clip_td"):
        torch.manual_seed(0)
        tasks[method] = TDTask("vqa", VLStudent(SMALL), TDConfig(method=method, pooled_weight=1.0), teacher, vocab)
    base, td = tasks["baseline"], tasks["clip_td"]
    assert "distill_heads" in td.trainable() and "distill_heads" not in base.trainable()
    count = {m: sum(p.numel() for mod in t.export_modules().values() for p in mod.parameters())
             for m, t in tasks.items()}
    assert count["baseline"] == count["clip_td"]
    assert sum(p.numel() for mod in td.trainable().values() for p in mod.parameters()) > count["clip_td"]
    batch = Collator("vqa", base.student, None, vocab)(exs[:4])
    assert _flops(base.export_modules(), batch, "vqa") == _flops(td.export_modules(), batch, "vqa") > 0
    assert td.export_modules().keys() == {"student", "head"}


def test_every_task_trains_one_step_with_each_rule(world, teacher):
    for kind in ("snli_ve", "vcr"):
        exs = open_examples(world, kind)
        items = [it for e in exs for it in vcr_items(e)] if kind == "vcr" else exs
        for method, rule in (("naive", "teacher_relevance"), ("clip_td", "student_attention")):
            task = TDTask(kind, VLStudent(SMALL),
                          TDConfig(method=method, selection=rule, weights={"per_modality": True}), teacher)
            terms = task.training_step(Collator(kind, task.student, teacher)(items[:4]))
            assert {"task", "distill_image", "distill_text", "distill", "loss", "weight_mean"} <= terms.keys()
            terms["loss"].backward()
            assert task.distill_heads.image.weight.grad is not None
            if method == "naive":  # naive = all tokens, uniform weights
                assert terms["weight_mean"].item() == 1.0


def test_student_seeded_from_clip_towers(teacher):
    student, info = build_student(VLStudentConfig(init="open_clip:cd-student-xs-32", context_length=16))
    assert student.width == 64 and len(student.blocks) == 2 and student.grid == 8
    assert {"conv1", "token_embedding", "blocks.0", "blocks.1"} <= set(info["inherited"])
    fresh = VLStudent(student.cfg)
    init_from_clip(fresh, teacher.inner)
    vis = teacher.inner.visual
    assert torch.equal(fresh.blocks[1].attn.in_proj_weight, vis.transformer.resblocks[1].attn.in_proj_weight)
    assert torch.equal(fresh.conv1.weight, vis.conv1.weight)
    out = fresh(torch.randn(2, 3, 32, 32), torch.randint(1, 100, (2, 16)), need_attention=True)
    assert out.cls_attention.shape == (2, 64 + 16)


def test_vcr_distils_the_forward_of_each_items_ground_truth_sequence(world):
    items = [it for e in open_examples(world, "vcr") for it in vcr_items(e)][:3]
    task = TDTask("vcr", VLStudent(SMALL), TDConfig(method="baseline"))
    batch = Collator("vcr", task.student)(items)
    n = batch.task.n_choices
    rows = [i * n + it.label for i, it in enumerate(items)]
    with torch.no_grad():
        for attention in (False, True):
            got = task.task_kind.distilled(task._forward(batch, need_attention=attention), batch)
            want = task.student(batch.image, batch.ids[rows], need_attention=attention)
            assert isinstance(got, StudentOutput) and (got.cls_attention is None) == (not attention)
            for f in dataclasses.fields(StudentOutput):
                a, b = getattr(got, f.name), getattr(want, f.name)
                assert (a is None and b is None) or torch.allclose(a.float(), b.float(), atol=1e-5), f.name
