"""`TrainConfig`: every knob of the shared training loop (`fit`), typed and validated."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, model_validator

from clipdistill.config import StrictModel

# NaN/inf in an optimiser setting turns every weight into NaN at the first step (AdamW divides by sqrt(v) + eps):
# refuse them when the config is read. Each beta is a decay rate in [0, 1).
Beta = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]


class TrainConfig(StrictModel):
    """Optimisation, schedule, precision, checkpointing and logging for one `fit` call.

    Length is `steps` (optimizer steps) when given, else `epochs` full passes over the loader.
    One optimizer step consumes `accum_steps` loader batches (micro-batches).
    """

    epochs: int = Field(1, ge=1)
    steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    lr: float = Field(5e-4, gt=0, allow_inf_nan=False)
    lr_scale: dict[str, float] = Field(
        default_factory=dict, description="lr multiplier per parameter-name prefix, e.g. {student.blocks: 0.1} so a "
        "seeded backbone moves slower than a new head; the longest matching prefix wins")
    weight_decay: float = Field(0.1, ge=0, allow_inf_nan=False)
    betas: tuple[Beta, Beta] = (0.9, 0.98)
    eps: float = Field(1e-6, gt=0, allow_inf_nan=False)
    warmup_steps: int = Field(0, ge=0)
    warmup: float | None = Field(None, ge=0, le=1, allow_inf_nan=False, description="warmup as a share of the "
                                 "run's optimizer steps (0.05: the first 5%); when set it replaces warmup_steps")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, allow_inf_nan=False, description="cosine floor as a fraction of lr")
    accum_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    grad_clip: float | None = Field(None, gt=0, allow_inf_nan=False,
                                    description="max global grad norm; none = no clipping")
    grad_checkpointing: bool = False
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="AMP dtype; applies on CUDA only")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, description="torch CPU threads for this process (set when training "
                                "starts); none = torch's default. 1 per job when jobs share a small machine")
    seed: int = 0
    save_every: int = Field(100, ge=1, description="checkpoint every N optimizer steps (and at the end)")
    keep_last: int = Field(3, ge=1, description="checkpoints kept on disk")
    log_every: int = Field(10, ge=1)
    eval_every: int | None = Field(None, ge=1, description="call evaluate(step) every N steps")
    progress: bool = True
    tensorboard: bool = True
    collective_timeout_s: float = Field(90.0, gt=0, description="a dead DDP peer makes survivors exit after this")
    ddp_find_unused_parameters: bool = False

    @model_validator(mode="after")
    def _lr_scales_positive(self) -> TrainConfig:
        bad = {k: v for k, v in self.lr_scale.items() if not (v > 0 and math.isfinite(v))}
        if bad:
            raise ValueError(f"lr_scale multipliers must be finite and > 0 (freeze with requires_grad instead): {bad}")
        return self

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainConfig:
        if self.steps is not None and self.warmup is None and self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) exceeds steps ({self.steps})")
        return self

    def warmup_for(self, total: int) -> int:
        """Warmup optimizer steps of a run of `total` steps: `warmup` x total (rounded) when the share is set,
        else `warmup_steps`."""
        if self.warmup is not None:
            return min(round(self.warmup * total), total)
        return self.warmup_steps

    def warmup_warning(self, total: int) -> str | None:
        """A line to log and record when warmup covers the whole run, so no cosine decay follows (a preset's
        fixed warmup_steps on a short run)."""
        warmup = self.warmup_for(total)
        if warmup and warmup >= total:
            return (f"train: warmup ({warmup} steps) covers the whole run ({total} optimizer steps): the lr "
                    f"ramps up until the end and never decays; lower train.warmup_steps or set train.warmup (a share)")
        return None
