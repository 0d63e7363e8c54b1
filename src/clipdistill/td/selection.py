"""Per-instance token selection for CLIP-TD — OUR RECONSTRUCTION; the paper's rule is unpublished
(docs/reconstruction.md#td-selection). Three interchangeable rules, each returning boolean masks of the tokens
to distil:

- `teacher_relevance`: top-k image patches by CLIP similarity to the paired text, top-k text tokens by
  CLIP similarity to the image (teacher features, no gradient);
- `student_attention`: top-k tokens of each modality by the student's last-layer [CLS] attention (detached);
- `all`: every valid token (the "naive distillation" baseline).

k is a fraction of each row's valid tokens, rounded up, at least one token.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from clipdistill.td.contracts import TeacherSignals

SelectionRule = Literal["teacher_relevance", "student_attention", "all"]


def topk_mask(scores: torch.Tensor, valid: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean [B, T]: per row, the ceil(fraction * #valid) highest-scoring valid positions (>= 1)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"selection fraction must be in (0, 1], got {fraction}")
    n_valid = valid.sum(1)
    k = torch.clamp(torch.ceil(n_valid.float() * fraction - 1e-6).long(), min=1)
    k = torch.minimum(k, n_valid)
    masked = scores.detach().float().masked_fill(~valid, float("-inf"))
    order = masked.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return (rank < k[:, None]) & valid


def relevance_scores(
    patch_t: torch.Tensor, text_pooled_t: torch.Tensor, tok_t: torch.Tensor, image_pooled_t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine of each teacher patch with the teacher text embedding, and of each text token with the image."""
    img_rel = torch.einsum("bnd,bd->bn", F.normalize(patch_t, dim=-1), F.normalize(text_pooled_t, dim=-1))
    txt_rel = torch.einsum("bld,bd->bl", F.normalize(tok_t, dim=-1), F.normalize(image_pooled_t, dim=-1))
    return img_rel, txt_rel


def select_tokens(
    rule: SelectionRule,
    *,
    image_valid: torch.Tensor,
    text_valid: torch.Tensor,
    image_fraction: float,
    text_fraction: float,
    teacher: TeacherSignals | None = None,
    cls_attention: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(image mask [B, N], text mask [B, L]) of the tokens to distil.

    teacher: its patch, text token and pooled features (rule A);
    cls_attention: [B, N + L] attention of [CLS] to the image then the text tokens (rule B).
    """
    if rule == "all":
        return image_valid.clone(), text_valid.clone()
    if rule == "teacher_relevance":
        if teacher is None:
            raise ValueError("teacher_relevance selection needs teacher features")
        img_s, txt_s = relevance_scores(teacher.patch, teacher.text_pooled, teacher.tokens, teacher.image_pooled)
    elif rule == "student_attention":
        if cls_attention is None:
            raise ValueError("student_attention selection needs the student's [CLS] attention")
        n = image_valid.shape[1]
        img_s, txt_s = cls_attention[:, :n], cls_attention[:, n:]
    else:
        raise ValueError(f"unknown selection rule {rule!r}")
    return topk_mask(img_s, image_valid, image_fraction), topk_mask(txt_s, text_valid, text_fraction)


def count_to_keep(n_valid: int, fraction: float) -> int:
    """How many of n_valid tokens a fraction keeps (documented rounding: up, at least one)."""
    return max(1, min(n_valid, math.ceil(n_valid * fraction - 1e-6)))
