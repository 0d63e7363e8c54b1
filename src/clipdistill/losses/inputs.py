"""What a training step hands to the loss: student outputs, teacher outputs, optional extras."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import torch


class LossInput(StrEnum):
    """An input a loss term needs beyond the student's own features (`DistillLoss.needs`). The caller of
    `build_loss` says which it will supply, and a term needing another is refused there."""

    TEACHER = "teacher"  # one (image, text) pair of teacher features
    TEACHER_ENSEMBLE = "teacher_ensemble"  # every member's features (`LossInputs.t_ensemble`)
    MASKED_IMAGE = "masked_image"  # student features of a masked image
    CLUSTER_LABELS = "cluster_labels"  # k-means pseudo-label of each pair
    HARD_NEGATIVES = "hard_negatives"  # student features of each pair's hard negative caption

    @property
    def fields(self) -> tuple[str, ...]:
        """The `LossInputs` fields that carry it."""
        return _FIELDS[self]

    @property
    def how(self) -> str:
        """What it is and how a distill config provides it, for the error naming a missing one."""
        return _HOW[self]


_FIELDS = {
    LossInput.TEACHER: ("t_image_features", "t_text_features"),
    LossInput.TEACHER_ENSEMBLE: ("t_ensemble",),
    LossInput.MASKED_IMAGE: ("masked_image_features",),
    LossInput.CLUSTER_LABELS: ("cluster_labels",),
    LossInput.HARD_NEGATIVES: ("negative_text_features", "negative_mask"),
}
_HOW = {
    LossInput.TEACHER: "teacher features: set teacher.models (mode online) or teacher.features (mode cached)",
    LossInput.TEACHER_ENSEMBLE: "a teacher ensemble: set teacher.mode=ensemble with several teacher.models",
    LossInput.MASKED_IMAGE: "student features of a masked image: computed by the distill task (mfd)",
    LossInput.CLUSTER_LABELS: "cluster labels and centres: set data.keep to a `clipdistill balance` output",
    LossInput.HARD_NEGATIVES: "a hard negative caption per pair: set data.hard_negatives=swap",
}


@dataclass
class LossInputs:
    """One (micro-)batch of features on this rank.

    Student features are *unnormalised* and in the student's joint dim (what `ClipModel.forward` returns);
    teacher features are L2-normalised and in the teacher's dim. Scales are already exponentiated.
    """

    image_features: torch.Tensor
    text_features: torch.Tensor
    logit_scale: torch.Tensor | float
    t_image_features: torch.Tensor | None = None
    t_text_features: torch.Tensor | None = None
    t_logit_scale: torch.Tensor | float | None = None
    # k-means pseudo-label of each pair (from `balance`), for the CLIP-CID cluster loss.
    cluster_labels: torch.Tensor | None = None
    # student image features of the MAE-style masked image (see `losses.mfd.masked_encode_image`).
    masked_image_features: torch.Tensor | None = None
    # student text features of each pair's hard negative caption (`data.hard_negatives`), and which pairs have
    # one (bool [B]: a caption naming no attribute has none, is not encoded, and its row is zeros)
    negative_text_features: torch.Tensor | None = None
    negative_mask: torch.Tensor | None = None
    # MobileCLIP-style teacher ensemble: one (image, text) pair of normalised features per member.
    t_ensemble: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    # sigmoid-loss (SigLIP) models: the student's learnt bias (None for a CLIP student), and the teacher's own
    # (scale, bias), which together give its pairwise probabilities sigmoid(scale * cos + bias). A fixed teacher
    # scale (`t_logit_scale`, TinyCLIP's 50) is a softmax convention and never replaces the scale paired with the bias.
    logit_bias: torch.Tensor | float | None = None
    t_sigmoid: tuple[torch.Tensor | float, torch.Tensor | float] | None = None

    def provided(self) -> frozenset[LossInput]:
        """The inputs these features carry (every field of each not None)."""
        return frozenset(i for i in LossInput if all(getattr(self, f) is not None for f in i.fields))

    @property
    def has_teacher(self) -> bool:
        return self.t_image_features is not None and self.t_text_features is not None

    @property
    def batch_size(self) -> int:
        return self.image_features.shape[0]
