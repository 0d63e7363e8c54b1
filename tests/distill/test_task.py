import pytest
import torch

from clipdistill.data import LoaderBatch, SkipCounter, View
from clipdistill.distill.batch import DistillBatch, TeacherMode
from clipdistill.distill.task import DistillTask
from clipdistill.distill.teacher import FrozenTeachers
from clipdistill.features import CachedFeatures
from clipdistill.losses import build_loss
from clipdistill.train import TrainConfig, fit
from clipdistill.zoo import load_model

CAPTIONS = ["a red circle", "a blue square", "two green triangles", "a small yellow star"]


@pytest.fixture(scope="module")
def teachers():
    torch.manual_seed(0)
    return FrozenTeachers(["open_clip:cd-student-xs-32", "open_clip:cd-student-xs-32"], fixed_logit_scale=50.0)


def batch_for(student, teachers, n=4, members=2) -> LoaderBatch:
    """A loader batch with the student's view and the first `members` teachers' views."""
    g = torch.Generator().manual_seed(0)
    views = [View(torch.randn(n, 3, 32, 32, generator=g), student.tokenizer(CAPTIONS[:n]))]
    views += [View(torch.randn(n, 3, 32, 32, generator=g), t.tokenizer(CAPTIONS[:n])) for t in teachers.models]
    return LoaderBatch([f"k{i}" for i in range(n)], CAPTIONS[:n], torch.arange(n), tuple(views[:1 + members]),
                       SkipCounter(), n)


def test_online_teacher_is_frozen_and_outside_trainables(teachers):
    student = load_model("open_clip:cd-student-xs-32")
    task = DistillTask(student, build_loss({"clip": {}, "logit_kd": {}}, 64, 64), teachers)
    out = task.training_step(DistillBatch.from_loader(batch_for(student, teachers), TeacherMode.ONLINE))
    assert {"loss", "clip", "logit_kd"} <= set(out)
    out["loss"].backward()
    assert all(p.grad is None for m in teachers.models for p in m.parameters())
    assert not any(m.training for m in teachers.models)
    names = {n for m in task.trainable().values() for n, _ in m.named_parameters()}
    assert names and all(n.startswith(("inner.", "terms.", "image_proj", "text_proj")) for n in names)


def test_ensemble_gives_each_member_and_the_mean(teachers):
    student = load_model("open_clip:cd-student-xs-32")
    b = DistillBatch.from_loader(batch_for(student, teachers), TeacherMode.ONLINE)
    t = teachers(b.teachers)
    assert len(t.members) == 2 and float(t.logit_scale) == 50.0
    img, _ = t.single
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(4))


def test_cached_features_skip_the_teacher_forward():
    student = load_model("open_clip:cd-student-xs-32")
    task = DistillTask(student, build_loss({"fd": {}}, 64, 32), teachers=None)
    cached = CachedFeatures(torch.nn.functional.normalize(torch.randn(2, 32), dim=-1),
                            torch.nn.functional.normalize(torch.randn(2, 32), dim=-1), torch.tensor(100.0))
    loaded = LoaderBatch(["a", "b"], CAPTIONS[:2], torch.arange(2),
                         (View(torch.randn(2, 3, 32, 32), student.tokenizer(CAPTIONS[:2])),), SkipCounter(), 2)
    b = DistillBatch.from_loader(loaded, TeacherMode.CACHED, cached=cached)
    assert task.training_step(b)["fd"] > 0


def test_distill_task_trains_through_fit_and_saves_loss_parameters(teachers, tmp_path):
    student = load_model("open_clip:cd-student-xs-32")
    # a 128-d teacher: fd needs a learnable 64->128 projector, which must be checkpointed with the student
    task = DistillTask(student, build_loss({"clip": {}, "fd": {}}, 64, 128), FrozenTeachers(
        ["open_clip:cd-student-s-32"]))
    one = DistillBatch.from_loader(batch_for(student, teachers, members=1), TeacherMode.ONLINE)
    fit(task, lambda epoch: [one, one], TrainConfig(epochs=2, lr=1e-3, progress=False, tensorboard=False), tmp_path)
    from clipdistill.safeload import load_tensors

    saved = load_tensors(tmp_path / "checkpoints" / "step_0000004" / "model.safetensors")
    assert any(k.startswith("student.inner.visual") for k in saved)
    assert torch.equal(saved["loss.image_proj.weight"], task.loss.image_proj.weight.detach())
