"""CLIP-KD feature distillation: MSE between projected+renormalised student and teacher embeddings
(docs/reconstruction.md#kd-fd)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipdistill.losses.base import DistillLoss, LossOptions, register_loss
from clipdistill.losses.features import P_IMG, P_TXT, T_IMG, T_TXT, FeatureView
from clipdistill.losses.inputs import LossInput


class FDOptions(LossOptions):
    weight: float = 2000.0  # F.mse_loss averages over B*D elements, hence CLIP-KD's large weight


@register_loss("fd")
class FeatureDistillation(DistillLoss):
    """MSE(norm(P v_s), v_t) + MSE(norm(P t_s), t_t), mean reduction. Per-sample, so no gathering: the
    DDP gradient average of per-rank means is the global mean."""

    Options = FDOptions
    needs = frozenset({LossInput.TEACHER})
    projects = True

    def forward(self, f: FeatureView) -> torch.Tensor:
        return F.mse_loss(f.local(P_IMG), f.local(T_IMG)) + F.mse_loss(f.local(P_TXT), f.local(T_TXT))
