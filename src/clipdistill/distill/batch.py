"""The distill batch: what `DistillTask.training_step` reads. `DistillBatch.from_loader` is the one place that
builds it, from the loader's `LoaderBatch` (views: the student's, then one per online teacher member);
`distill.joins` applies it to every loader batch, with the joined cached teacher features and cluster labels."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING

import torch

from clipdistill.data import LoaderBatch, SkipCounter, View

if TYPE_CHECKING:
    from clipdistill.features.cached import CachedFeatures


class TeacherMode(Enum):
    """Where a batch's teacher outputs come from."""

    NONE = "none"  # no teacher
    ONLINE = "online"  # a forward of each frozen teacher on its own view (`teacher.mode` online or ensemble)
    CACHED = "cached"  # read from a feature store by sample key

    @classmethod
    def of(cls, mode: str) -> TeacherMode:
        """The batch's mode for a config's `teacher.mode`."""
        return cls.ONLINE if mode == "ensemble" else cls(mode)


@dataclass(frozen=True)
class DistillBatch:
    """The contract between the data and the distill task: the student's view; per teacher mode, each online
    member's view or the cached teacher features; the balance's cluster labels; the loader's skip counts."""

    keys: list[str]  # sample keys (what every join matches on)
    index: torch.Tensor  # source row (map source) or position in its tar (stream): never a join key
    student: View
    teacher_mode: TeacherMode = TeacherMode.NONE
    teachers: list[View] = field(default_factory=list)  # ONLINE: member i's view
    cached: CachedFeatures | None = None  # CACHED: the teacher's stored outputs for these keys
    cluster_labels: torch.Tensor | None = None  # int64 [B], from a balance output (`data.keep`)
    # data.hard_negatives: each pair's caption with one attribute swapped; None where it names no attribute
    negatives: list[str | None] | None = None
    # drops made reading this batch; already added to the source's counter (data.Batches): a record, not a total
    skips: SkipCounter = field(default_factory=SkipCounter)

    def __post_init__(self):
        online, cached = self.teacher_mode is TeacherMode.ONLINE, self.teacher_mode is TeacherMode.CACHED
        if online != bool(self.teachers) or cached != (self.cached is not None):
            raise ValueError(f"a {self.teacher_mode.value} batch with {len(self.teachers)} teacher views and "
                             f"{'' if self.cached else 'no '}cached teacher features")

    @classmethod
    def from_loader(cls, batch: LoaderBatch, mode: TeacherMode = TeacherMode.NONE, *,
                    cached: CachedFeatures | None = None, cluster_labels: torch.Tensor | None = None,
                    negatives: list[str | None] | None = None) -> DistillBatch:
        """From a `make_loader` batch whose views are the student's, then one per online teacher member (an
        ONLINE batch) or none (NONE, CACHED)."""
        return cls(list(batch.keys), batch.index, batch.student, mode, list(batch.views[1:]), cached, cluster_labels,
                   negatives, batch.skips)

    def __len__(self) -> int:
        return len(self.keys)

    def to(self, device: torch.device, non_blocking: bool = False) -> DistillBatch:
        """Every tensor on `device` (what the training loop calls)."""
        return replace(
            self, index=self.index.to(device, non_blocking=non_blocking),
            student=self.student.to(device, non_blocking),
            teachers=[v.to(device, non_blocking) for v in self.teachers],
            cached=None if self.cached is None else self.cached.to(device, non_blocking),
            cluster_labels=None if self.cluster_labels is None else self.cluster_labels.to(device,
                                                                                           non_blocking=non_blocking))
