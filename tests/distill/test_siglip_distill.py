"""Distillation with sigmoid (SigLIP) models: a sigmoid teacher's pairwise probabilities (its own unclamped scale
and bias) reach logit_kd online and from a feature store, the siglip term trains a CLIP student (loss-owned scale
and bias) or a SigLIP student (its own), and a resumed run ends bitwise where an uninterrupted one does."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from clipdistill.config import load_config
from clipdistill.distill.batch import DistillBatch, TeacherMode, View
from clipdistill.distill.config import DistillConfig
from clipdistill.distill.run import build_task, run_distill
from clipdistill.distill.task import DistillTask
from clipdistill.errors import ConfigError, UserError
from clipdistill.features import CachedTeacher
from clipdistill.features.embed import EmbedOptions, embed_features
from clipdistill.losses import build_loss
from clipdistill.safeload import load_tensors
from clipdistill.train import TrainConfig, fit
from clipdistill.zoo import load_model
from siglip_models import write_open_clip_siglip_json

XS = "open_clip:cd-student-xs-32"
T_SCALE, T_BIAS = 112.3, -4.0  # a released SigLIP's scale is above ClipModel's clamp at 100
CAPTIONS = ["a red circle", "a blue square", "two green triangles", "a small yellow star"]


@pytest.fixture(scope="module")
def sig_json(tmp_path_factory):
    return write_open_clip_siglip_json(tmp_path_factory.mktemp("arch") / "tiny-sigmoid.json")


@pytest.fixture(scope="module")
def sig_teacher(sig_json, tmp_path_factory) -> str:
    torch.manual_seed(7)
    m = load_model(f"open_clip:{sig_json}")
    with torch.no_grad():
        m.inner.logit_scale.fill_(math.log(T_SCALE))
        m.inner.logit_bias.fill_(T_BIAS)
    path = tmp_path_factory.mktemp("teacher") / "t.safetensors"
    save_file({k: v.contiguous() for k, v in m.inner.state_dict().items()}, str(path))
    return f"open_clip:{sig_json}@{path}"


def _batch(student, teacher, n=4) -> DistillBatch:
    g = torch.Generator().manual_seed(0)
    s = View(torch.randn(n, 3, 32, 32, generator=g), student.tokenizer(CAPTIONS[:n]))
    t = View(torch.randn(n, 3, 32, 32, generator=g), teacher.tokenizer(CAPTIONS[:n]))
    return DistillBatch([f"k{i}" for i in range(n)], torch.arange(n), s, TeacherMode.ONLINE, [t])


def _online(teacher: str, *extra: str) -> DistillConfig:
    return load_config(DistillConfig, None, ["data.source=x.csv", "teacher.mode=online", f"teacher.models=[{teacher}]",
                                             f"student.model={XS}", *extra])


def test_sigmoid_teacher_logit_kd_is_pairwise_bce_on_its_own_unclamped_scale_and_bias(sig_teacher):
    task, _ = build_task(_online(sig_teacher, "loss={logit_kd: {}}"), torch.device("cpu"))
    assert task.teachers.sigmoid and task.loss.owns_sigmoid  # CLIP student: the loss owns scale 10, bias -10
    teacher = task.teachers.models[0]
    b = _batch(task.student, teacher)
    task.student.eval()
    got = task.training_step(b)["logit_kd"]
    with torch.no_grad():
        ti, tt = teacher.encode_image(b.teachers[0].image, True), teacher.encode_text(b.teachers[0].text, True)
        p = torch.sigmoid(T_SCALE * ti @ tt.T + T_BIAS)
        si, st = task.student.encode_image(b.student.image, True), task.student.encode_text(b.student.text, True)
        q = 10 * si @ st.T - 10
        want = F.binary_cross_entropy_with_logits(q, p, reduction="sum") / 4
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert teacher.logit_scale.item() == 100.0  # the clamped scale would have given other targets


def test_fixed_teacher_scale_with_a_sigmoid_teacher_in_logit_kd_is_refused(sig_teacher):
    with pytest.raises(ConfigError, match="own scale with its own bias"):
        build_task(_online(sig_teacher, "teacher.logit_scale=50", "loss={logit_kd: {}}"), torch.device("cpu"))


def test_ensemble_with_a_sigmoid_member_refuses_logit_kd(sig_teacher):
    cfg = load_config(DistillConfig, None, ["data.source=x.csv", "teacher.mode=ensemble",
                                            f"teacher.models=[{sig_teacher}, {XS}]", f"student.model={XS}",
                                            "loss={logit_kd: {}}"])
    with pytest.raises(UserError, match="does not average sigmoid"):
        build_task(cfg, torch.device("cpu"))


@pytest.mark.parametrize("kind", ["clip_student", "siglip_student"])
def test_siglip_run_resumes_to_the_uninterrupted_weights(kind, sig_json, tmp_path):
    """The sigmoid scale and bias (loss-owned, or the student's own) are checkpointed and restored."""
    spec = XS if kind == "clip_student" else f"open_clip:{sig_json}"

    def task() -> DistillTask:
        torch.manual_seed(0)
        student = load_model(spec)
        loss = build_loss({"siglip": {}}, student.embed_dim, student_bias=student.logit_bias is not None)
        return DistillTask(student, loss)

    g = torch.Generator().manual_seed(1)
    student = load_model(spec)
    one = DistillBatch(list("abcdef"), torch.arange(6), View(torch.randn(6, 3, 32, 32, generator=g),
                                                           student.tokenizer(CAPTIONS + ["a", "b"])))
    cfg = TrainConfig(epochs=4, lr=1e-2, progress=False, tensorboard=False, save_every=1, keep_last=10)
    fit(task(), lambda epoch, start_step=0: [one][start_step:], cfg, tmp_path / "ref")
    fit(task(), lambda epoch, start_step=0: [one][start_step:], cfg, tmp_path / "resumed",
        resume=str(tmp_path / "ref" / "checkpoints" / "step_0000002"))
    ref = load_tensors(tmp_path / "ref" / "checkpoints" / "step_0000004" / "model.safetensors")
    got = load_tensors(tmp_path / "resumed" / "checkpoints" / "step_0000004" / "model.safetensors")
    bias = "loss.sigmoid_bias" if kind == "clip_student" else "student.inner.logit_bias"
    assert bias in ref and ref[bias].item() != -10.0  # trained away from its init
    assert set(got) == set(ref)
    for k in ref:
        assert torch.equal(got[k], ref[k]), k


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from clipdistill.world.build import build_world

    root = tmp_path_factory.mktemp("world") / "tiny"
    build_world(root, "tiny", seed=0)
    return root


def test_cached_sigmoid_teacher_carries_scale_and_bias_and_matches_online(world, sig_teacher, tmp_path):
    store = embed_features(EmbedOptions(teacher=sig_teacher, data=f"world:{world}", batch_size=64, device="cpu"),
                           tmp_path / "store")
    manifest = json.loads((store / "manifest.json").read_text())
    plan = manifest.get("teacher") or json.loads((store / "plan.json").read_text())["teacher"]
    assert plan["logit_bias"] == T_BIAS and plan["sigmoid_scale"] == pytest.approx(T_SCALE, rel=1e-5)
    assert plan["logit_scale"] == 100.0  # the clamped one, which softmax terms use
    cached = CachedTeacher(store)
    sigmoid_scale, bias = cached.features(cached.store.keys[:2]).sigmoid
    assert bias.item() == T_BIAS
    assert sigmoid_scale.item() == pytest.approx(T_SCALE, rel=1e-5)

    train = {"epochs": 1, "steps": 1, "device": "cpu", "progress": False, "tensorboard": False, "log_every": 1}
    loss = {"logit_kd": {}, "siglip": {}}
    runs = {}
    for mode, teacher in (("online", {"mode": "online", "models": [sig_teacher]}),
                          ("cached", {"mode": "cached", "features": str(store)})):
        cfg = DistillConfig(student={"model": XS}, data={"source": f"world:{world}", "batch_size": 16},
                            train=train, teacher=teacher, loss=loss)
        run = run_distill(cfg, tmp_path / mode)
        runs[mode] = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    for term in ("logit_kd", "siglip"):  # same student init and batch; the store holds fp16 features
        assert runs["cached"][term] == pytest.approx(runs["online"][term], rel=2e-3), term
