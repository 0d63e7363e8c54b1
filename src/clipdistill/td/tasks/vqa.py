"""VQA (v2 / VQA-CP): answer classification over a vocabulary of training answers, official accuracy."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from clipdistill.data.tasks import TaskData
from clipdistill.errors import UserError
from clipdistill.td.batch import TaskPayload, TDBatch
from clipdistill.td.heads import VQAHead, build_answer_vocab, vqa_targets
from clipdistill.td.metrics import accuracy_result, normalize_answer, vqa_accuracy
from clipdistill.td.tasks.base import Collated, MeanScorer, Scorer, TaskKindBase


def question_type(ex, meta: dict) -> str:
    """The annotation's `question_type`, else the question's first three words (the VQA paper's prior)."""
    qt = meta.get(ex.key, {}).get("question_type")
    return str(qt).lower() if qt else " ".join(ex.text.lower().split()[:3])


def candidate_answers(answers: list[str], vocab: list[str], distractors: int) -> list[str]:
    """GT (most frequent human answer) first, then the most frequent other vocabulary answers."""
    norm = [normalize_answer(a) for a in answers]
    gt = max(set(norm), key=lambda a: (norm.count(a), -norm.index(a)))
    return [gt] + [a for a in vocab if a != gt][:distractors]


@dataclass(frozen=True)
class Answers(TaskPayload):
    """VQA's payload: each question's human answers (the official accuracy's input) and its soft targets over the
    answer vocabulary (`heads.vqa_targets`)."""

    answers: list[list[str]]
    targets: torch.Tensor  # float [B, len(vocab)]


def _accuracies(preds: list, batch: TDBatch) -> list[float]:
    return [vqa_accuracy(p, a) for p, a in zip(preds, batch.task.answers, strict=True)]


class VQA(TaskKindBase):
    name = "vqa"
    default_val_split = "val"
    main_metric = "accuracy"
    uses_vocab = True
    vilt_class = "question_answering"

    def label_names(self, vocab):
        return list(vocab or [])

    def answer_vocab(self, examples, max_answers: int) -> list[str]:
        return build_answer_vocab([ex.answers for ex in examples], max_answers)

    def make_head(self, width: int, vocab, vilt: bool = False):  # ViltForQuestionAnswering's classifier either way
        if not vocab:
            raise UserError("VQA needs a non-empty answer vocabulary (built from the training answers)")
        return VQAHead(width, len(vocab))

    def collate(self, items, tokenize, vocab_index, distractors, vocab) -> Collated:
        texts = [ex.text for ex in items]
        payload = Answers([ex.answers for ex in items],
                          torch.stack([vqa_targets(ex.answers, vocab_index) for ex in items]))
        # confidence proxy: the teacher's choice among "question answer" prompts, the GT answer first
        cands = [f"{ex.text} {a}" for ex in items for a in candidate_answers(ex.answers, vocab, distractors)]
        return Collated(tokenize(texts), payload, texts, cands, torch.zeros(len(items), dtype=torch.long))

    def targets(self, batch):
        return batch.task.targets

    def predictions(self, logits, vocab):
        return [vocab[i] for i in logits.argmax(-1).tolist()]

    def scorer(self) -> Scorer:
        return MeanScorer(_accuracies)

    def prior(self, train, train_meta, evals: dict[str, TaskData]):
        """The most frequent normalised human answer per question type; the overall one for unseen types."""
        by_type: dict[str, Counter] = {}
        overall: Counter = Counter()
        for ex in train:
            answers = [normalize_answer(a) for a in ex.answers]
            by_type.setdefault(question_type(ex, train_meta), Counter()).update(answers)
            overall.update(answers)
        fallback = overall.most_common(1)[0][0]

        def score(data: TaskData) -> dict[str, float]:
            preds = [by_type[t].most_common(1)[0][0] if (t := question_type(ex, data.meta)) in by_type else fallback
                     for ex in data.examples]
            return accuracy_result([vqa_accuracy(p, ex.answers) for p, ex in zip(preds, data.examples, strict=True)])

        return {name: score(data) for name, data in evals.items()}
