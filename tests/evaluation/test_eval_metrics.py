"""Metrics on hand-checkable cases: top-k with ties, per-class recall, chunked retrieval == dense."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from clipdistill.evaluation.linear_probe import WD_GRID, fit_logistic, linear_probe, split_train_val
from clipdistill.evaluation.metrics import classification_metrics, mean_per_class_recall, topk_accuracy
from clipdistill.evaluation.retrieval import recall_at_k, retrieval_ranks


def test_topk_hand_case_with_ties():
    logits = torch.tensor([
        [0.9, 0.1, 0.0],   # target 0 -> top1 hit
        [0.5, 0.5, 0.0],   # tie 0/1, target 1 -> lower index (0) wins top-1: miss; top-2 hit
        [0.2, 0.3, 0.3],   # tie 1/2, target 1 -> hit
        [0.0, 0.0, 0.0],   # all tied, target 2 -> rank 3: top-2 miss
    ])
    target = torch.tensor([0, 1, 1, 2])
    assert topk_accuracy(logits, target, (1, 2, 3)) == [0.5, 0.75, 1.0]


def test_classification_metrics_class_with_one_sample_and_few_classes():
    # class 2 has a single sample (missed); predictions: [0, 0, 1, 1, 0]
    logits = torch.tensor([[3., 1, 0], [2, 1, 0], [0, 2, 1], [0, 5, 1], [1, 0, 0.5]])
    target = torch.tensor([0, 0, 1, 1, 2])
    m = classification_metrics(logits, target, num_classes=3)
    assert m["acc1"] == pytest.approx(4 / 5)
    assert m["acc5"] is None  # fewer than 5 classes, like CLIP_benchmark (which writes NaN)
    assert m["mean_per_class_recall"] == pytest.approx((1 + 1 + 0) / 3)
    assert "per_class_recall" not in m


def test_per_class_recall_by_name_with_an_absent_class():
    # class "c" never occurs: None, and it stays out of the mean; "b" is right once in two
    logits = torch.tensor([[3., 1, 0], [0, 2, 1], [2, 1, 0]])
    target = torch.tensor([0, 1, 1])
    m = classification_metrics(logits, target, num_classes=3, classnames=["a", "b", "c"])
    assert m["per_class_recall"] == {"a": 1.0, "b": 0.5, "c": None}
    assert m["mean_per_class_recall"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        classification_metrics(logits, target, num_classes=3, classnames=["a", "b"])


@pytest.mark.filterwarnings("ignore:y_pred contains classes")
def test_mean_per_class_recall_matches_sklearn_including_unseen_predicted_class():
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 6, (200,), generator=gen)
    pred = torch.randint(0, 8, (200,), generator=gen)  # 6, 7 are predicted but never true
    target[0] = 5  # make sure class 5 exists
    assert mean_per_class_recall(pred, target) == pytest.approx(balanced_accuracy_score(target, pred))


def _clip_benchmark_recall(scores_t2i: torch.Tensor, positive: torch.Tensor, k: int) -> float:
    """CLIP_benchmark's dense definition: any positive among the top-k (torch.topk)."""
    topk = scores_t2i.topk(k, dim=1).indices
    return positive.gather(1, topk).any(dim=1).float().mean().item()


def test_chunked_retrieval_equals_dense_clip_benchmark_definition():
    gen = torch.Generator().manual_seed(1)
    images = torch.nn.functional.normalize(torch.randn(37, 16, generator=gen), dim=1)
    text_image = torch.cat([torch.arange(37), torch.randint(0, 37, (50,), generator=gen)])  # 1-3 captions each
    texts = torch.nn.functional.normalize(images[text_image] + 0.8 * torch.randn(87, 16, generator=gen), dim=1)
    positive = torch.zeros(87, 37, dtype=torch.bool)
    positive[torch.arange(87), text_image] = True
    scores = texts @ images.T
    ks = (1, 5, 10)
    for chunk in (5, 16, 1000):
        m = recall_at_k(images, texts, text_image, ks, chunk=chunk)
        for k in ks:
            assert m[f"image_retrieval_recall@{k}"] == pytest.approx(_clip_benchmark_recall(scores, positive, k))
            assert m[f"text_retrieval_recall@{k}"] == pytest.approx(_clip_benchmark_recall(scores.T, positive.T, k))


def test_retrieval_hand_case_with_ties_and_several_captions():
    # exact integer scores: image rows, caption rows
    images = torch.tensor([[1., 0], [0, 1], [1, 0]])  # image 2 duplicates image 0
    texts = torch.tensor([[1., 0], [0, 1], [0, 2], [1, 0]])
    text_image = torch.tensor([0, 1, 1, 2])
    t2i, i2t = retrieval_ranks(images, texts, text_image, chunk=2)
    # caption 0 (image 0): ties with image 2, lower index first -> rank 0; caption 3 (image 2): image 0 first
    assert t2i.tolist() == [0, 0, 0, 1]
    # image 0: its caption 0 scores 1, caption 3 (image 2's) also 1 but higher index -> rank 0
    # image 1: best caption is 2 (score 2); caption 1 is also its own -> rank 0
    # image 2: its caption 3 ties with caption 0 (lower index, a negative) -> rank 1
    assert i2t.tolist() == [0, 0, 1]
    m = recall_at_k(images, texts, text_image, (1, 2))
    assert m["image_retrieval_recall@1"] == 0.75 and m["text_retrieval_recall@1"] == pytest.approx(2 / 3)
    assert m["text_retrieval_recall@2"] == 1.0


def test_retrieval_refuses_image_without_caption():
    with pytest.raises(ValueError, match="caption"):
        retrieval_ranks(torch.eye(3), torch.eye(3)[:2], torch.tensor([0, 1]))


def test_logistic_probe_is_deterministic_and_separates():
    gen = torch.Generator().manual_seed(0)
    centers = torch.eye(4, 8) * 3
    y = torch.arange(4).repeat(10)
    x = centers[y] + 0.3 * torch.randn(40, 8, generator=gen)
    a, b = fit_logistic(x, y, 4, 1e-3), fit_logistic(x, y, 4, 1e-3)
    assert torch.equal(a.weight, b.weight)
    assert (a.logits(x).argmax(1) == y).all()
    # a huge penalty shrinks the weights towards zero
    assert fit_logistic(x, y, 4, WD_GRID[-1]).weight.norm() < a.weight.norm()
    m = linear_probe(x, y, x, y, num_classes=4, val_proportion=0.25, seed=0)
    assert m["lp_acc1"] == 1.0 and m["weight_decay"] in WD_GRID
    assert len(m["val_acc1_by_weight_decay"]) >= 7


def test_split_train_val_refuses_too_small():
    tr, va = split_train_val(10, 0.2, seed=3)
    assert sorted(tr.tolist() + va.tolist()) == list(range(10)) and len(va) == 2
    with pytest.raises(ValueError, match="validation"):
        split_train_val(1, 0.2, seed=0)
