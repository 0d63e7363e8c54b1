"""Task heads over the student's [CLS] (they stay in the exported task model, unlike the distill heads).

- VQA: classifier over the answer vocabulary (built from training answers, official normalisation),
  soft targets (the leave-one-out VQA score of each answer), BCE scaled by the vocabulary size (ViLT).
- SNLI-VE: 3-way classifier (entailment, neutral, contradiction), cross-entropy.
- Multiple choice (VCR Q->A and QA->R): one score per (image, query + candidate) sequence, softmax over the
  candidates of an item, cross-entropy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from clipdistill.data.examples import VE_LABELS
from clipdistill.td.metrics import normalize_answer, vqa_soft_score

__all__ = ["VE_LABELS", "ClassifierHead", "MLPClassifierHead", "MultipleChoiceHead", "VQAHead", "build_answer_vocab",
           "vqa_targets"]


class VQAHead(nn.Module):
    def __init__(self, width: int, n_answers: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, 2 * width), nn.LayerNorm(2 * width), nn.GELU(),
                                 nn.Linear(2 * width, n_answers))

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.net(cls)

    @property
    def output(self) -> nn.Linear:
        """The output layer (its bias is what `td.head_bias: prior` sets)."""
        return self.net[-1]

    @staticmethod
    def loss(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, soft_targets) * logits.shape[1]


class ClassifierHead(nn.Module):
    """SNLI-VE: logits over VE_LABELS."""

    def __init__(self, width: int, n_classes: int = 3):
        super().__init__()
        self.net = nn.Linear(width, n_classes)

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.net(cls)

    @property
    def output(self) -> nn.Linear:
        return self.net

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels)


class MLPClassifierHead(VQAHead):
    """The classifier of transformers' ViltForQuestionAnswering (Linear, LayerNorm, GELU, Linear) trained with
    cross-entropy: the SNLI-VE head of an hf: ViLT student, so its task model exports as a ViltForQuestionAnswering
    with three labels (td/export_hf.py)."""

    loss = staticmethod(ClassifierHead.loss)


class MultipleChoiceHead(nn.Module):
    """Scores [B * C] sequences, returns logits [B, C]."""

    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Linear(width, 1)

    def forward(self, cls: torch.Tensor, n_choices: int) -> torch.Tensor:
        return self.net(cls).view(-1, n_choices)

    @property
    def output(self) -> nn.Linear:
        return self.net

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels)


def build_answer_vocab(answer_lists: Iterable[Sequence[str]], max_answers: int, min_count: int = 1) -> list[str]:
    """The `max_answers` most frequent normalised training answers (ties broken alphabetically)."""
    counts = Counter(normalize_answer(a) for answers in answer_lists for a in answers)
    ranked = sorted((a for a, c in counts.items() if c >= min_count and a), key=lambda a: (-counts[a], a))
    return ranked[:max_answers]


def vqa_targets(answers: Sequence[str], index: dict[str, int]) -> torch.Tensor:
    """Soft target vector over the vocabulary for one question's human answers (out-of-vocab answers drop)."""
    target = torch.zeros(len(index))
    counts = Counter(normalize_answer(a) for a in answers)
    for ans, c in counts.items():
        if ans in index:
            target[index[ans]] = vqa_soft_score(c, len(answers))
    return target
