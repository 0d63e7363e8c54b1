"""The CLIP-TD batch: what `TDTask.training_step`, `predict` and a task kind's scorer read. `td.task.Collator` is the
one place that builds it; what differs per task kind (VQA's soft answer targets, SNLI-VE's labels, VCR's
multiple-choice shape) is the kind's payload, a `TaskPayload` subclass owned by its module in `td/tasks/`.

No DataLoader carries these batches (the Collator runs in the training process) and the loop does not pin memory,
so they have `to()` but no `pin_memory()`."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TypeVar

import torch

T = TypeVar("T")
P = TypeVar("P", bound="TaskPayload")


def _moved(obj: T, device: torch.device, non_blocking: bool) -> T:
    """`obj` with each tensor field on `device` (other fields kept)."""
    return replace(obj, **{f.name: v.to(device, non_blocking=non_blocking) for f in fields(obj)
                           if isinstance(v := getattr(obj, f.name), torch.Tensor)})


@dataclass(frozen=True)
class TaskPayload:
    """A task kind's own part of a batch. A subclass adds typed fields; `to()` moves the tensor ones."""

    def to(self: P, device: torch.device, non_blocking: bool = False) -> P:
        return _moved(self, device, non_blocking)


@dataclass(frozen=True)
class Labels(TaskPayload):
    """One class (SNLI-VE) or right-candidate (VCR) index per instance: the target of a cross-entropy head."""

    labels: torch.Tensor  # int64 [B]


@dataclass(frozen=True)
class WordAlignment:
    """A student whose tokenizer is not the teacher's (td/align.py): teacher tokens averaged onto the student's
    positions by words."""

    matrix: torch.Tensor  # [B, Ls, Lt]: row j averages the teacher tokens covering student token j's words
    pooled_rows: torch.Tensor  # bool [B]: texts with no word alignment, distilled towards the pooled teacher text
    real: torch.Tensor  # bool [B, Ls]: the student's real (non-special, non-padding) tokens

    def to(self, device: torch.device, non_blocking: bool = False) -> WordAlignment:
        return _moved(self, device, non_blocking)


@dataclass(frozen=True)
class TeacherInputs:
    """What the frozen CLIP teacher reads: its own view of the image (online), or the image half read from a
    feature store (cached: `image_pooled` and `patch`), exactly one of the two; and its tokens of the texts
    distilled and of the confidence weights' candidates."""

    ids: torch.Tensor  # [B, Lt] teacher tokens of the text distilled (one per instance)
    labels: torch.Tensor  # int64 [B]: index of the right candidate / class in `teacher_probs`
    image: torch.Tensor | None = None  # online: [B, 3, H, W] through the teacher's eval transform
    image_pooled: torch.Tensor | None = None  # cached: [B, D]
    patch: torch.Tensor | None = None  # cached: [B, P, D]
    cand_ids: torch.Tensor | None = None  # [B * C, Lt] candidate texts (VQA answers, VCR choices); None: SNLI-VE
    cand_valid: torch.Tensor | None = None  # bool [B, C]: real candidates (VQA pads short rows); None: all real
    alignment: WordAlignment | None = None  # None: the student's token positions are the teacher's

    def __post_init__(self):
        cached = self.image_pooled is not None and self.patch is not None
        if (self.image is not None) == cached or (self.image_pooled is None) != (self.patch is None):
            raise ValueError("teacher inputs need either the teacher's image view or its cached pooled and patch "
                             "features, not both or neither")

    @property
    def cached(self) -> bool:
        """The image half was read from a feature store (td/cached.py), not computed."""
        return self.image is None

    def to(self, device: torch.device, non_blocking: bool = False) -> TeacherInputs:
        moved = _moved(self, device, non_blocking)
        if self.alignment is None:
            return moved
        return replace(moved, alignment=self.alignment.to(device, non_blocking))


@dataclass(frozen=True)
class TDBatch:
    """B instances (examples; VCR: multiple-choice items) of one task kind."""

    keys: list[str]  # example key per instance (a VCR example's two items share it)
    image: torch.Tensor  # [B, 3, H, W] through the student's transform
    ids: torch.Tensor  # [S, L] student tokens: one sequence per instance (VCR: one per candidate, S = B * C)
    task: TaskPayload  # the kind's own fields (td/tasks/)
    teacher: TeacherInputs | None = None  # None: nothing is distilled (baseline, evaluation)

    def __len__(self) -> int:
        return len(self.keys)

    def to(self, device: torch.device, non_blocking: bool = False) -> TDBatch:
        """Every tensor on `device` (what the training loop and evaluation call)."""
        return replace(self, image=self.image.to(device, non_blocking=non_blocking),
                       ids=self.ids.to(device, non_blocking=non_blocking), task=self.task.to(device, non_blocking),
                       teacher=None if self.teacher is None else self.teacher.to(device, non_blocking))
