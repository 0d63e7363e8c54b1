"""`DistillConfig`: what `clipdistill distill CONFIG.yaml` reads (presets in configs/*.yaml)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

import clipdistill.losses  # noqa: F401  (registers the losses whose options are checked below)
from clipdistill.config import StrictModel, TeacherModels
from clipdistill.data.attributes import checked_attributes
from clipdistill.data.sources import TrainSourceOptions
from clipdistill.distill.inherit import LayerRule
from clipdistill.errors import ConfigError
from clipdistill.losses import LossInput
from clipdistill.losses.base import loss_class
from clipdistill.train import TrainConfig
from clipdistill.world.text import world_attributes


class StudentConfig(StrictModel):
    model: str = Field("open_clip:cd-student-s-32", description="SPEC of the student architecture")
    init: Literal["scratch", "inherit"] = "scratch"  # inherit: TinyCLIP manual weight inheritance
    inherit_layers: LayerRule = "interval_front"


class TeacherConfig(TeacherModels):
    mode: Literal["none", "online", "cached", "ensemble"] = "none"  # models: one SPEC (online), several (ensemble)
    features: str | None = Field(None, description="feature store DIR (mode: cached)")
    logit_scale: float | None = Field(None, gt=0, description="fixed teacher scale for every loss (TinyCLIP 50); "
                                      "none = each loss's teacher_scale, else the teacher's own")

    @model_validator(mode="after")
    def _consistent(self) -> TeacherConfig:
        need = {"none": (0, 0), "online": (1, 1), "ensemble": (2, 99), "cached": (0, 1)}[self.mode]
        if not need[0] <= len(self.models) <= need[1]:
            raise ValueError(f"teacher.mode={self.mode} takes {need[0]}..{need[1]} teacher models, got {self.models}")
        if self.mode == "cached" and not self.features:
            raise ValueError("teacher.mode=cached needs teacher.features (a feature store made by `clipdistill embed`)")
        return self


class DataConfig(TrainSourceOptions):
    """The source and how it is read (`SourceOptions`: image_col, caption_col, key_col, separator, max_pixels,
    max_caption_chars; a tar-shard stream's `num_samples`), the kept-list, batching."""

    source: str = Field(..., description="data SOURCE, e.g. world:world_tiny or shards/{00000..00003}.tar")
    keep: str | None = Field(None, description="balance output DIR: train on its kept-list (+ cluster labels)")
    filter: bool | Literal["random"] = Field(True, description="false: take data.keep's cluster labels/centres "
                                             "but train on all samples (the balance ablation); random: on a "
                                             "uniform sample of the kept-list's size, drawn with train.seed "
                                             "(the same-size control)")
    batch_size: int = Field(64, ge=1, description="per process")
    num_workers: int = Field(0, ge=0)
    mask_ratio: float = Field(0.5, ge=0, lt=1, description="masked-image ratio for the mfd loss")
    hard_negatives: Literal["none", "swap"] = Field(
        "none", description="swap: each caption with one phrase of data.attributes replaced by another of its "
        "type, drawn per (key, epoch, train.seed): the hard negative caption the negclip loss needs")
    attributes: dict[str, list[str]] = Field(
        default_factory=world_attributes,
        description="attribute phrases by type that hard_negatives=swap swaps (default: the world's)")

    _attributes = field_validator("attributes")(checked_attributes)


class DistillConfig(StrictModel):
    student: StudentConfig = StudentConfig()
    teacher: TeacherConfig = TeacherConfig()
    data: DataConfig
    loss: dict[str, dict[str, Any] | None] = Field(default_factory=lambda: {"clip": {}})
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _negatives_used(self) -> DistillConfig:
        """A loss reading hard negatives needs data.hard_negatives; hard negatives no loss reads would only cost a
        text forward. Both are refused here, before any data is read."""
        readers = [name for name in self.loss if LossInput.HARD_NEGATIVES in _needs(name)]
        if readers and self.data.hard_negatives == "none":
            raise ValueError(f"loss.{readers[0]} needs a hard negative caption per pair: set data.hard_negatives=swap")
        if self.data.hard_negatives != "none" and not readers:
            raise ValueError(f"data.hard_negatives={self.data.hard_negatives} but no loss reads hard negatives: "
                             "add loss.negclip (or set data.hard_negatives=none)")
        return self

    @model_validator(mode="after")
    def _one_teacher_scale(self) -> DistillConfig:
        """`teacher.logit_scale`, when set, is the teacher's scale in every loss: it is written into each
        loss that has a `teacher_scale` option (so the resolved config shows what runs), and a loss that sets
        a different one is refused instead of silently winning (logit_kd's own default is 50)."""
        fixed = self.teacher.logit_scale
        if fixed is None:
            return self
        for name, opts in self.loss.items():
            try:
                fields = loss_class(name).Options.model_fields
            except ConfigError:
                continue  # an unknown loss is reported, with its close matches, where the losses are built
            if "teacher_scale" not in fields or (opts is not None and not isinstance(opts, dict)):
                continue
            own = (opts or {}).get("teacher_scale")
            if own is not None and own != fixed:
                raise ValueError(f"teacher.logit_scale={fixed:g} and loss.{name}.teacher_scale={own} disagree: "
                                 f"set only teacher.logit_scale (the teacher's scale in every loss), or drop it "
                                 f"to let loss.{name}.teacher_scale decide")
            self.loss[name] = {**(opts or {}), "teacher_scale": fixed}
        return self


def _needs(loss: str) -> frozenset:
    try:
        return loss_class(loss).needs
    except ConfigError:
        return frozenset()  # an unknown loss is reported, with its close matches, where the losses are built
