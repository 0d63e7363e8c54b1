"""The one adapter that reaches into open_clip's `VisionTransformer` internals (open_clip 3.3.0,
src/open_clip/transformer.py: `VisionTransformer._embeds`, `._pool`, `.proj`), for forwards open_clip's public
API does not offer. Everything else uses `ClipModel`'s public methods; `tests/test_openclip_internals.py`
checks this adapter against open_clip's own `forward` so an open_clip upgrade that moves these parts fails there.
"""

from __future__ import annotations

import torch
from torch import nn

from clipdistill.errors import UserError

_NEEDED = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "_pool", "proj")


def vision_transformer(model: nn.Module) -> nn.Module:
    """The open_clip `VisionTransformer` of a zoo `ClipModel`, an open_clip CLIP, or that tower itself."""
    m = getattr(model, "inner", model)
    v = getattr(m, "visual", m)
    if not all(hasattr(v, a) for a in _NEEDED):
        raise UserError(f"this needs an open_clip VisionTransformer image tower, got {type(v).__name__}")
    return v


def encode_kept_patches(model: nn.Module, images: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Unnormalised image embeddings [B, D] from the class token and the patch tokens `keep` [B, K] names
    (indices into the grid, row-major), each with its own positional embedding: open_clip's
    `VisionTransformer.forward` with the tokens dropped after the positional embedding and before `ln_pre`
    (where its `patch_dropout` drops them). The model's own patch dropout is bypassed: `keep` replaces it.
    `keep=None` keeps every patch, which is open_clip's forward in eval mode."""
    v = vision_transformer(model)
    x = v.conv1(images)  # [B, width, grid, grid]
    b, width = x.shape[:2]
    x = x.reshape(b, width, -1).permute(0, 2, 1)
    pos = v.positional_embedding.to(x.dtype)
    x = x + pos[1:]
    if keep is not None:
        x = torch.gather(x, 1, keep.to(x.device).unsqueeze(-1).expand(-1, -1, width))
    cls = (v.class_embedding.to(x.dtype) + pos[0]).expand(b, 1, width)
    x = v.ln_pre(torch.cat([cls, x], dim=1))
    pooled, _ = v._pool(v.transformer(x))
    return pooled @ v.proj if v.proj is not None else pooled
