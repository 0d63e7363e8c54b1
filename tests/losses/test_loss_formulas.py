"""Every loss term against a hand-computed case or an independent re-derivation of its formula."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clipdistill.losses import LossInputs, build_loss
from clipdistill.losses.cluster import arcface_logits, sample_classes
from clipdistill.losses.gd import infonce_grads

EYE2 = torch.eye(2)
RAW = math.log(1 / 0.07)


def run(spec, inputs, student_dim=2, teacher_dim=2, **kw):
    return build_loss(spec, student_dim, teacher_dim, **kw)(inputs)


def inputs_eye(scale=1.0, t_scale=1.0, **kw):
    # unnormalised student features whose normalised form is the identity
    return LossInputs(
        torch.tensor([[3.0, 0.0], [0.0, 2.0]]),
        torch.tensor([[5.0, 0.0], [0.0, 0.5]]),
        torch.tensor(scale),
        EYE2,
        EYE2,
        torch.tensor(t_scale),
        **kw,
    )


def kl(p_target_logits, q_logits):
    """KL(softmax(p) || softmax(q)) averaged over rows, written out."""
    p, q = p_target_logits.softmax(1), q_logits.softmax(1)
    return (p * (p.log() - q.log())).sum(1).mean()


def test_clip_hand_case():
    out = run({"clip": {}}, inputs_eye(scale=1.0), teacher_dim=None)
    assert out["clip"].item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    assert out["loss"].item() == pytest.approx(out["clip"].item())


def test_negclip_hand_case_leaves_out_pairs_without_a_negative():
    """Image->text over the captions and each pair's negative (pair 1 has none: its column is left out);
    text->image as in clip. Negatives normalise to (e2, e1)."""
    neg = torch.tensor([[0.0, 4.0], [1.0, 0.0]])
    out = run({"negclip": {}}, inputs_eye(negative_text_features=neg, negative_mask=torch.tensor([True, False])),
              teacher_dim=None)
    image_to_text = (math.log(1 + 2 * math.exp(-1)) + math.log(2 + math.exp(-1))) / 2  # rows [1,0,0], [0,1,1]
    assert out["negclip"].item() == pytest.approx((image_to_text + math.log(1 + math.exp(-1))) / 2, abs=1e-6)
    none = run({"negclip": {}}, inputs_eye(negative_text_features=neg, negative_mask=torch.tensor([False, False])),
               teacher_dim=None)
    assert none["negclip"].item() == pytest.approx(run({"clip": {}}, inputs_eye(), teacher_dim=None)["clip"].item())


def test_logit_kd_equals_teacher_entropy_when_student_matches():
    out = run({"logit_kd": {"teacher_scale": 1.0}}, inputs_eye(scale=1.0))
    p = [math.e / (math.e + 1), 1 / (math.e + 1)]
    entropy = -sum(x * math.log(x) for x in p)
    assert out["logit_kd"].item() == pytest.approx(entropy, abs=1e-6)


def test_logit_kd_ensemble_averages_after_softmax():
    torch.manual_seed(0)
    v, t = torch.randn(3, 2), torch.randn(3, 2)
    members = [
        (F.normalize(torch.randn(3, 4), dim=1), F.normalize(torch.randn(3, 4), dim=1)) for _ in range(2)
    ]
    inp = LossInputs(v, t, torch.tensor(2.0), t_ensemble=members)
    got = run({"logit_kd": {"teacher_scale": 100.0}}, inp, teacher_dim=4)["logit_kd"]
    s = 2.0 * F.normalize(v, dim=1) @ F.normalize(t, dim=1).T
    p_i2t = sum((100 * a @ b.T).softmax(1) for a, b in members) / 2
    p_t2i = sum((100 * b @ a.T).softmax(1) for a, b in members) / 2
    want = (-(p_i2t * s.log_softmax(1)).sum(1).mean() - (p_t2i * s.T.log_softmax(1)).sum(1).mean()) / 2
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    # averaging logits instead gives a different target
    other = run({"logit_kd": {"teacher_scale": 100.0, "average_after_softmax": False}}, inp, teacher_dim=4)
    assert other["logit_kd"].item() != pytest.approx(want.item(), rel=1e-3)


def test_crd_zero_when_student_equals_teacher_and_matches_kl():
    assert run({"crd": {}}, inputs_eye(scale=3.0, t_scale=3.0))["crd"].item() == pytest.approx(0.0, abs=1e-7)
    torch.manual_seed(1)
    v, t = torch.randn(3, 2), torch.randn(3, 2)
    tv, tt = F.normalize(torch.randn(3, 2), dim=1), F.normalize(torch.randn(3, 2), dim=1)
    got = run({"crd": {}}, LossInputs(v, t, torch.tensor(5.0), tv, tt, torch.tensor(10.0)))["crd"]
    s = 5 * F.normalize(v, dim=1) @ F.normalize(t, dim=1).T
    te = 10 * tv @ tt.T
    assert got.item() == pytest.approx(((kl(te, s) + kl(te.T, s.T)) / 2).item(), rel=1e-5)


def test_fd_hand_case_and_default_weight():
    inp = LossInputs(
        torch.tensor([[3.0, 4.0]]),
        torch.tensor([[0.0, 2.0]]),
        1.0,
        torch.tensor([[1.0, 0.0]]),
        torch.tensor([[0.0, 1.0]]),
        1.0,
    )
    out = run({"fd": {}}, inp)
    # image: (0.6-1)^2 + 0.8^2 over 2 elements = 0.4; text matches exactly
    assert out["fd"].item() == pytest.approx(0.4, abs=1e-6)
    assert out["loss"].item() == pytest.approx(2000 * 0.4, rel=1e-6)


def test_mfd_uses_masked_features():
    inp = LossInputs(
        torch.tensor([[1.0, 0.0]]),
        torch.tensor([[0.0, 1.0]]),
        1.0,
        torch.tensor([[1.0, 0.0]]),
        torch.tensor([[0.0, 1.0]]),
        1.0,
        masked_image_features=torch.tensor([[3.0, 4.0]]),
    )
    assert run({"mfd": {}}, inp)["mfd"].item() == pytest.approx(0.4, abs=1e-6)
    inp.text_features = torch.tensor([[1.0, 0.0]])  # text FD adds (1 + 1) / 2 = 1 unless disabled
    assert run({"mfd": {}}, inp)["mfd"].item() == pytest.approx(1.4, abs=1e-6)
    assert run({"mfd": {"include_text": False}}, inp)["mfd"].item() == pytest.approx(0.4, abs=1e-6)


def test_infonce_grads_match_autograd():
    torch.manual_seed(2)
    p, k = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    y = torch.arange(3)
    F.cross_entropy(7.0 * p @ k.T, y).backward()
    gp, gk = infonce_grads(p.detach(), k.detach(), 7.0, y)
    assert torch.allclose(gp, p.grad, atol=1e-6) and torch.allclose(gk, k.grad, atol=1e-6)


def test_gd_zero_for_identical_and_tau_choice_matters():
    assert run({"gd": {}}, inputs_eye(scale=4.0, t_scale=4.0))["gd"].item() == pytest.approx(0.0, abs=1e-12)
    torch.manual_seed(3)
    v, t = torch.randn(3, 2), torch.randn(3, 2)
    tv, tt = F.normalize(torch.randn(3, 2), dim=1), F.normalize(torch.randn(3, 2), dim=1)
    inp = LossInputs(v, t, torch.tensor(5.0), tv, tt, torch.tensor(10.0))
    quirk = run({"gd": {}}, inp)["gd"]
    fixed = run({"gd": {"corrected_tau": True}}, inp)["gd"]
    want = 0.0
    for mult_s, mult_t, got in ((1 / 5, 1 / 10, quirk), (5.0, 10.0, fixed)):
        want = 0.0
        for a, b, ta, tb in ((v, t, tv, tt), (t, v, tt, tv)):
            sp, sk = infonce_grads(F.normalize(a, dim=1), F.normalize(b, dim=1), mult_s, torch.arange(3))
            tp, tk = infonce_grads(ta, tb, mult_t, torch.arange(3))
            want += F.mse_loss(sp, tp) + F.mse_loss(sk, tk)
        assert got.item() == pytest.approx(float(want), rel=1e-5)
    assert quirk.item() != pytest.approx(fixed.item(), rel=1e-2)


def test_icl_uses_raw_scale():
    out = run({"icl": {}}, inputs_eye())
    assert out["icl"].item() == pytest.approx(math.log(1 + math.exp(-RAW)), rel=1e-5)


def test_instance_uses_exp_scale():
    out = run({"instance": {"scale": 2.0}}, inputs_eye())
    assert out["instance"].item() == pytest.approx(math.log(1 + math.exp(-2.0)), rel=1e-5)


def test_afd_matches_direct_formula():
    torch.manual_seed(4)
    v, t = torch.randn(3, 2), torch.randn(3, 2)
    tv, tt = F.normalize(torch.randn(3, 3), dim=1), F.normalize(torch.randn(3, 3), dim=1)
    loss = build_loss({"afd": {}}, 2, 3)
    afd = loss.terms["afd"]
    assert afd.image_fusion.in_features == 5 and afd.image_fusion.out_features == 2
    got = loss(LossInputs(v, t, 1.0, tv, tt, 1.0))["afd"]
    fv = F.normalize(afd.image_fusion(torch.cat([F.normalize(v, dim=1), tv], 1)), dim=1)
    ft = F.normalize(afd.text_fusion(torch.cat([F.normalize(t, dim=1), tt], 1)), dim=1)
    lg = RAW * fv @ ft.T
    want = (F.cross_entropy(lg, torch.arange(3)) + F.cross_entropy(lg.T, torch.arange(3))) / 2
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_cross_kd_matches_kl():
    inp = inputs_eye(t_scale=2.0)
    cross = RAW * EYE2
    want = kl(2.0 * EYE2, cross)  # both directions identical here
    assert run({"cross_kd": {}}, inp)["cross_kd"].item() == pytest.approx(want.item(), rel=1e-5)


def test_vrd_and_xrd_match_direct_formulas():
    torch.manual_seed(5)
    v, t = torch.randn(3, 2), torch.randn(3, 2)
    tv, tt = F.normalize(torch.randn(3, 2), dim=1), F.normalize(torch.randn(3, 2), dim=1)
    inp = LossInputs(v, t, 1.0, tv, tt, 1.0)
    out = run({"vrd": {}, "xrd": {}}, inp)
    sv, st, y = F.normalize(v, dim=1), F.normalize(t, dim=1), torch.arange(3)
    ts_v, st_v, ts_t, st_t = RAW * tv @ sv.T, RAW * sv @ tv.T, RAW * tt @ st.T, RAW * st @ tt.T
    vrd_kl = (kl(ts_t, ts_v) + kl(st_t, st_v)) / 2
    ce_img = (F.cross_entropy(ts_v, y) + F.cross_entropy(st_v, y)) / 2
    ce_txt = (F.cross_entropy(ts_t, y) + F.cross_entropy(st_t, y)) / 2
    assert out["vrd_kl"].item() == pytest.approx(vrd_kl.item(), rel=1e-5)
    assert out["vrd"].item() == pytest.approx((vrd_kl + ce_img + ce_txt).item(), rel=1e-5)
    x1, x2, x3, x4 = RAW * tv @ st.T, RAW * tt @ sv.T, RAW * sv @ tt.T, RAW * st @ tv.T
    xrd = (kl(x2, x1) + kl(x1, x2) + kl(x3, x4) + kl(x4, x3)) / 4
    assert out["xrd"].item() == pytest.approx(xrd.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx((out["vrd"] + out["xrd"]).item(), rel=1e-6)


def test_arcface_hand_case():
    cos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    lg = arcface_logits(cos, torch.tensor([0, 0]), margin=0.5, scale=1.0)
    assert lg[0, 0].item() == pytest.approx(math.cos(0.5), abs=1e-3)  # theta 0 -> cos(0 + m)
    assert lg[1, 0].item() == pytest.approx(-math.sin(0.5), abs=1e-6)  # theta pi/2 -> cos(pi/2 + m)
    assert lg[1, 1].item() == 1.0 and lg[0, 1].item() == 0.0


def test_cluster_loss_hand_case():
    centres = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    inp = LossInputs(
        torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.zeros(2, 2), 1.0, cluster_labels=torch.tensor([1, 1])
    )
    got = run({"cluster": {"scale": 1.0, "margin": 0.5}}, inp, teacher_dim=None, centroids=centres)["cluster"]
    want = (math.log(1 + math.exp(1 + math.sin(0.5))) + math.log(1 + math.exp(-math.cos(0.5)))) / 2
    assert got.item() == pytest.approx(want, abs=1e-3)


def test_partial_fc_sampling_keeps_positives():
    labels = torch.tensor([7, 3, 7, 90])
    g = torch.Generator().manual_seed(0)
    chosen, y = sample_classes(labels, 100, 0.1, g)
    assert chosen.numel() == 10 and set(labels.tolist()) <= set(chosen.tolist())
    assert torch.equal(chosen[y], labels)
    all_ids, same = sample_classes(labels, 100, 1.0)
    assert torch.equal(all_ids, torch.arange(100)) and torch.equal(same, labels)
