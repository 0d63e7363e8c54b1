"""Classification metrics on logits, defined as CLIP_benchmark defines them.

Ties: CLIP_benchmark takes top-k with `torch.topk` (tie order unspecified) and the top-1 prediction
with `argmax` (first maximum). We rank with a stable descending sort, so among equal logits the lower
class index wins everywhere: top-1 accuracy and the argmax used for per-class recall always agree,
and results do not depend on the torch build.
"""

from __future__ import annotations

import torch


def ranked_classes(logits: torch.Tensor, k: int) -> torch.Tensor:
    """[N, min(k, C)] class indices by decreasing logit; ties go to the lower class index."""
    order = torch.sort(logits, dim=1, descending=True, stable=True).indices
    return order[:, : min(k, logits.shape[1])]


def topk_accuracy(logits: torch.Tensor, target: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[float]:
    """Share of rows whose target is among the k highest logits, for each k."""
    ranked = ranked_classes(logits, max(ks))
    hit = ranked == target.view(-1, 1)
    return [hit[:, :k].any(dim=1).float().mean().item() for k in ks]


def per_class_recall(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> list[float | None]:
    """Recall of each class index; None for a class with no sample in `target` (strict JSON, no NaN)."""
    support = torch.bincount(target, minlength=num_classes)
    correct = torch.bincount(target[pred == target], minlength=num_classes)
    return [correct[c].item() / support[c].item() if support[c] else None for c in range(num_classes)]


def mean_per_class_recall(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over the classes present in `target` of the recall of that class.

    Equal to sklearn's `balanced_accuracy_score` (what CLIP_benchmark reports): classes that are
    only ever predicted, never true, do not enter the mean.
    """
    n = int(max(pred.max().item(), target.max().item())) + 1
    return torch.tensor([r for r in per_class_recall(pred, target, n) if r is not None], dtype=torch.float64
                        ).mean().item()


def classification_metrics(logits: torch.Tensor, target: torch.Tensor, num_classes: int,
                           classnames: list[str] | None = None) -> dict:
    """{"acc1", "acc5", "mean_per_class_recall"}; acc5 is None (CLIP_benchmark: NaN) below 5 classes.

    With `classnames`, also "per_class_recall": {classname: recall or None}, to see which classes a
    change (a balanced kept-list, another loss) moves; `eval build` leaves this dict out of its CSV.
    """
    if logits.shape[0] == 0:
        raise ValueError("no samples to score")
    pred = ranked_classes(logits, 1)[:, 0]
    if num_classes >= 5:
        acc1, acc5 = topk_accuracy(logits, target, (1, 5))
    else:
        (acc1,), acc5 = topk_accuracy(logits, target, (1,)), None
    out = {"acc1": acc1, "acc5": acc5, "mean_per_class_recall": mean_per_class_recall(pred, target)}
    if classnames is not None:
        if len(classnames) != num_classes:
            raise ValueError(f"{len(classnames)} class names for {num_classes} classes")
        out["per_class_recall"] = dict(zip(classnames, per_class_recall(pred, target, num_classes), strict=True))
    return out
