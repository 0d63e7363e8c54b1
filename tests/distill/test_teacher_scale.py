"""teacher.logit_scale vs a loss's own teacher_scale: one wins visibly, a disagreement is refused, and the
scale that wins is the one the loss computes with."""

import pytest
import torch
import torch.nn.functional as F

from clipdistill.config import load_config
from clipdistill.distill.batch import DistillBatch, TeacherMode, View
from clipdistill.distill.config import DistillConfig
from clipdistill.distill.run import build_task
from clipdistill.errors import ConfigError

XS = "open_clip:cd-student-xs-32"
ONLINE = ["data.source=x.csv", "teacher.mode=online", f"teacher.models=[{XS}]", f"student.model={XS}"]


def test_teacher_logit_scale_and_a_different_loss_teacher_scale_are_refused_naming_both():
    for loss in ("logit_kd", "crd", "cross_kd"):
        with pytest.raises(ConfigError, match=rf"teacher.logit_scale=100 and loss.{loss}.teacher_scale=50 disagree"):
            load_config(DistillConfig, None,
                        [*ONLINE, "teacher.logit_scale=100", f"loss={{{loss}: {{teacher_scale: 50}}}}"])


def test_teacher_logit_scale_is_written_into_every_loss_that_has_a_teacher_scale():
    cfg = load_config(DistillConfig, None, [*ONLINE, "teacher.logit_scale=100",
                                            "loss={clip: {}, logit_kd: {}, crd: {teacher_scale: null}, fd: {}}"])
    assert cfg.loss == {"clip": {}, "logit_kd": {"teacher_scale": 100.0}, "crd": {"teacher_scale": 100.0}, "fd": {}}
    same = load_config(DistillConfig, None, [*ONLINE, "teacher.logit_scale=50", "loss={logit_kd: {teacher_scale: 50}}"])
    assert same.loss == {"logit_kd": {"teacher_scale": 50.0}}
    # without teacher.logit_scale each loss keeps its own: logit_kd's default stays 50 (TinyCLIP)
    own = load_config(DistillConfig, None, [*ONLINE, "loss={logit_kd: {}}"])
    assert own.loss == {"logit_kd": {}} and own.teacher.logit_scale is None


def _expected_logit_kd(task, batch, teacher_scale: float) -> torch.Tensor:
    with torch.no_grad():
        t = task.teachers.models[0]
        ti = F.normalize(t.encode_image(batch.teachers[0].image), dim=-1)
        tt = F.normalize(t.encode_text(batch.teachers[0].text), dim=-1)
        out = task.student(batch.student.image, batch.student.text)
        si, st = F.normalize(out["image_features"], dim=-1), F.normalize(out["text_features"], dim=-1)
        s = out["logit_scale"]

        def soft_ce(logits, target):
            return -(target * logits.log_softmax(1)).sum(1).mean()

        p_i2t, p_t2i = (teacher_scale * ti @ tt.T).softmax(1), (teacher_scale * tt @ ti.T).softmax(1)
        return (soft_ce(s * si @ st.T, p_i2t) + soft_ce(s * st @ si.T, p_t2i)) / 2


@pytest.mark.parametrize("overrides, scale", [
    (["teacher.logit_scale=100", "loss={logit_kd: {}}"], 100.0),  # teacher.logit_scale wins over the default 50
    (["loss={logit_kd: {}}"], 50.0),  # no teacher.logit_scale: logit_kd's own default
    (["teacher.logit_scale=20", "loss={logit_kd: {teacher_scale: 20}}"], 20.0),
])
def test_the_effective_scale_is_the_one_the_loss_computes_with(overrides, scale):
    cfg = load_config(DistillConfig, None, [*ONLINE, *overrides])
    task, _ = build_task(cfg, torch.device("cpu"))
    assert task.loss.terms["logit_kd"].opts.teacher_scale == scale
    torch.manual_seed(0)
    n = 4
    student = View(torch.randn(n, 3, 32, 32), task.student.tokenizer(["a", "b c", "d e f", "g"]))
    teacher = View(torch.randn(n, 3, 32, 32), task.teachers.models[0].tokenizer(["a", "b c", "d e f", "g"]))
    batch = DistillBatch(list("abcd"), torch.arange(n), student, TeacherMode.ONLINE, [teacher])
    task.student.eval()  # same forward twice (no dropout)
    got = task.training_step(batch)["logit_kd"]
    torch.testing.assert_close(got, _expected_logit_kd(task, batch, scale))
    other = 50.0 if scale != 50.0 else 100.0
    assert not torch.allclose(got, _expected_logit_kd(task, batch, other))
