"""CLIP-CID cluster discrimination — OUR RECONSTRUCTION; the paper's formula is unpublished
(docs/reconstruction.md#cid-cluster).

Built from the same group's UNICOM machinery: an ArcFace margin softmax of the projected student image
embedding against the K teacher k-means centres, with PartialFC-style sampling of negative centres so K
can be large. The centres are not sharded across ranks (every rank holds all K).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from clipdistill.errors import UserError
from clipdistill.losses.base import DistillLoss, LossDims, LossOptions, register_loss
from clipdistill.losses.features import P_IMG, FeatureView
from clipdistill.losses.inputs import LossInput


def arcface_logits(cos: torch.Tensor, labels: torch.Tensor, margin: float, scale: float) -> torch.Tensor:
    """scale * cos, with the target column replaced by cos(theta_y + margin).

    Where theta_y + margin would pass pi the insightface fallback cos_y - margin * sin(margin) keeps the
    target logit monotone in theta."""
    target = cos.gather(1, labels[:, None]).clamp(-1 + 1e-7, 1 - 1e-7)
    sin = torch.sqrt(1 - target**2)
    with_margin = target * math.cos(margin) - sin * math.sin(margin)
    fallback = target - margin * math.sin(margin)
    target_logit = torch.where(target > math.cos(math.pi - margin), with_margin, fallback)
    return cos.scatter(1, labels[:, None], target_logit) * scale


def sample_classes(
    labels: torch.Tensor, num_classes: int, sample_rate: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """PartialFC sampling: all positive classes + random negatives up to int(rate * K) classes in total.

    Returns (sorted class ids used, labels re-indexed into them)."""
    positives = labels.unique()
    n_total = max(positives.numel(), int(sample_rate * num_classes))
    if n_total >= num_classes:
        return torch.arange(num_classes, device=labels.device), labels
    score = torch.rand(num_classes, generator=generator).to(labels.device)
    score[positives] = 2.0  # positives always win the top-k
    chosen = score.topk(n_total).indices.sort().values
    return chosen, torch.searchsorted(chosen, labels)


class ClusterOptions(LossOptions):
    margin: float = Field(0.5, ge=0.0, lt=math.pi)
    scale: float = Field(32.0, gt=0.0)
    sample_rate: float = Field(1.0, gt=0.0, le=1.0)
    learnable_centres: bool = False


@register_loss("cluster")
class ClusterDiscrimination(DistillLoss):
    Options = ClusterOptions
    needs = frozenset({LossInput.CLUSTER_LABELS})
    projects = True

    def __init__(self, opts: ClusterOptions, dims: LossDims):
        super().__init__(opts, dims)
        centres = dims.centroids
        if centres is None:
            if not opts.learnable_centres or not dims.num_clusters:
                raise UserError(
                    "loss 'cluster' needs the teacher's k-means centres (from `balance`), "
                    "or learnable_centres: true with num_clusters"
                )
            centres = torch.randn(dims.num_clusters, dims.teacher or dims.student)
        centres = centres.detach().float().clone()
        want = dims.teacher or dims.student
        if centres.ndim != 2 or centres.shape[1] != want:
            raise UserError(
                f"loss 'cluster': centres must be [K, {want}] (teacher dim), got {list(centres.shape)}"
            )
        if dims.num_clusters is not None and centres.shape[0] != dims.num_clusters:
            raise UserError(
                f"loss 'cluster': {centres.shape[0]} centres but num_clusters={dims.num_clusters}"
            )
        if opts.learnable_centres:
            self.centres = torch.nn.Parameter(centres)
        else:
            self.register_buffer("centres", centres)

    def forward(self, f: FeatureView) -> torch.Tensor:
        labels = f.inputs.cluster_labels
        k = self.centres.shape[0]
        if labels.min() < 0 or labels.max() >= k:
            raise UserError(
                f"loss 'cluster': labels must be in [0, {k}), got [{labels.min()}, {labels.max()}]"
            )
        chosen, y = sample_classes(labels, k, self.opts.sample_rate)
        cos = f.local(P_IMG) @ F.normalize(self.centres[chosen], dim=-1).T
        return F.cross_entropy(arcface_logits(cos, y, self.opts.margin, self.opts.scale), y)
