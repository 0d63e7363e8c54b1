"""The `siglip` term equals open_clip 3.3.0's `SigLipLoss` (one process and 2/3 gloo processes, every dist_impl);
logit_kd from a sigmoid teacher matches its pairwise probabilities."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from open_clip.loss import SigLipLoss
from safetensors.torch import load_file

from clipdistill.errors import ConfigError, UserError
from clipdistill.losses import LossInputs, build_loss
from clipdistill.losses.siglip import sigmoid_pair_loss

sys.path.insert(0, str(Path(__file__).parent))
import siglip_dist_worker as w  # noqa: E402

WORLDS = (2, 3)  # 3: bidir's two-way hop differs from shift only from three ranks on


def _features(n=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


def test_siglip_with_student_bias_equals_open_clip_value_and_gradients():
    img, txt = _features()
    ours_x = [t.clone().requires_grad_(True) for t in (img, txt, torch.tensor(7.0), torch.tensor(-2.0))]
    ref_x = [t.clone().requires_grad_(True) for t in (img, txt, torch.tensor(7.0), torch.tensor(-2.0))]
    loss = build_loss({"siglip": {}}, 5, student_bias=True)
    assert not list(loss.parameters())  # the student's own scale and bias, nothing loss-owned
    ours = loss(LossInputs(ours_x[0], ours_x[1], ours_x[2], logit_bias=ours_x[3]))["siglip"]
    ref = SigLipLoss()(F.normalize(ref_x[0], dim=-1), F.normalize(ref_x[1], dim=-1), ref_x[2], ref_x[3])
    ours.backward()
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
    for a, b in zip(ours_x, ref_x, strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-6)


def test_clip_student_gets_loss_owned_scale_and_bias_initialised_as_open_clip():
    img, txt = _features(seed=1)
    loss = build_loss({"siglip": {}, "clip": {}}, 5)
    params = dict(loss.named_parameters())
    assert set(params) == {"sigmoid_log_scale", "sigmoid_bias"}
    assert params["sigmoid_log_scale"].item() == pytest.approx(math.log(10))
    assert params["sigmoid_bias"].item() == -10
    assert set(loss.state_dict()) == {"sigmoid_log_scale", "sigmoid_bias"}  # saved and resumed with the loss
    # the student's CLIP scale (here 50) feeds `clip` only; siglip uses the loss-owned pair
    out = loss(LossInputs(img, txt, torch.tensor(50.0)))
    ref = SigLipLoss()(F.normalize(img, dim=-1), F.normalize(txt, dim=-1), torch.tensor(10.0), torch.tensor(-10.0))
    assert out["siglip"].item() == pytest.approx(ref.item(), rel=1e-6)
    out["loss"].backward()
    assert params["sigmoid_log_scale"].grad is not None and params["sigmoid_bias"].grad.abs() > 0


def test_siglip_built_for_a_biased_student_refuses_a_student_without_bias():
    img, txt = _features()
    loss = build_loss({"siglip": {}}, 5, student_bias=True)
    with pytest.raises(UserError, match="no logit bias"):
        loss(LossInputs(img, txt, torch.tensor(10.0)))


def _teacher(seed):
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(6, 4, generator=g), dim=-1), F.normalize(torch.randn(6, 4, generator=g), dim=-1))


def _sigmoid_kd(student_bias: bool, s_bias=None):
    img, txt = _features(seed=2)
    t_img, t_txt = _teacher(seed=5)
    loss = build_loss({"logit_kd": {}}, 5, 4, student_bias=student_bias, teacher_sigmoid=True)
    inputs = LossInputs(img, txt, torch.tensor(12.0), t_img, t_txt, torch.tensor(50.0),
                        logit_bias=s_bias, t_sigmoid=(torch.tensor(20.0), torch.tensor(-5.0)))
    return loss, inputs


def test_logit_kd_from_a_sigmoid_teacher_is_pairwise_binary_cross_entropy():
    loss, x = _sigmoid_kd(student_bias=True, s_bias=torch.tensor(-3.0))
    got = loss(x)["logit_kd"]
    # by hand: p = sigmoid(20 cos_t - 5) (the teacher's own scale, not the fixed 50), q = sigmoid(12 cos_s - 3)
    p = torch.sigmoid(20 * x.t_image_features @ x.t_text_features.T - 5)
    s_img, s_txt = F.normalize(x.image_features, dim=-1), F.normalize(x.text_features, dim=-1)
    q = torch.sigmoid(12 * s_img @ s_txt.T - 3)
    want = -(p * q.log() + (1 - p) * (1 - q).log()).sum() / 6
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_logit_kd_sigmoid_target_is_met_when_the_student_is_the_teacher():
    """The gradient vanishes when the student's logits equal the teacher's: the target is the teacher's own
    probabilities, not a softmax over the batch."""
    t_img, t_txt = _teacher(seed=7)
    img, txt = t_img.clone().requires_grad_(True), t_txt.clone().requires_grad_(True)
    loss = build_loss({"logit_kd": {}}, 4, 4, student_bias=True, teacher_sigmoid=True)
    out = loss(LossInputs(img, txt, torch.tensor(20.0), t_img, t_txt, None, logit_bias=torch.tensor(-5.0),
                          t_sigmoid=(torch.tensor(20.0), torch.tensor(-5.0))))
    out["loss"].backward()
    assert img.grad.abs().max() < 1e-6 and txt.grad.abs().max() < 1e-6


def test_logit_kd_sigmoid_teacher_clip_student_trains_the_loss_owned_pair():
    loss, x = _sigmoid_kd(student_bias=False)
    params = dict(loss.named_parameters())
    assert {"sigmoid_log_scale", "sigmoid_bias"} <= set(params)
    out = loss(x)
    s_img, s_txt = F.normalize(x.image_features, dim=-1), F.normalize(x.text_features, dim=-1)
    logits = 10 * s_img @ s_txt.T - 10  # loss-owned init, not the student's CLIP scale 12
    p = torch.sigmoid(20 * x.t_image_features @ x.t_text_features.T - 5)
    want = F.binary_cross_entropy_with_logits(logits, p, reduction="sum") / 6
    assert out["logit_kd"].item() == pytest.approx(want.item(), rel=1e-5)
    out["loss"].backward()
    assert params["sigmoid_bias"].grad.abs() > 0


def test_logit_kd_built_for_one_teacher_type_refuses_the_other():
    img, txt = _features()
    t = F.normalize(torch.randn(6, 4), dim=-1)
    loss = build_loss({"logit_kd": {}}, 5, 4)
    assert not list(loss.parameters())  # a softmax teacher needs no sigmoid pair
    with pytest.raises(UserError, match="built for a softmax teacher"):
        loss(LossInputs(img, txt, 10.0, t, t, 50.0, t_sigmoid=(20.0, -5.0)))
    sig = build_loss({"logit_kd": {}}, 5, 4, teacher_sigmoid=True)
    with pytest.raises(UserError, match="built for a sigmoid teacher"):
        sig(LossInputs(img, txt, 10.0, t, t, 50.0))


@pytest.mark.parametrize("opts,match", [({"teacher_scale": 50.0}, "remove teacher_scale"),
                                        ({"temperature": 2.0}, "temperature")])
def test_logit_kd_options_that_cannot_apply_to_a_sigmoid_teacher_are_refused(opts, match):
    with pytest.raises(ConfigError, match=match):
        build_loss({"logit_kd": opts}, 5, 4, teacher_sigmoid=True)


def test_siglip_dist_impl_must_be_one_of_open_clips():
    with pytest.raises(ConfigError, match="dist_impl"):
        build_loss({"siglip": {"dist_impl": "reduce"}}, 5)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = {}
    for world in WORLDS:
        tmp = tmp_path_factory.mktemp(f"siglip{world}")
        mp.spawn(w.worker, args=(world, str(tmp / "init"), str(tmp)), nprocs=world, join=True)
        out[world] = [load_file(tmp / f"siglip.{world}.{r}.safetensors") for r in range(world)]
    return out


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("impl", w.IMPLS)
def test_distributed_siglip_equals_open_clip_on_every_rank(ranks, world, impl):
    for r in ranks[world]:
        for k in ("value", "grad.img", "grad.txt", "grad.scale", "grad.bias"):
            assert torch.allclose(r[f"ours.{impl}.{k}"], r[f"open_clip.{impl}.{k}"], atol=1e-6), (world, impl, k)
    # and the ranks together give one process's loss on the whole batch (DDP averages the ranks)
    b = w.full_batch()
    full = SigLipLoss()(F.normalize(b["img"], dim=-1), F.normalize(b["txt"], dim=-1), b["scale"], b["bias"])
    mean = torch.cat([r[f"ours.{impl}.value"] for r in ranks[world]]).mean()
    assert mean.item() == pytest.approx(full.item(), rel=1e-5)


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("impl", w.IMPLS)
def test_uneven_shards_exchange_every_rank_s_rows(ranks, world, impl):
    """Ranks with different row counts: each rank's value is its rows against every text, and the gradients are
    those of the sum of the ranks' values (what DDP then averages), computed here on one process."""
    b = w.full_batch()
    x = {k: v.clone().requires_grad_(True) for k, v in b.items()}
    img, txt = F.normalize(x["img"], dim=-1), F.normalize(x["txt"], dim=-1)
    sizes = w.UNEVEN[world]
    values = []
    for rows, start in zip(img.split(list(sizes)), [sum(sizes[:i]) for i in range(world)], strict=True):
        labels = -torch.ones(len(rows), w.BATCH)
        labels[:, start:start + len(rows)] += 2 * torch.eye(len(rows))
        values.append(-F.logsigmoid(labels * (x["scale"] * rows @ txt.T + x["bias"])).sum() / len(rows))
    sum(values).backward()
    got = ranks[world]
    for r, v in zip(got, values, strict=True):
        assert r[f"uneven.ours.{impl}.value"].item() == pytest.approx(v.item(), rel=1e-5)
    for k in ("img", "txt"):
        cat = torch.cat([r[f"uneven.ours.{impl}.grad.{k}"] for r in got])
        assert torch.allclose(cat, x[k].grad, atol=1e-6), k
    for k in ("scale", "bias"):
        total = sum(r[f"uneven.ours.{impl}.grad.{k}"] for r in got)
        assert torch.allclose(total, x[k].grad, atol=1e-5), k


