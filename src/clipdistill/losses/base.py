"""Base class, options and registry of the loss terms."""

from __future__ import annotations

import difflib
import math
from collections.abc import Set
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from clipdistill.config import StrictModel, build_config
from clipdistill.errors import ConfigError, UserError
from clipdistill.losses.features import FeatureView
from clipdistill.losses.inputs import LossInput

# CLIP-KD / CLIP-RD initialise their learnable cross/fusion scales to log(1/0.07) and use them raw.
RAW_SCALE_INIT = math.log(1 / 0.07)


class LossOptions(StrictModel):
    """Every term has a weight; subclasses add their own options (unknown keys are errors)."""

    weight: float = 1.0


@dataclass(frozen=True)
class LossDims:
    student: int
    teacher: int | None = None
    num_clusters: int | None = None
    centroids: torch.Tensor | None = None
    # the student has its own logit bias (a SigLIP architecture); else sigmoid terms use loss-owned scale + bias
    student_bias: bool = False
    # the teacher is sigmoid-type (has a logit bias): logit_kd then matches pairwise probabilities
    teacher_sigmoid: bool = False


class DistillLoss(nn.Module):
    """One loss term. `forward` returns its unweighted value, or a dict whose `name` entry is the value
    and whose other entries are sub-terms for logging."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[LossOptions]] = LossOptions
    # what the caller must supply beyond the student's features (checked by `build_loss`)
    needs: ClassVar[frozenset[LossInput]] = frozenset()
    # the term averages a teacher ensemble itself, so `TEACHER_ENSEMBLE` meets its `TEACHER` need
    averages_ensemble: ClassVar[bool] = False
    # whether the term uses student features projected to the teacher dim (shared projector)
    projects: ClassVar[bool] = False

    def __init__(self, opts: LossOptions, dims: LossDims):
        super().__init__()
        self.opts = opts
        self.dims = dims

    @classmethod
    def require(cls, provided: Set[LossInput]) -> None:
        """Refuse a term whose inputs `provided` lacks, naming the first missing one and how to supply it."""
        have = set(provided)
        if cls.averages_ensemble and LossInput.TEACHER_ENSEMBLE in have:
            have.add(LossInput.TEACHER)
        missing = sorted(cls.needs - have)
        if not missing:
            return
        need = missing[0]
        hint = need.how
        if need is LossInput.TEACHER and LossInput.TEACHER_ENSEMBLE in have:
            hint = ("this teacher ensemble's members differ in dim, so there are no single teacher features; "
                    "only terms that average members (logit_kd) take it")
        raise UserError(f"loss {cls.name!r} needs {need} ({hint}); missing: {', '.join(need.fields)}")

    def forward(self, f: FeatureView) -> torch.Tensor | dict[str, torch.Tensor]:
        raise NotImplementedError

    def uses_student_sigmoid(self) -> bool:
        """Whether the term needs the student's sigmoid logits (scale * cos + bias, see `FeatureView.sigmoid`)."""
        return False

    def scale_tensor(self, attr: str, value: float, learnable: bool) -> None:
        """A scalar scale: a Parameter when learnable (optimised and saved), else a saved buffer."""
        t = torch.tensor(float(value))
        if learnable:
            self.register_parameter(attr, nn.Parameter(t))
        else:
            self.register_buffer(attr, t)


LOSSES: dict[str, type[DistillLoss]] = {}


def register_loss(name: str):
    def deco(cls: type[DistillLoss]) -> type[DistillLoss]:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} registered twice ({LOSSES[name].__name__}, {cls.__name__})")
        cls.name = name
        LOSSES[name] = cls
        return cls

    return deco


def loss_class(name: str) -> type[DistillLoss]:
    if name not in LOSSES:
        close = difflib.get_close_matches(name, list(LOSSES), n=1, cutoff=0.4)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown loss {name!r}{hint} (available: {', '.join(sorted(LOSSES))})")
    return LOSSES[name]


def parse_options(name: str, raw: dict[str, Any] | None) -> LossOptions:
    cls = loss_class(name)
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"loss {name!r}: options must be a mapping, got {type(raw).__name__}")
    return build_config(cls.Options, dict(raw or {}), source=f"loss {name!r}")
