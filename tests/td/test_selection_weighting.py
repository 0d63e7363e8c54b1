import math

import pytest
import torch

from clipdistill.td.contracts import StudentOutput, TeacherSignals
from clipdistill.td.objective import DistillHeads, distillation_terms, masked_token_loss
from clipdistill.td.selection import count_to_keep, select_tokens, topk_mask
from clipdistill.td.weighting import (
    WeightConfig,
    choice_probs,
    entailment_probs,
    instance_weights,
    modality_weights,
)

E = torch.eye(4)


def _teacher():
    # 4 image patches; the text embedding is e0, so patches most like e0 are relevant: patch 2 (e0), then 0
    patch = torch.stack([0.6 * E[0] + 0.8 * E[1], E[3], E[0], E[1]])[None]
    tokens = torch.stack([E[2], E[1], 0.8 * E[1] + 0.6 * E[2], E[3]])[None]  # image embedding is e1
    return TeacherSignals(patch=patch, tokens=tokens, mask=torch.ones(1, 4, dtype=torch.bool), image_pooled=E[1][None],
                          text_pooled=E[0][None])


def test_teacher_relevance_picks_most_similar_tokens():
    img_valid = torch.ones(1, 4, dtype=torch.bool)
    txt_valid = torch.tensor([[True, True, True, False]])  # token 3 is padding
    sel_v, sel_t = select_tokens("teacher_relevance", image_valid=img_valid, text_valid=txt_valid,
                                 image_fraction=0.5, text_fraction=0.5, teacher=_teacher())
    assert sel_v.tolist() == [[True, False, True, False]]  # cos with e0: 0.6, 0, 1, 0
    assert sel_t.tolist() == [[False, True, True, False]]  # ceil(0.5 * 3) = 2 of the valid: cos 1 and 0.8


def test_student_attention_uses_cls_attention_per_modality():
    att = torch.tensor([[0.05, 0.3, 0.1, 0.02, 0.2, 0.01, 0.3, 0.02]])  # 4 image then 4 text positions
    sel_v, sel_t = select_tokens("student_attention", image_valid=torch.ones(1, 4, dtype=torch.bool),
                                 text_valid=torch.ones(1, 4, dtype=torch.bool), image_fraction=0.25,
                                 text_fraction=0.5, cls_attention=att)
    assert sel_v.tolist() == [[False, True, False, False]]
    assert sel_t.tolist() == [[True, False, True, False]]


def test_all_rule_keeps_every_valid_token_and_fraction_rounding():
    valid = torch.tensor([[True, True, False]])
    assert select_tokens("all", image_valid=valid, text_valid=valid, image_fraction=0.1,
                         text_fraction=0.1)[1].tolist() == [[True, True, False]]
    assert topk_mask(torch.tensor([[1.0, 2.0, 3.0]]), torch.ones(1, 3, dtype=torch.bool), 0.01).tolist() == [
        [False, False, True]]  # at least one token
    assert [count_to_keep(10, f) for f in (0.01, 0.5, 0.55, 1.0)] == [1, 5, 6, 10]
    with pytest.raises(ValueError):
        topk_mask(torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), 0.0)


def test_confidence_weights_hand_computed():
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    cands = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])
    probs = choice_probs(img, cands, logit_scale=math.log(3.0))  # logits (ln3, 0) -> p = (3/4, 1/4)
    assert torch.allclose(probs, torch.tensor([[0.75, 0.25], [0.75, 0.25]]))
    labels = torch.tensor([0, 1])  # the teacher is right on item 0 (c = .75), wrong on item 1 (c = .25)
    w = instance_weights(probs, labels, WeightConfig(beta=0.0))
    assert w.weight.tolist() == pytest.approx([0.75, 0.0])
    assert instance_weights(probs, labels, WeightConfig(beta=0.5)).weight.tolist() == pytest.approx([0.75, 0.125])
    assert instance_weights(probs, labels, WeightConfig(mode="uniform")).weight.tolist() == [1.0, 1.0]
    normed = instance_weights(probs, labels, WeightConfig(beta=0.5, normalize=True)).weight
    assert normed.tolist() == pytest.approx([0.75 / 0.4375, 0.125 / 0.4375])  # batch mean of (.75, .125)
    assert instance_weights(probs[1:], labels[1:], WeightConfig(normalize=True)).weight.tolist() == [0.0]
    m = modality_weights(torch.tensor([0.5]), torch.tensor([0.5]), 1.0)
    assert torch.allclose(m, torch.ones(1, 2))


def test_entailment_proxy_hand_computed():
    img = torch.tensor([[1.0, 0.0]])
    p = entailment_probs(img, torch.tensor([[1.0, 0.0]]), torch.tensor([0.0, 1.0]), logit_scale=math.log(3.0))
    # gap = 1 - 0, q = sigmoid(ln 3) = 3/4 -> (entail, neutral, contradiction) = (3/4, 1/2, 1/4)
    assert torch.allclose(p, torch.tensor([[0.75, 0.5, 0.25]]))


def test_weighted_masked_distillation_and_no_gradient_through_weights():
    dist = torch.tensor([[1.0, 3.0, 5.0]])
    assert masked_token_loss(dist, torch.tensor([[True, False, True]])).tolist() == [3.0]
    heads = DistillHeads(4, 4)
    student = StudentOutput(cls=torch.randn(2, 4), image_tokens=torch.randn(2, 3, 4, requires_grad=True),
                            text_tokens=torch.randn(2, 2, 4), text_mask=torch.ones(2, 2, dtype=torch.bool))
    teacher = TeacherSignals(patch=torch.randn(2, 3, 4), tokens=torch.randn(2, 2, 4),
                             mask=torch.ones(2, 2, dtype=torch.bool), image_pooled=torch.randn(2, 4),
                             text_pooled=torch.randn(2, 4))
    sel_v, sel_t = torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 2, dtype=torch.bool)
    w = torch.tensor([1.0, 0.0], requires_grad=True)
    terms = distillation_terms(heads, student, teacher, sel_v, sel_t, w.detach(), None, distance="cosine",
                               pooled_weight=0.0)
    terms["distill"].backward()
    # item 1 has weight 0: its tokens get no gradient
    assert student.image_tokens.grad[1].abs().sum() == 0
    assert student.image_tokens.grad[0].abs().sum() > 0