def test_pair_loss_helper_is_open_clips_formula():
    img, txt = (F.normalize(t, dim=-1) for t in _features(seed=4))
    ref = SigLipLoss()._loss(img, txt, 3.0, -1.0)
    assert sigmoid_pair_loss(img, txt, 3.0, -1.0, positives=True).item() == pytest.approx(ref.item(), rel=1e-6)
    neg = SigLipLoss()._loss(img, txt, 3.0, -1.0, negative_only=True)
    assert sigmoid_pair_loss(img, txt, 3.0, -1.0, positives=False).item() == pytest.approx(neg.item(), rel=1e-6)


def test_unread_student_scale_and_bias_still_join_the_graph_with_zero_gradient():
    """DDP (find_unused_parameters=False) needs every parameter in the graph: siglip on a CLIP student reads
    the loss-owned pair, so the student's own scale enters times 0; a SigLIP student's bias likewise under clip."""
    img, txt = _features()
    scale, bias = torch.tensor(3.0, requires_grad=True), torch.tensor(-1.0, requires_grad=True)
    out = build_loss({"siglip": {}}, 5)(LossInputs(img, txt, scale))
    out["loss"].backward()
    assert scale.grad is not None and scale.grad.item() == 0.0
    plain = build_loss({"siglip": {}}, 5)(LossInputs(img, txt, 3.0))["loss"]
    assert out["loss"].item() == plain.item()  # the value is unchanged
    out = build_loss({"clip": {}}, 5)(LossInputs(img, txt, torch.tensor(3.0), logit_bias=bias))
    out["loss"].backward()
    assert bias.grad is not None and bias.grad.item() == 0.0
