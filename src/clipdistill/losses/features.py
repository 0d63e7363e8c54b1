"""Per-forward feature view shared by all loss terms: normalise, project and gather each tensor once."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from functools import cached_property

import torch
import torch.nn.functional as F

from clipdistill.errors import UserError
from clipdistill.losses.dist import DistContext
from clipdistill.losses.inputs import LossInput, LossInputs


class Feature(Enum):
    """A feature a loss term reads through `FeatureView`. S_*: the student's, normalised, in the student dim;
    P_*: the student's projected to the teacher dim and renormalised (P_MASKED: of the masked image); T_*: the
    teacher's (given normalised), detached; S_NEG: the student's features of each pair's hard negative caption,
    normalised. A plain Enum, so a string is never taken for a member."""

    S_IMG = "s_img"
    S_TXT = "s_txt"
    P_IMG = "p_img"
    P_TXT = "p_txt"
    P_MASKED = "p_masked"
    T_IMG = "t_img"
    T_TXT = "t_txt"
    S_NEG = "s_neg"

    @property
    def input(self) -> LossInput | None:
        """The `LossInput` that carries it; None for the student's own features, which every call has."""
        return _INPUT.get(self)


_INPUT = {
    Feature.P_MASKED: LossInput.MASKED_IMAGE,
    Feature.T_IMG: LossInput.TEACHER,
    Feature.T_TXT: LossInput.TEACHER,
    Feature.S_NEG: LossInput.HARD_NEGATIVES,
}

# Terms import the features they read by these names, so a misspelt one fails when its module is imported.
S_IMG = Feature.S_IMG
S_TXT = Feature.S_TXT
P_IMG = Feature.P_IMG
P_TXT = Feature.P_TXT
P_MASKED = Feature.P_MASKED
T_IMG = Feature.T_IMG
T_TXT = Feature.T_TXT
S_NEG = Feature.S_NEG


class FeatureView:
    """What every term of one forward reads: each `Feature` made once (`local`) and gathered across ranks once
    (`all`), plus the logits, labels and scales built from them."""

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
        self._local: dict[Feature, torch.Tensor] = {}
        self._global: dict[Feature, torch.Tensor] = {}

    @cached_property
    def ctx(self) -> DistContext:
        """The context with every rank's row count, learnt on first use: only forwards whose terms gather pay
        the collective (every rank runs the same terms, so every rank asks at the same point)."""
        return self._ctx.sized(self.inputs.batch_size, self.inputs.image_features.device)

    def _make(self, feature: Feature) -> torch.Tensor:
        if not isinstance(feature, Feature):
            raise TypeError(f"features are selected by Feature members, got {feature!r}")
        i, need = self.inputs, feature.input
        if need is not None and (missing := [f for f in need.fields if getattr(i, f) is None]):
            # a term reading beyond its declared `needs`, or a caller that declared an input it did not pass
            raise UserError(f"feature {feature.value} needs {need} ({need.how}); missing: {', '.join(missing)}")
        match feature:
            case Feature.S_IMG:
                return F.normalize(i.image_features, dim=-1)
            case Feature.S_TXT:
                return F.normalize(i.text_features, dim=-1)
            case Feature.P_IMG:
                return F.normalize(self._project_image(i.image_features), dim=-1)
            case Feature.P_TXT:
                return F.normalize(self._project_text(i.text_features), dim=-1)
            case Feature.P_MASKED:
                return F.normalize(self._project_image(i.masked_image_features), dim=-1)
            case Feature.T_IMG:
                return i.t_image_features.detach()
            case Feature.T_TXT:
                return i.t_text_features.detach()
            case Feature.S_NEG:
                return F.normalize(i.negative_text_features, dim=-1)

    def local(self, feature: Feature) -> torch.Tensor:
        """This rank's rows, computed once per forward."""
        if feature not in self._local:
            self._local[feature] = self._make(feature)
        return self._local[feature]

    def all(self, feature: Feature) -> torch.Tensor:
        """Every rank's rows, gathered once per forward (only when a term asks)."""
        if feature not in self._global:
            self._global[feature] = self.ctx.gather(self.local(feature))
        return self._global[feature]

    def logits(self, rows: Feature, cols: Feature, scale, local: bool | None = None) -> torch.Tensor:
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
