"""Task examples as CLIP-TD consumes them, and the collation into student / teacher batches.

`TaskExample` is the one record the td code needs from the task readers (VQA v2, SNLI-VE, VCR): an image,
a query text and the task's label fields. `read_task_jsonl` reads our interchange format (one JSON object
per line, image paths relative to the file), so any reader can hand data over by writing it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image

from clipdistill.errors import DataError
from clipdistill.td.heads import VE_LABELS

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


def _parse(obj: dict, root: Path, kind: TaskKind, where: str) -> TaskExample:
    try:
        ex = TaskExample(key=str(obj["key"]), image=root / obj["image"], text=str(obj["text"]))
        if kind == "vqa":
            ex.answers = [str(a) for a in obj["answers"]]
            if not ex.answers:
                raise ValueError("no answers")
        elif kind == "snli_ve":
            label = obj["label"]
            ex.label = VE_LABELS.index(label) if isinstance(label, str) else int(label)
        else:
            ex.choices, ex.label = [str(c) for c in obj["choices"]], int(obj["label"])
            ex.rationales = [str(c) for c in obj.get("rationales", [])]
            ex.rationale_label = int(obj.get("rationale_label", -1))
            if not 0 <= ex.label < len(ex.choices) or (ex.rationales and not 0 <= ex.rationale_label < len(ex.rationales)):
                raise ValueError("label out of range")
    except (KeyError, ValueError, TypeError) as e:
        raise DataError(f"{where}: not a valid {kind} example ({type(e).__name__}: {e})") from None
    return ex


def read_task_jsonl(path: str | Path, kind: TaskKind) -> list[TaskExample]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"task file not found: {path}")
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{i}: not JSON ({e.msg})") from None
        out.append(_parse(obj, path.parent, kind, f"{path}:{i}"))
    if not out:
        raise DataError(f"{path}: no examples")
    return out
