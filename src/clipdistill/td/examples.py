"""VCR's multiple-choice items (Q->A, QA->R) over the task examples.

`TaskExample` (re-exported here) is the one record the td code needs from the task readers
(`clipdistill.data.tasks`: VQA v2, SNLI-VE, VCR); it is defined in `clipdistill.data.examples`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from clipdistill.data.examples import TaskExample, TaskKind

__all__ = ["ChoiceItem", "TaskExample", "TaskKind", "vcr_items"]


@dataclass
class ChoiceItem:
    """One multiple-choice decision: VCR Q->A (query = question) or QA->R (query = question + GT answer)."""

    key: str
    sub: Literal["q_a", "qa_r"]
    example: TaskExample
    query: str
    candidates: list[str]
    label: int


def vcr_items(ex: TaskExample) -> list[ChoiceItem]:
    """Q->A and QA->R items of a VCR example; QA->R appends the ground-truth answer (as r2c does)."""
    items = [ChoiceItem(ex.key, "q_a", ex, ex.text, ex.choices, ex.label)]
    if ex.rationales:
        query = f"{ex.text} {ex.choices[ex.label]}"
        items.append(ChoiceItem(ex.key, "qa_r", ex, query, ex.rationales, ex.rationale_label))
    return items
