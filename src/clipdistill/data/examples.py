"""The task example record the task readers (`clipdistill.data.tasks`) produce and CLIP-TD consumes.

It lives in the data layer so that `clipdistill.td` depends on `clipdistill.data`, never the other way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image

from clipdistill.errors import DataError

TaskKind = Literal["vqa", "snli_ve", "vcr"]
# SNLI-VE `gold_label` values in class-index order (the SNLI-VE classifier's outputs)
VE_LABELS = ("entailment", "neutral", "contradiction")


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
