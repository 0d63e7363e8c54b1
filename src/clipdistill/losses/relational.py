"""CLIP-RD relational terms: vertical (within a modality) and cross (across modalities) KL
(docs/reconstruction.md#clip-rd)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipdistill.losses.base import DistillLoss, LossDims, register_loss
from clipdistill.losses.contrastive import RawScaleOptions
from clipdistill.losses.features import P_IMG, P_TXT, T_IMG, T_TXT, FeatureView, distill_kl
from clipdistill.losses.inputs import LossInput


@register_loss("vrd")
class VerticalRelationalDistillation(DistillLoss):
    """VRD with its two CE terms. With raw learnable scales a_v, a_t (init log(1/0.07)):
    TS_m = a_m T_m S_m^T, ST_m = a_m S_m T_m^T for m in {image, text};
    vrd_kl = (KL(p(TS_t) || p(TS_v)) + KL(p(ST_t) || p(ST_v))) / 2 (text side detached as the target);
    vrd_ce_img / vrd_ce_txt = symmetric CE of TS_m and ST_m against the diagonal.
    The value is their sum, as CLIP-RD weights them with one coefficient."""

    Options = RawScaleOptions
    needs = frozenset({LossInput.TEACHER})
    projects = True

    def __init__(self, opts: RawScaleOptions, dims: LossDims):
        super().__init__(opts, dims)
        self.scale_tensor("image_scale", opts.init_scale, opts.learnable)
        self.scale_tensor("text_scale", opts.init_scale, opts.learnable)

    def forward(self, f: FeatureView) -> dict[str, torch.Tensor]:
        y = f.labels()
        ts_v, st_v = (
            f.logits(T_IMG, P_IMG, self.image_scale),
            f.logits(P_IMG, T_IMG, self.image_scale),
        )
        ts_t, st_t = f.logits(T_TXT, P_TXT, self.text_scale), f.logits(P_TXT, T_TXT, self.text_scale)
        kl = (distill_kl(ts_v, ts_t) + distill_kl(st_v, st_t)) / 2
        ce_img = (F.cross_entropy(ts_v, y) + F.cross_entropy(st_v, y)) / 2
        ce_txt = (F.cross_entropy(ts_t, y) + F.cross_entropy(st_t, y)) / 2
        return {"vrd": kl + ce_img + ce_txt, "vrd_kl": kl, "vrd_ce_img": ce_img, "vrd_ce_txt": ce_txt}


@register_loss("xrd")
class CrossRelationalDistillation(DistillLoss):
    """XRD with a raw learnable scale c: X1 = c T_v S_t^T, X2 = c T_t S_v^T, X3 = c S_v T_t^T,
    X4 = c S_t T_v^T; (KL(p(X2)||p(X1)) + KL(p(X1)||p(X2)) + KL(p(X3)||p(X4)) + KL(p(X4)||p(X3))) / 4,
    each target detached. CLIP-RD shares c with ICL; here the term owns its scale."""

    Options = RawScaleOptions
    needs = frozenset({LossInput.TEACHER})
    projects = True

    def __init__(self, opts: RawScaleOptions, dims: LossDims):
        super().__init__(opts, dims)
        self.scale_tensor("cross_scale", opts.init_scale, opts.learnable)

    def forward(self, f: FeatureView) -> torch.Tensor:
        c = self.cross_scale
        x1, x2 = f.logits(T_IMG, P_TXT, c), f.logits(T_TXT, P_IMG, c)
        x3, x4 = f.logits(P_IMG, T_TXT, c), f.logits(P_TXT, T_IMG, c)
        return (distill_kl(x1, x2) + distill_kl(x2, x1) + distill_kl(x4, x3) + distill_kl(x3, x4)) / 4
