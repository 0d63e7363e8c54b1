"""`build_loss(spec)` -> `WeightedLoss`: the configured terms, their weights and the shared projectors."""

from __future__ import annotations

import math
from collections.abc import Set
from typing import Any

import torch
from torch import nn

from clipdistill.errors import ConfigError
from clipdistill.losses.base import DistillLoss, LossDims, loss_class, parse_options
from clipdistill.losses.dist import DistContext
from clipdistill.losses.features import FeatureView
from clipdistill.losses.inputs import LossInput, LossInputs


class WeightedLoss(nn.Module):
    """Weighted sum of loss terms. Learnable parts (projectors D_s->D_t shared by all terms that compare
    with teacher features, as in CLIP-KD; scales; fusion layers; learnable centres) are submodules, so they
    are in `state_dict()` / `parameters()` and get optimised and checkpointed with the student."""

    def __init__(
        self, terms: dict[str, DistillLoss], weights: dict[str, float], dims: LossDims, local_loss: bool,
        checked: bool = False,
    ):
        super().__init__()
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)
        self.local_loss = local_loss
        self.needs: frozenset[LossInput] = frozenset().union(*(t.needs for t in terms.values()))
        # the caller declared what it supplies and build_loss checked it; else each call's inputs are checked
        self.checked = checked
        project = any(t.projects for t in terms.values()) and dims.teacher not in (None, dims.student)
        self.image_proj: nn.Module = nn.Linear(dims.student, dims.teacher) if project else nn.Identity()
        self.text_proj: nn.Module = nn.Linear(dims.student, dims.teacher) if project else nn.Identity()
        # A CLIP student has no logit bias: sigmoid terms (siglip, logit_kd from a sigmoid teacher) share this
        # learnable pair, initialised as open_clip's --siglip does (scale log(10), bias -10; open_clip 3.3.0 main.py).
        self.owns_sigmoid = any(t.uses_student_sigmoid() for t in terms.values()) and not dims.student_bias
        if self.owns_sigmoid:
            self.sigmoid_log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
            self.sigmoid_bias = nn.Parameter(torch.tensor(-10.0))

    def forward(self, inputs: LossInputs) -> dict[str, torch.Tensor]:
        if not self.checked:
            provided = inputs.provided()
            for term in self.terms.values():
                term.require(provided)
        # exp'd and clamped at 100 as open_clip clamps the log scale at log(100) and ClipModel.logit_scale does
        sigmoid = (self.sigmoid_log_scale.exp().clamp(max=100), self.sigmoid_bias) if self.owns_sigmoid else None
        view = FeatureView(inputs, DistContext.current(self.local_loss), self.image_proj, self.text_proj, sigmoid)
        out: dict[str, torch.Tensor] = {}
        total = inputs.image_features.new_zeros(())
        for name, term in self.terms.items():
            value = term(view)
            parts = value if isinstance(value, dict) else {name: value}
            out.update(parts)
            total = total + self.weights[name] * parts[name]
        # The student's own scale and bias join the graph even when no term reads them (times 0: the value and
        # every gradient are unchanged), so DDP's find_unused_parameters=False does not stop a run whose terms
        # leave them unused (siglip on a CLIP student, softmax-only terms on a SigLIP student).
        for t in (inputs.logit_scale, inputs.logit_bias):
            if isinstance(t, torch.Tensor) and t.requires_grad:
                total = total + 0 * t.sum()
        return {"loss": total, **out}


def build_loss(
    spec: dict[str, dict[str, Any] | None],
    student_dim: int,
    teacher_dim: int | None = None,
    num_clusters: int | None = None,
    centroids: torch.Tensor | None = None,
    *,
    local_loss: bool = False,
    student_bias: bool = False,
    teacher_sigmoid: bool = False,
    provided: Set[LossInput] | None = None,
) -> WeightedLoss:
    """spec = {"clip": {"weight": 1.0}, "fd": {"weight": 2000}, "cluster": {"margin": 0.5}, ...}.

    A term's missing `weight` takes that term's default (e.g. fd 2000, gd 1e8, others 1).
    `student_bias`: the student has its own logit bias (SigLIP architecture); `teacher_sigmoid`: the teacher has one.
    `provided`: the inputs the caller will supply; a term needing another is refused here, naming it. None (a
    caller building `LossInputs` by hand): each call's inputs are checked instead.
    Example:
        build_loss({"clip": {}, "crd": {}, "fd": {}, "icl": {}}, student_dim=256, teacher_dim=512)
    """
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(
            "the loss spec must be a non-empty mapping of loss name -> options, e.g. {'clip': {}}"
        )
    dims = LossDims(student_dim, teacher_dim, num_clusters, centroids, student_bias, teacher_sigmoid)
    terms: dict[str, DistillLoss] = {}
    weights: dict[str, float] = {}
    classes = {name: loss_class(name) for name in spec}
    if provided is not None:
        for cls in classes.values():
            cls.require(provided)
    for name, raw in spec.items():
        cls = classes[name]
        opts = parse_options(name, raw)
        if LossInput.TEACHER in cls.needs and teacher_dim is None:
            raise ConfigError(f"loss {name!r} distils from a teacher: build_loss needs teacher_dim")
        terms[name] = cls(opts, dims)
        weights[name] = opts.weight
    return WeightedLoss(terms, weights, dims, local_loss, checked=provided is not None)
