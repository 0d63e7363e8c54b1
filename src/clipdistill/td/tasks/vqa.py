"""VQA (v2 / VQA-CP): answer classification over a vocabulary of training answers, official accuracy."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

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


def majority_answer(answers: list[str]) -> str:
    """The most frequent normalised human answer (ties: the one given first)."""
    norm = [normalize_answer(a) for a in answers]
    return max(set(norm), key=lambda a: (norm.count(a), -norm.index(a)))


def candidate_answers(answers: list[str], vocab: list[str], distractors: int) -> list[str]:
    """GT (most frequent human answer) first, then the most frequent other vocabulary answers."""
    gt = majority_answer(answers)
    return [gt] + [a for a in vocab if a != gt][:distractors]


CandidateMode = Literal["question_type", "frequent"]


@dataclass(frozen=True)
class AnswerCandidates:
    """The candidate answers of VQA's confidence proxy (`td.vqa_candidates`), fitted on the training subset.

    `frequent`: the GT answer and the vocabulary's most frequent other answers, whatever the question asks.
    `question_type`: the GT answer and the most frequent other answers of the question's own type (its training
    answers that are in the answer vocabulary, counted over all human answers as the type prior counts them), up to
    `distractors`; a type with fewer answers gets fewer candidates (never padded with answers of other types), and
    a type the training subset never asked falls back to `frequent` for that question."""

    vocab: list[str]  # the answer vocabulary, most frequent first (`frequent`'s distractors)
    mode: CandidateMode = "question_type"
    distractors: int = 7
    by_type: dict[str, list[str]] = field(default_factory=dict)  # question type -> its answers, most frequent first
    meta: dict = field(default_factory=dict)  # the training split's per-key metadata (its question_type)

    @classmethod
    def fit(cls, examples: Sequence, meta: dict, vocab: list[str], mode: CandidateMode = "question_type",
            distractors: int = 7) -> AnswerCandidates:
        counts: dict[str, Counter] = {}
        kept = set(vocab)
        for ex in examples:
            counts.setdefault(question_type(ex, meta), Counter()).update(
                a for a in map(normalize_answer, ex.answers) if a in kept)
        # ties alphabetically, as the vocabulary breaks them
        by_type = {t: sorted(c, key=lambda a: (-c[a], a)) for t, c in counts.items() if c}
        return cls(list(vocab), mode, distractors, by_type, meta)

    @property
    def width(self) -> int:
        """Candidates per instance in a batch (distinct ones, then repeats masked out of the softmax)."""
        return 1 + self.distractors

    def choose(self, ex, meta: dict | None = None) -> list[str]:
        """`ex`'s distinct candidate answers, the GT first; `meta`: the metadata of `ex`'s split (default: the
        training split's)."""
        ranked = None
        if self.mode == "question_type":
            ranked = self.by_type.get(question_type(ex, self.meta if meta is None else meta))
        if ranked is None:  # `frequent`, or a question type unseen in training
            return candidate_answers(ex.answers, self.vocab, self.distractors)
        gt = majority_answer(ex.answers)
        return [gt] + [a for a in ranked if a != gt][: self.distractors]


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

    def prior_bias(self, train, vocab, n_out):
        # a BCE head: sigmoid(bias) = each answer's mean soft score over the subset
        index = {a: i for i, a in enumerate(vocab or [])}
        total = torch.zeros(len(index), dtype=torch.float64)
        for ex in train:  # summed, not stacked: VQA v2's 443k questions x 3,129 answers would be ~5.5 GB
            total += vqa_targets(ex.answers, index)
        p = (total / max(len(train), 1)).clamp(1e-6, 1 - 1e-6)
        return (torch.log(p) - torch.log1p(-p)).float()

    def candidate_policy(self, train, train_meta, vocab, td) -> AnswerCandidates:
        return AnswerCandidates.fit(train, train_meta, list(vocab or []), td.vqa_candidates, td.vqa_distractors)

    def recorded_td_defaults(self) -> dict:
        return {"vqa_candidates": "frequent", "head_bias": "random"}  # how VQA cells ran before the options existed

    def collate(self, items, tokenize, vocab_index, candidates: AnswerCandidates, vocab) -> Collated:
        texts = [ex.text for ex in items]
        payload = Answers([ex.answers for ex in items],
                          torch.stack([vqa_targets(ex.answers, vocab_index) for ex in items]))
        # confidence proxy: the teacher's choice among "question answer" prompts, the GT answer first. Every row
        # has `width` candidates (the [B, C] layout): a row with fewer distinct ones repeats its GT, and the
        # repeats are masked out of the softmax (`cand_valid`), so they never change p(GT)
        cands, valid = [], []
        for ex in items:
            row = candidates.choose(ex)
            pad = candidates.width - len(row)
            cands += [f"{ex.text} {a}" for a in row + [row[0]] * pad]
            valid.append([True] * len(row) + [False] * pad)
        return Collated(tokenize(texts), payload, texts, cands, torch.zeros(len(items), dtype=torch.long),
                        torch.tensor(valid, dtype=torch.bool))

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
