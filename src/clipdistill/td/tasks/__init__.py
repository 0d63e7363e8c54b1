"""CLIP-TD task kinds: one module per kind, registered here. A new task is one `TaskKindBase` subclass in its own
module plus one line in `TASK_KINDS`; `TaskConfig.kind` accepts exactly the registered names."""

from __future__ import annotations

from clipdistill.errors import UserError
from clipdistill.td.tasks.base import Collated, Scorer, TaskKindBase
from clipdistill.td.tasks.snli_ve import SNLIVE
from clipdistill.td.tasks.vcr import VCR
from clipdistill.td.tasks.vqa import VQA

TASK_KINDS: dict[str, TaskKindBase] = {k.name: k for k in (VQA(), SNLIVE(), VCR())}

__all__ = ["TASK_KINDS", "Collated", "Scorer", "TaskKindBase", "task_kind"]


def task_kind(kind: str | TaskKindBase) -> TaskKindBase:
    """The registered kind object of a name (a kind object passes through)."""
    if isinstance(kind, TaskKindBase):
        return kind
    if kind not in TASK_KINDS:
        raise UserError(f"unknown task kind {kind!r}; choose one of {', '.join(TASK_KINDS)}")
    return TASK_KINDS[kind]
