"""Task examples as CLIP-TD consumes them, and VCR's multiple-choice items (Q->A, QA->R).

`TaskExample` is the one record the td code needs from the task readers (`clipdistill.data.tasks`: VQA v2,
SNLI-VE, VCR): an image, a query text and the task's label fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image

from clipdistill.errors import DataError

TaskKind = Literal["vqa", "snli_ve", "vcr"]


@dataclass
class TaskExample:
    key: str
    image: Path
    text: str  # VQA question, SNLI-VE hypothesis, VCR question
    label: int = -1  # SNLI-VE class index, VCR answer index
    answers: list[str] = field(default_factory=list)  # VQA: the human answers (usually 10)
    choices: list[str] = field(default_factory=list)  # VCR answer candidates
    rationales: list[str] = field(default_factory=list)  # VCR rationale candidates
    rationale_label: int = -1

    def load_image(self) -> Image.Image:
        try:
            with Image.open(self.image) as im:
                return im.convert("RGB")
        except (OSError, ValueError) as e:
            raise DataError(f"{self.key}: cannot read image {self.image} ({e})") from None


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
