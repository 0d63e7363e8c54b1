"""CLIP-KD gradient distillation: match the analytic InfoNCE gradients w.r.t. the embeddings
(docs/reconstruction.md#kd-gd)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipdistill.losses.base import DistillLoss, LossOptions, register_loss
from clipdistill.losses.features import P_IMG, P_TXT, T_IMG, T_TXT, FeatureView
from clipdistill.losses.inputs import LossInput


def infonce_grads(
    p: torch.Tensor, k: torch.Tensor, logits_mult, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of mean CE(logits_mult * p @ k.T, labels) w.r.t. p and k: ((P-Y) k, (P-Y)^T p) * mult / B."""
    P = torch.softmax(logits_mult * p @ k.T, dim=1)
    R = P - F.one_hot(labels, num_classes=k.shape[0]).to(P.dtype)
    n = p.shape[0]
    return R @ k * logits_mult / n, R.T @ p * logits_mult / n


class GDOptions(LossOptions):
    weight: float = 1e8
    # False reproduces the released code, which passes the exp'd logit scale in the `tau` slot and so
    # divides by it (logits = sim / scale). True uses logits = sim * scale, the real InfoNCE gradient.
    corrected_tau: bool = False


@register_loss("gd")
class GradientDistillation(DistillLoss):
    """Sum of four MSEs: image-anchor and text-key gradients for image->text, and the same for text->image,
    student (projected) vs teacher (detached). Always on the gathered batch (key gradients sum over all
    anchors), whatever `local_loss` says."""

    Options = GDOptions
    needs = frozenset({LossInput.TEACHER})
    projects = True

    def _mult(self, scale):
        return scale if self.opts.corrected_tau else 1.0 / scale

    def forward(self, f: FeatureView) -> torch.Tensor:
        y = f.labels(local=False)
        s, ts = self._mult(f.inputs.logit_scale), self._mult(f.teacher_scale(None, self.name))
        loss = 0.0
        # (teacher anchor, teacher key, student anchor, student key): image->text, then text->image
        for t_anchor, t_key, s_anchor, s_key in ((T_IMG, T_TXT, P_IMG, P_TXT), (T_TXT, T_IMG, P_TXT, P_IMG)):
            with torch.no_grad():
                tp, tk = infonce_grads(f.all(t_anchor), f.all(t_key), ts, y)
            sp, sk = infonce_grads(f.all(s_anchor), f.all(s_key), s, y)
            loss = loss + F.mse_loss(sp, tp) + F.mse_loss(sk, tk)
        return loss
