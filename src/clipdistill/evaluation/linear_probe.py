"""Linear probe on frozen image features: L2-regularised logistic regression.

Protocol (CLIP paper A.3 / CLIP_benchmark `linear_probe.py`): carve a validation split from the
training features, pick the regularisation strength on it, refit on train+val with that strength,
report test top-1/top-5/mean per-class recall and the chosen strength.

Our reconstruction of the solver (an option, not CLIP_benchmark's exact optimiser): CLIP used
sklearn's L-BFGS logistic regression; CLIP_benchmark trains a Linear layer with AdamW and a cosine
schedule. We minimise `mean CE + weight_decay/2 * ||W||^2` (bias unpenalised) with full-batch
L-BFGS from zero weights, which is deterministic: same features -> same probe, no seed involved
except the train/val split. The weight-decay search is CLIP_benchmark's: 97 log-spaced values in
[1e-6, 1e2], a coarse pass over 7 of them, then a binary refinement around the peak (spans 8, 4, 2, 1);
the first value reaching the best validation top-1 wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from clipdistill.errors import DataError
from clipdistill.evaluation.datasets import ClassificationSet
from clipdistill.evaluation.features import encode_images
from clipdistill.evaluation.metrics import classification_metrics
from clipdistill.evaluation.results import make_record
from clipdistill.zoo import ClipModel

TASK = "linear_probe"
WD_GRID = np.logspace(-6, 2, num=97).tolist()
WD_COARSE = [i for i, wd in enumerate(WD_GRID) if wd in np.logspace(-6, 2, num=7).tolist()]


@dataclass
class Probe:
    weight: torch.Tensor  # [C, D]
    bias: torch.Tensor  # [C]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T + self.bias


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float,
                 max_iter: int = 200) -> Probe:
    """Full-batch L-BFGS on mean cross-entropy + weight_decay/2 * ||W||^2, from zero weights."""
    x = x.double()
    w = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, y) + 0.5 * weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return Probe(w.detach().float(), b.detach().float())


def _val_top1(train: tuple, val: tuple, num_classes: int, weight_decay: float, max_iter: int) -> float:
    probe = fit_logistic(*train, num_classes, weight_decay, max_iter)
    return (probe.logits(val[0]).argmax(1) == val[1]).float().mean().item()


def select_weight_decay(train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                        num_classes: int, max_iter: int = 200) -> tuple[float, dict[float, float]]:
    """CLIP_benchmark's coarse-to-fine search; returns (best weight decay, {tried wd: val top-1})."""
    tried: dict[int, float] = {}

    def peak(idxs: list[int]) -> int:
        best_idx, best_acc = idxs[0], -1.0
        for i in idxs:
            if i not in tried:
                tried[i] = _val_top1(train, val, num_classes, WD_GRID[i], max_iter)
            if tried[i] > best_acc:
                best_idx, best_acc = i, tried[i]
        return best_idx

    idx = peak(WD_COARSE)
    span = 8
    while span > 0:
        idx = peak([max(idx - span, 0), idx, min(idx + span, len(WD_GRID) - 1)])
        span //= 2
    return WD_GRID[idx], {WD_GRID[i]: acc for i, acc in sorted(tried.items())}


def split_train_val(n: int, val_proportion: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random split of range(n) (CLIP_benchmark: `random_split` with --val_proportion)."""
    n_val = int(round(n * val_proportion))
    if n_val < 1 or n - n_val < 1:
        raise ValueError(f"cannot carve a validation split of {val_proportion:g} from {n} training samples")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:], perm[:n_val]


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                 num_classes: int, val_proportion: float = 0.2, seed: int = 0, max_iter: int = 200,
                 weight_decay: float | None = None, classnames: list[str] | None = None) -> dict:
    """Select the weight decay on a val split of train (unless given), refit on all train, score test."""
    if weight_decay is None:
        tr, va = split_train_val(len(train_x), val_proportion, seed)
        weight_decay, curve = select_weight_decay((train_x[tr], train_y[tr]), (train_x[va], train_y[va]),
                                                  num_classes, max_iter)
    else:
        curve = {}
    probe = fit_logistic(train_x, train_y, num_classes, weight_decay, max_iter)
    m = classification_metrics(probe.logits(test_x), test_y, num_classes, classnames)
    per_class = {"lp_per_class_recall": m["per_class_recall"]} if classnames is not None else {}
    return {"lp_acc1": m["acc1"], "lp_acc5": m["acc5"], "lp_mean_per_class_recall": m["mean_per_class_recall"],
            **per_class,
            "weight_decay": weight_decay, "val_proportion": val_proportion, "seed": seed,
            "val_acc1_by_weight_decay": {f"{k:.3g}": v for k, v in curve.items()},
            "solver": "lbfgs"}


def linear_probe_eval(model: ClipModel, train_set: ClassificationSet, test_set: ClassificationSet, *,
                      val_proportion: float = 0.2, seed: int = 0, weight_decay: float | None = None,
                      max_iter: int = 200, batch_size: int = 64, num_workers: int = 0, device: str = "cpu",
                      progress: bool = True) -> dict:
    """Frozen, L2-normalised image features (CLIP_benchmark's default) -> probe -> result record."""
    if train_set.classnames != test_set.classnames:
        raise DataError(f"train ({train_set.root}) and test ({test_set.root}) have different classes")
    kw = {"batch_size": batch_size, "num_workers": num_workers, "device": device, "progress": progress}
    train = encode_images(model, train_set, label="train images", **kw)
    test = encode_images(model, test_set, label="test images", **kw)
    train_y = torch.tensor(train_set.labels)[train.index]
    test_y = torch.tensor(test_set.labels)[test.index]
    try:
        metrics = linear_probe(train.features, train_y, test.features, test_y, num_classes=len(test_set.classnames),
                               val_proportion=val_proportion, seed=seed, max_iter=max_iter,
                               weight_decay=weight_decay, classnames=test_set.classnames)
    except ValueError as e:
        raise DataError(f"{train_set.root}: {e}") from None
    n = len(train.index) + len(test.index)
    return make_record(
        model, dataset=test_set.name, task=TASK, metrics={**metrics, "normalized": True},
        data_fingerprint=test_set.fingerprint(), train_fingerprint=train_set.fingerprint(),
        samples=len(test.index), train_samples=len(train.index), skipped=train.skipped + test.skipped,
        efficiency={"image_encode_per_s": n / max(train.encode_seconds + test.encode_seconds, 1e-9),
                    "batch_size": batch_size, "device": device},
    )
