"""The CLIP-TD batch (td/batch.py): the Collator builds one typed `TDBatch` per step, with the kind's own payload
class, and `to()` moves every tensor in it."""

import dataclasses

import pytest
import torch
from td_helpers import TINY_STUDENT, open_examples

from clipdistill.td.batch import Labels, TDBatch, TeacherInputs, WordAlignment
from clipdistill.td.examples import vcr_items
from clipdistill.td.heads import build_answer_vocab
from clipdistill.td.student import VLStudent, VLStudentConfig
from clipdistill.td.task import Collator, TDConfig, TDTask
from clipdistill.td.tasks import task_kind
from clipdistill.td.tasks.vcr import Choices
from clipdistill.td.tasks.vqa import Answers


def _tensors(obj, path="batch"):
    """(path, tensor) of every tensor field, nested dataclasses included."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, torch.Tensor):
            yield f"{path}.{f.name}", v
        elif dataclasses.is_dataclass(v):
            yield from _tensors(v, f"{path}.{f.name}")


@pytest.mark.parametrize("kind", ["vqa", "snli_ve", "vcr"])
def test_collator_builds_a_typed_batch_with_the_kinds_payload(world, teacher, kind):
    exs = open_examples(world, kind)
    items = [it for ex in exs for it in vcr_items(ex)][:4] if kind == "vcr" else exs[:4]
    vocab = build_answer_vocab([ex.answers for ex in exs], 10) if kind == "vqa" else None
    policy = task_kind(kind).candidate_policy(exs, {}, vocab, TDConfig(vqa_distractors=3))
    batch = Collator(kind, VLStudent(VLStudentConfig(**TINY_STUDENT)), teacher, vocab, policy)(items)
    assert isinstance(batch, TDBatch) and len(batch) == 4 and batch.image.shape[0] == 4
    assert batch.keys == [getattr(it, "example", it).key for it in items]
    t = batch.teacher
    assert not t.cached and t.image.shape[0] == 4 and t.ids.shape[0] == 4 and t.labels.shape == (4,)
    assert t.alignment is None  # our student reads the teacher's own BPE positions
    if kind == "vqa":
        assert type(batch.task) is Answers and batch.task.targets.shape == (4, len(vocab))
        assert batch.task.answers == [ex.answers for ex in items] and batch.ids.shape[0] == 4
        assert t.cand_ids.shape[0] == 4 * 4 and t.labels.tolist() == [0] * 4  # the GT answer first, 3 distractors
        assert t.cand_valid.shape == (4, 4) and bool(t.cand_valid[:, 0].all())  # padding masked, never the GT
    elif kind == "snli_ve":
        assert type(batch.task) is Labels and batch.task.labels.tolist() == [ex.label for ex in items]
        assert t.cand_ids is None and t.cand_valid is None and torch.equal(t.labels, batch.task.labels)
    else:
        n = len(items[0].candidates)
        assert type(batch.task) is Choices and batch.task.n_choices == n
        assert batch.task.sub == [it.sub for it in items] and batch.ids.shape[0] == 4 * n
        assert t.cand_ids.shape[0] == 4 * n and torch.equal(t.labels, batch.task.labels)
        assert t.cand_valid is None  # every choice is real


def test_to_moves_every_tensor_and_keeps_the_rest(world, teacher):
    exs = open_examples(world, "vqa")[:3]
    vocab = build_answer_vocab([ex.answers for ex in exs], 5)
    batch = Collator("vqa", VLStudent(VLStudentConfig(**TINY_STUDENT)), teacher, vocab)(exs)
    aligned = dataclasses.replace(batch, teacher=dataclasses.replace(batch.teacher, alignment=WordAlignment(
        torch.zeros(3, 4, 5), torch.zeros(3, dtype=torch.bool), torch.ones(3, 4, dtype=torch.bool))))
    moved = aligned.to(torch.device("meta"))
    paths = dict(_tensors(moved))
    assert {"batch.image", "batch.ids", "batch.task.targets", "batch.teacher.ids", "batch.teacher.image",
            "batch.teacher.cand_ids", "batch.teacher.alignment.matrix"} <= paths.keys()
    assert all(v.device.type == "meta" for v in paths.values()), paths
    assert moved.keys == batch.keys and moved.task.answers == batch.task.answers
    assert all(v.device.type == "cpu" for _, v in _tensors(aligned))  # frozen: the original is untouched


def test_teacher_inputs_hold_exactly_one_image_source():
    ids, labels = torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, dtype=torch.long)
    pooled, patch, image = torch.zeros(2, 4), torch.zeros(2, 9, 4), torch.zeros(2, 3, 8, 8)
    assert TeacherInputs(ids, labels, image_pooled=pooled, patch=patch).cached
    assert not TeacherInputs(ids, labels, image=image).cached
    for bad in ({}, {"image": image, "image_pooled": pooled, "patch": patch}, {"image_pooled": pooled}):
        with pytest.raises(ValueError, match="either the teacher's image view or its cached"):
            TeacherInputs(ids, labels, **bad)


def test_a_distilling_task_refuses_a_batch_collated_without_its_teacher(world, teacher):
    exs = open_examples(world, "snli_ve")[:2]
    task = TDTask("snli_ve", VLStudent(VLStudentConfig(**TINY_STUDENT)), TDConfig(method="clip_td"), teacher)
    with pytest.raises(ValueError, match="needs batches with teacher inputs"):
        task.training_step(Collator("snli_ve", task.student, None)(exs))


def test_the_loop_counts_an_epoch_without_collating_it():
    from clipdistill.td.runner import _Batches
    from clipdistill.train.loop import epoch_length

    calls = []
    batches = _Batches(list(range(10)), lambda items: calls.append(items) or items, 4, order=list(range(9, -1, -1)))
    assert epoch_length(lambda epoch: batches)[0] == 3 and calls == []
    assert list(batches) == [[9, 8, 7, 6], [5, 4, 3, 2], [1, 0]]


def test_the_teacher_pass_is_one_frozen_value(world, teacher):
    from clipdistill.td.contracts import TeacherPass, TeacherSignals

    exs = open_examples(world, "snli_ve")[:3]
    task = TDTask("snli_ve", VLStudent(VLStudentConfig(**TINY_STUDENT)), TDConfig(method="clip_td"), teacher)
    judged = task._teacher_signals(Collator("snli_ve", task.student, teacher)(exs))
    assert type(judged) is TeacherPass and type(judged.signals) is TeacherSignals
    assert judged.probs.shape == (3, 3) and bool(((judged.probs >= 0) & (judged.probs <= 1)).all())  # 3 classes
    assert judged.t2i_confidence.shape == (3,) and judged.signals.image_pooled.shape[0] == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        judged.probs = judged.probs * 0
