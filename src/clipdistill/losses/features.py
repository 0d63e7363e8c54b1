"""Per-forward feature view shared by all loss terms: normalise, project and gather each tensor once."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import torch
import torch.nn.functional as F

from clipdistill.errors import UserError
from clipdistill.losses.dist import DistContext
from clipdistill.losses.inputs import LossInputs

# s_*: student, normalised, student dim; p_*: student projected to the teacher dim, renormalised;
# t_*: teacher (given normalised, detached). p_masked: the masked-image student features, projected.
KEYS = ("s_img", "s_txt", "p_img", "p_txt", "p_masked", "t_img", "t_txt")


class FeatureView:
    def __init__(
        self,
        inputs: LossInputs,
        ctx: DistContext,
        project_image: Callable[[torch.Tensor], torch.Tensor],
        project_text: Callable[[torch.Tensor], torch.Tensor],
        sigmoid: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        self.inputs = inputs
        self._sigmoid = sigmoid
        self._ctx = ctx
        self._project_image = project_image
        self._project_text = project_text
        self._local: dict[str, torch.Tensor] = {}
        self._global: dict[str, torch.Tensor] = {}

    @cached_property
    def ctx(self) -> DistContext:
        """The context with every rank's row count, learnt on first use: only forwards whose terms gather pay
        the collective (every rank runs the same terms, so every rank asks at the same point)."""
        return self._ctx.sized(self.inputs.batch_size, self.inputs.image_features.device)

    def _make(self, key: str) -> torch.Tensor:
        i = self.inputs
        if key == "s_img":
            return F.normalize(i.image_features, dim=-1)
        if key == "s_txt":
            return F.normalize(i.text_features, dim=-1)
        if key == "p_img":
            return F.normalize(self._project_image(i.image_features), dim=-1)
        if key == "p_txt":
            return F.normalize(self._project_text(i.text_features), dim=-1)
        if key == "p_masked":
            return F.normalize(self._project_image(i.masked_image_features), dim=-1)
        if key == "t_img":
            return i.t_image_features.detach()
        if key == "t_txt":
            return i.t_text_features.detach()
        raise KeyError(f"unknown feature {key!r}; one of {KEYS}")

    def local(self, key: str) -> torch.Tensor:
        if key not in self._local:
            self._local[key] = self._make(key)
        return self._local[key]

    def all(self, key: str) -> torch.Tensor:
        if key not in self._global:
            self._global[key] = self.ctx.gather(self.local(key))
        return self._global[key]

    def logits(self, rows: str, cols: str, scale, local: bool | None = None) -> torch.Tensor:
        """scale * rows @ cols.T; rows are local under local-loss, columns always the gathered batch."""
        local = self.ctx.local_loss if local is None else local
        r = self.local(rows) if local else self.all(rows)
        return scale * r @ self.all(cols).T

    def teacher_scale(self, fixed: float | None, loss: str):
        """A fixed teacher scale from the options, else the teacher's own (`t_logit_scale`)."""
        if fixed is not None:
            return fixed
        if self.inputs.t_logit_scale is None:
            raise UserError(
                f"loss {loss!r} uses the teacher's own logit scale but no t_logit_scale was given"
            )
        return self.inputs.t_logit_scale

    def sigmoid(self, loss: str) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """The student's (scale, bias) for sigmoid logits: the loss-owned pair when the loss holds one (a CLIP
        student), else the student's own (a SigLIP-architecture student)."""
        if self._sigmoid is not None:
            return self._sigmoid
        if self.inputs.logit_bias is None:
            raise UserError(f"loss {loss!r} needs sigmoid logits, but the student has no logit bias and the loss "
                            "was built for a student with one")
        return self.inputs.logit_scale, self.inputs.logit_bias

    def labels(self, local: bool | None = None) -> torch.Tensor:
        local = self.ctx.local_loss if local is None else local
        return self.ctx.labels(self.inputs.batch_size, self.inputs.image_features.device, local)


def contrastive_ce(logits_ab: torch.Tensor, logits_ba: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: mean of the two cross-entropies."""
    return (F.cross_entropy(logits_ab, labels) + F.cross_entropy(logits_ba, labels)) / 2


def distill_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(softmax(teacher/T) || softmax(student/T)) * T^2, batchmean, teacher detached (CLIP-KD DistillKL)."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits.detach() / temperature, dim=1)
    return F.kl_div(log_p_s, p_t, reduction="batchmean") * temperature**2


def soft_ce(student_logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """-(p_target * log_softmax(student)).sum(1).mean(): soft-target cross-entropy (= KL + const)."""
    return -(target_probs.detach() * F.log_softmax(student_logits, dim=1)).sum(dim=1).mean()
