"""The CLIP-TD objective — OUR RECONSTRUCTION (docs/reconstruction.md#td-objective), never "the paper's exact method":

    total = task + lambda * [ sum_b w_v[b] * L_v[b] + w_t[b] * L_t[b] + pooled_weight * w[b] * L_g[b] ] / B

L_v / L_t average a feature distance over the *selected* image / text tokens of instance b between the
student's hidden state (through a projection head dropped after training) and the teacher's token feature;
L_g is the optional pooled term between the projected [CLS] and norm(teacher image + teacher text).
Weights arrive detached (weighting.py). Each term is returned by name so the loop logs it.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from clipdistill.td.contracts import StudentOutput, TeacherSignals

Distance = Literal["cosine", "mse", "smooth_l1"]


def feature_distance(student: torch.Tensor, teacher: torch.Tensor, kind: Distance) -> torch.Tensor:
    """Per-token distance [...]: 1 - cos, or MSE / smooth-L1 between L2-normalised vectors (so the
    teacher's feature scale, which differs between CLIPs, does not set the loss scale)."""
    if kind == "cosine":
        return 1 - F.cosine_similarity(student, teacher.to(student.dtype), dim=-1)
    s, t = F.normalize(student, dim=-1), F.normalize(teacher.to(student.dtype), dim=-1)
    if kind == "mse":
        return (s - t).pow(2).sum(-1)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(s, t, reduction="none", beta=0.1).sum(-1)
    raise ValueError(f"unknown distance {kind!r} (cosine | mse | smooth_l1)")


def masked_token_loss(dist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B]: mean distance over each row's selected tokens (0 for rows with none selected)."""
    m = mask.to(dist.dtype)
    return (dist * m).sum(1) / m.sum(1).clamp(min=1)


class DistillHeads(nn.Module):
    """Student-width -> teacher-space projections; trained with the student, dropped at export."""

    def __init__(self, width: int, teacher_dim: int):
        super().__init__()
        self.image = nn.Linear(width, teacher_dim)
        self.text = nn.Linear(width, teacher_dim)
        self.pooled = nn.Linear(width, teacher_dim)


def distillation_terms(
    heads: DistillHeads,
    student: StudentOutput,
    teacher: TeacherSignals,
    image_sel: torch.Tensor,
    text_sel: torch.Tensor,
    weights: torch.Tensor,
    modality: torch.Tensor | None,
    *,
    distance: Distance,
    pooled_weight: float,
) -> dict[str, torch.Tensor]:
    """Weighted distillation terms (scalars): distill_image, distill_text, distill_pooled, distill.

    student: one row per instance (its cls, image_tokens and text_tokens are read); teacher: aligned to the
    student's positions.
    """
    w_v = weights if modality is None else weights * modality[:, 0]
    w_t = weights if modality is None else weights * modality[:, 1]
    d_v = feature_distance(heads.image(student.image_tokens), teacher.patch, distance)
    d_t = feature_distance(heads.text(student.text_tokens), teacher.tokens, distance)
    l_v = (w_v * masked_token_loss(d_v, image_sel)).mean()
    l_t = (w_t * masked_token_loss(d_t, text_sel)).mean()
    terms = {"distill_image": l_v, "distill_text": l_t}
    total = l_v + l_t
    if pooled_weight > 0:
        target = F.normalize(teacher.image_pooled, dim=-1) + F.normalize(teacher.text_pooled, dim=-1)
        l_g = (weights * feature_distance(heads.pooled(student.cls), target, distance)).mean()
        terms["distill_pooled"] = l_g
        total = total + pooled_weight * l_g
    terms["distill"] = total
    return terms
