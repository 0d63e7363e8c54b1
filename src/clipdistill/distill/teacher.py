"""Teachers for distillation: frozen, eval mode, no grad, outside DDP, each with its own input view.

`online`: one teacher CLIP run on its own view of the batch (`DistillBatch.teachers[0]`: its own transforms and
tokenizer, made by the loader). `ensemble`: several teachers; member i reads view i; the loss averages their
probabilities (`LossInputs.t_ensemble`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipdistill.distill.batch import View
from clipdistill.losses import LossInput
from clipdistill.zoo import ClipModel, load_model


class TeacherOutputs:
    def __init__(self, members: list[tuple[torch.Tensor, torch.Tensor]], logit_scale: torch.Tensor,
                 sigmoid: tuple[torch.Tensor, torch.Tensor] | None = None):
        # sigmoid: a single SigLIP teacher's own (scale, bias), whatever fixed scale replaced `logit_scale`
        self.members, self.logit_scale, self.sigmoid = members, logit_scale, sigmoid

    @property
    def single(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """One (image, text) pair for the feature terms: the member itself, or for an ensemble of equal
        dims the re-normalised mean of the members (our choice; MobileCLIP stores members separately)."""
        if len(self.members) == 1:
            return self.members[0]
        dims = {img.shape[-1] for img, _ in self.members}
        if len(dims) != 1:
            return None
        img = torch.stack([m[0] for m in self.members]).mean(0)
        txt = torch.stack([m[1] for m in self.members]).mean(0)
        return F.normalize(img, dim=-1), F.normalize(txt, dim=-1)


class FrozenTeachers:
    """One or more frozen teacher CLIPs; `fixed_logit_scale` overrides their own (TinyCLIP 50, MobileCLIP 100)."""

    def __init__(self, specs: list[str], device: str | torch.device = "cpu", fixed_logit_scale: float | None = None):
        self.models: list[ClipModel] = [load_model(s, str(device)).requires_grad_(False).eval() for s in specs]
        self.fixed_logit_scale = fixed_logit_scale

    @property
    def dim(self) -> int:
        return self.models[0].embed_dim

    @property
    def provides(self) -> frozenset[LossInput]:
        """What the loss gets from these teachers: every member (an ensemble), and one pair of teacher
        features unless members of different dims leave no mean (`TeacherOutputs.single`)."""
        ensemble = {LossInput.TEACHER_ENSEMBLE} if len(self.models) > 1 else set()
        single = {LossInput.TEACHER} if len({m.embed_dim for m in self.models}) == 1 else set()
        return frozenset(ensemble | single)

    @property
    def sigmoid(self) -> bool:
        """A single teacher with a logit bias (SigLIP): logit_kd matches its pairwise sigmoid probabilities."""
        return len(self.models) == 1 and self.models[0].logit_bias is not None

    def to(self, device: torch.device) -> FrozenTeachers:
        self.models = [m.to(device).eval() for m in self.models]
        return self

    @torch.no_grad()
    def __call__(self, views: list[View]) -> TeacherOutputs:
        """Member i's outputs on `views[i]`."""
        if len(views) != len(self.models):
            raise ValueError(f"{len(self.models)} teachers were given {len(views)} views")
        members = []
        for m, view in zip(self.models, views, strict=True):
            m.eval()  # a caller's .train() on a parent module must never reach the teacher
            members.append((m.encode_image(view.image, normalize=True), m.encode_text(view.text, normalize=True)))
        scale = (torch.tensor(self.fixed_logit_scale) if self.fixed_logit_scale is not None
                 else self.models[0].logit_scale.detach())
        sigmoid = None
        if self.sigmoid:
            m = self.models[0]
            # unclamped: released SigLIP scales pass 100 (SO400M: exp(4.7215) = 112.3); the clamp is a training rule
            sigmoid = (m.raw_logit_scale.detach().exp().reshape(()), m.logit_bias.detach().reshape(()))
        return TeacherOutputs(members, scale, sigmoid)
