"""InfoNCE-family terms: the student's own CLIP loss and the teacher-anchored contrastive terms."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from clipdistill.losses.base import RAW_SCALE_INIT, DistillLoss, LossDims, LossOptions, register_loss
from clipdistill.losses.features import (
    P_IMG,
    P_TXT,
    S_IMG,
    S_NEG,
    S_TXT,
    T_IMG,
    T_TXT,
    FeatureView,
    contrastive_ce,
)
from clipdistill.losses.inputs import LossInput


@register_loss("clip")
class ClipContrastive(DistillLoss):
    """Symmetric InfoNCE of the student's own image-text pairs, with its own logit scale
    (docs/reconstruction.md#kd-clip)."""

    def forward(self, f: FeatureView) -> torch.Tensor:
        s = f.inputs.logit_scale
        return contrastive_ce(f.logits(S_IMG, S_TXT, s), f.logits(S_TXT, S_IMG, s), f.labels())


@register_loss("negclip")
class NegClip(DistillLoss):
    """The student's CLIP loss with a hard negative caption per pair (NegCLIP, Yuksekgonul et al., ICLR 2023):
    image->text over the batch's captions and every pair's one-attribute swap, text->image as in `clip` (a
    negative caption has no image), as the released NegCLIP loss (vinid/neg_clip e680f8e) computes it. Its
    nearest-neighbour negative images are not made (docs/reconstruction.md#negclip)."""

    needs = frozenset({LossInput.HARD_NEGATIVES})

    def forward(self, f: FeatureView) -> torch.Tensor:
        s = f.inputs.logit_scale
        negatives = f.logits(S_IMG, S_NEG, s)
        # pairs whose caption names no attribute have no negative: their column is left out of the softmax
        has = f.ctx.gather(f.inputs.negative_mask.to(negatives.dtype)) > 0
        negatives = negatives.masked_fill(~has[None, :], float("-inf"))
        image_to_text = torch.cat([f.logits(S_IMG, S_TXT, s), negatives], dim=1)
        return contrastive_ce(image_to_text, f.logits(S_TXT, S_IMG, s), f.labels())


class RawScaleOptions(LossOptions):
    init_scale: float = RAW_SCALE_INIT
    learnable: bool = True


@register_loss("icl")
class InteractiveContrastive(DistillLoss):
    """CLIP-KD ICL: projected student image vs teacher texts and student text vs teacher images
    (docs/reconstruction.md#kd-icl).

    As in the released code the scale is a learnable scalar initialised to log(1/0.07) ~= 2.66 and used
    *raw* (not exponentiated)."""

    Options = RawScaleOptions
    needs = frozenset({LossInput.TEACHER})
    projects = True

    def __init__(self, opts: RawScaleOptions, dims: LossDims):
        super().__init__(opts, dims)
        self.scale_tensor("cross_scale", opts.init_scale, opts.learnable)

    def forward(self, f: FeatureView) -> torch.Tensor:
        c = self.cross_scale
        return contrastive_ce(f.logits(P_IMG, T_TXT, c), f.logits(P_TXT, T_IMG, c), f.labels())


class InstanceOptions(LossOptions):
    scale: float = 1 / 0.07
    learnable: bool = True
    max_scale: float = 100.0


@register_loss("instance")
class InstanceDiscrimination(DistillLoss):
    """CLIP-CID instance discrimination — OUR RECONSTRUCTION; the paper's formula is unpublished
    (docs/reconstruction.md#cid-instance).

    Same form as ICL, but the scale follows the CLIP convention: stored as log(scale), used as
    exp(.) clamped at `max_scale`, initialised to `scale` (1/0.07)."""

    Options = InstanceOptions
    needs = frozenset({LossInput.TEACHER})
    projects = True

    def __init__(self, opts: InstanceOptions, dims: LossDims):
        super().__init__(opts, dims)
        self.scale_tensor("log_scale", math.log(opts.scale), opts.learnable)

    def forward(self, f: FeatureView) -> torch.Tensor:
        s = self.log_scale.exp().clamp(max=self.opts.max_scale)
        return contrastive_ce(f.logits(P_IMG, T_TXT, s), f.logits(P_TXT, T_IMG, s), f.labels())


@register_loss("afd")
class AugmentedFeatureDistillation(DistillLoss):
    """CLIP-KD AFD (docs/reconstruction.md#kd-afd): fuse student and teacher embeddings with
    Linear(D_s+D_t -> D_s) per modality, then InfoNCE on the fused space with a raw learnable scale
    (init log(1/0.07)).

    The fused student input is the *unprojected* normalised student embedding so the layer really is
    D_s+D_t wide; the released code feeds the projected one, which only runs when D_s == D_t (where the
    two readings coincide)."""

    Options = RawScaleOptions
    needs = frozenset({LossInput.TEACHER})

    def __init__(self, opts: RawScaleOptions, dims: LossDims):
        super().__init__(opts, dims)
        width = dims.student + (dims.teacher or dims.student)
        self.image_fusion = nn.Linear(width, dims.student)
        self.text_fusion = nn.Linear(width, dims.student)
        self.scale_tensor("fusion_scale", opts.init_scale, opts.learnable)

    def forward(self, f: FeatureView) -> torch.Tensor:
        v = F.normalize(self.image_fusion(torch.cat([f.all(S_IMG), f.all(T_IMG)], dim=1)), dim=-1)
        t = F.normalize(self.text_fusion(torch.cat([f.all(S_TXT), f.all(T_TXT)], dim=1)), dim=-1)
        logits = self.fusion_scale * v @ t.T
        return contrastive_ce(logits, logits.T, f.labels(local=False))
