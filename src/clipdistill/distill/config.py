"""`DistillConfig`: what `clipdistill distill CONFIG.yaml` reads (presets in configs/*.yaml)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from clipdistill.config import StrictModel
from clipdistill.distill.inherit import LayerRule
from clipdistill.train import TrainConfig


class StudentConfig(StrictModel):
    model: str = Field("open_clip:cd-student-s-32", description="SPEC of the student architecture")
    init: Literal["scratch", "inherit"] = "scratch"  # inherit: TinyCLIP manual weight inheritance
    inherit_layers: LayerRule = "interval_front"


class TeacherConfig(StrictModel):
    mode: Literal["none", "online", "cached", "ensemble"] = "none"
    models: list[str] = Field(default_factory=list, description="teacher SPECs (ensemble: several)")
    features: str | None = Field(None, description="feature store DIR (mode: cached)")
    logit_scale: float | None = Field(None, gt=0, description="fixed teacher scale (TinyCLIP 50); none = its own")

    @model_validator(mode="after")
    def _consistent(self) -> TeacherConfig:
        need = {"none": (0, 0), "online": (1, 1), "ensemble": (2, 99), "cached": (0, 1)}[self.mode]
        if not need[0] <= len(self.models) <= need[1]:
            raise ValueError(f"teacher.mode={self.mode} takes {need[0]}..{need[1]} teacher models, got {self.models}")
        if self.mode == "cached" and not self.features:
            raise ValueError("teacher.mode=cached needs teacher.features (a feature store made by `clipdistill embed`)")
        return self


class DataConfig(StrictModel):
    source: str = Field(..., description="data SOURCE, e.g. world:world_tiny or shards/{00000..00003}.tar")
    keep: str | None = Field(None, description="balance output DIR: train on its kept-list (+ cluster labels)")
    filter: bool | Literal["random"] = Field(True, description="false: take data.keep's cluster labels/centres "
                                             "but train on all samples (the balance ablation); random: on a "
                                             "uniform sample of the kept-list's size, drawn with train.seed "
                                             "(the same-size control)")
    batch_size: int = Field(64, ge=1, description="per process")
    num_workers: int = Field(0, ge=0)
    mask_ratio: float = Field(0.5, ge=0, lt=1, description="masked-image ratio for the mfd loss")


class DistillConfig(StrictModel):
    student: StudentConfig = StudentConfig()
    teacher: TeacherConfig = TeacherConfig()
    data: DataConfig
    loss: dict[str, dict[str, Any] | None] = Field(default_factory=lambda: {"clip": {}})
    train: TrainConfig = TrainConfig()
