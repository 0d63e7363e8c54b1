"""CLIP-KD masked feature distillation (docs/reconstruction.md#kd-mfd), with the masking really applied.

In the released CLIP-KD code `encode_image` computes the masked forward and then overwrites it with the
unmasked one, so MFD == FD there. Here the task encodes a masked copy of the image with
`masked_encode_image` and passes it as `LossInputs.masked_image_features`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clipdistill.errors import UserError
from clipdistill.losses.base import DistillLoss, LossOptions, register_loss
from clipdistill.losses.features import P_MASKED, P_TXT, T_IMG, T_TXT, FeatureView
from clipdistill.losses.inputs import LossInput
from clipdistill.zoo.openclip_internals import encode_kept_patches, vision_transformer


def keep_indices(
    batch: int, num_patches: int, mask_ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """MAE-style per-sample random subset of patch indices, [B, int(N * (1 - ratio))] (at least 1)."""
    if not 0.0 <= mask_ratio < 1.0:
        raise UserError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    n_keep = max(1, int(num_patches * (1 - mask_ratio)))
    device = generator.device if generator is not None else "cpu"
    noise = torch.rand(batch, num_patches, generator=generator, device=device)
    return noise.argsort(dim=1)[:, :n_keep]


def masked_encode_image(
    model: nn.Module, images: torch.Tensor, mask_ratio: float = 0.75, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Unnormalised image embeddings [B, D] computed from a random (1 - mask_ratio) subset of patch tokens.

    Tokens are dropped after the positional embedding (so kept tokens keep their position) and before the
    transformer; the class token is always kept (`zoo.openclip_internals.encode_kept_patches`).
    """
    v = vision_transformer(model)
    keep = keep_indices(images.shape[0], v.grid_size[0] * v.grid_size[1], mask_ratio, generator)
    return encode_kept_patches(v, images, keep)


class MFDOptions(LossOptions):
    weight: float = 2000.0
    # CLIP-KD's MFD run keeps the text term of FD; turn off when `fd` is also in the loss spec.
    include_text: bool = True


@register_loss("mfd")
class MaskedFeatureDistillation(DistillLoss):
    """FD with the student image branch on the masked image: MSE(norm(P v_s^masked), v_t) [+ text FD]."""

    Options = MFDOptions
    needs = frozenset({LossInput.TEACHER, LossInput.MASKED_IMAGE})
    projects = True

    def forward(self, f: FeatureView) -> torch.Tensor:
        loss = F.mse_loss(f.local(P_MASKED), f.local(T_IMG))
        if self.opts.include_text:
            loss = loss + F.mse_loss(f.local(P_TXT), f.local(T_TXT))
        return loss
