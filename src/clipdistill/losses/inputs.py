"""What a training step hands to the loss: student outputs, teacher outputs, optional extras."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
    # MobileCLIP-style teacher ensemble: one (image, text) pair of normalised features per member.
    t_ensemble: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    # sigmoid-loss (SigLIP) models: the student's learnt bias (None for a CLIP student), and the teacher's own
    # (scale, bias), which together give its pairwise probabilities sigmoid(scale * cos + bias). A fixed teacher
    # scale (`t_logit_scale`, TinyCLIP's 50) is a softmax convention and never replaces the scale paired with the bias.
    logit_bias: torch.Tensor | float | None = None
    t_sigmoid: tuple[torch.Tensor | float, torch.Tensor | float] | None = None

    @property
    def has_teacher(self) -> bool:
        return self.t_image_features is not None and self.t_text_features is not None

    @property
    def batch_size(self) -> int:
        return self.image_features.shape[0]
