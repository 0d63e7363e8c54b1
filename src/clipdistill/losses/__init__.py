"""The distillation loss family: one small `nn.Module` per term, a registry, weighted composition.

    from clipdistill.losses import LossInput, LossInputs, build_loss
    loss = build_loss({"clip": {}, "crd": {}, "fd": {}, "icl": {}}, student_dim=256, teacher_dim=512,
                      provided={LossInput.TEACHER})   # a term needing an input not provided is refused here
    terms = loss(LossInputs(img, txt, scale, t_img, t_txt, t_scale))   # {"loss", "clip", "crd", ...}

See docs/losses.md for formulas, sources and which terms are reconstructions.
"""

# importing the term modules registers them
from clipdistill.losses import cluster, contrastive, fd, gd, logit_kd, mfd, relational, siglip  # noqa: F401
from clipdistill.losses.base import LOSSES, DistillLoss, LossDims, LossOptions, register_loss
from clipdistill.losses.dist import DistContext
from clipdistill.losses.inputs import LossInput, LossInputs
from clipdistill.losses.mfd import masked_encode_image
from clipdistill.losses.weighted import WeightedLoss, build_loss

__all__ = [
    "LOSSES",
    "DistContext",
    "DistillLoss",
    "LossDims",
    "LossInput",
    "LossInputs",
    "LossOptions",
    "WeightedLoss",
    "build_loss",
    "masked_encode_image",
    "register_loss",
]
