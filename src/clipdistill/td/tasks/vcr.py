"""VCR: multiple choice, Q->A and QA->R items per example; Q->AR joint accuracy."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

import torch

from clipdistill.data.tasks import TaskData
from clipdistill.errors import UserError
from clipdistill.td.batch import Labels, TDBatch
from clipdistill.td.examples import vcr_items
from clipdistill.td.heads import MultipleChoiceHead
from clipdistill.td.metrics import vcr_result
from clipdistill.td.tasks.base import Collated, Scorer, TaskKindBase


@dataclass(frozen=True)
class Choices(Labels):
    """VCR's payload: `labels` (the right candidate of each item) over `n_choices` candidate sequences per item
    (`TDBatch.ids` holds B * n_choices rows, item-major), and which decision each item is."""

    n_choices: int
    sub: list[Literal["q_a", "qa_r"]]


class _VCRScorer(Scorer):
    def __init__(self):
        self.vcr: dict[str, dict[str, tuple[int, int]]] = {"q_a": {}, "qa_r": {}}

    def add(self, preds: list, batch: TDBatch) -> None:
        task: Choices = batch.task
        for key, sub, p, y in zip(batch.keys, task.sub, preds, task.labels.tolist(), strict=True):
            self.vcr[sub][key] = (p, y)

    def result(self) -> dict[str, float]:
        return vcr_result(self.vcr)


class VCR(TaskKindBase):
    name = "vcr"
    default_val_split = "val"
    main_metric = "q_ar"
    vilt_class = "retrieval"

    def items(self, examples):
        return [it for ex in examples for it in vcr_items(ex)]

    def make_head(self, width: int, vocab, vilt: bool = False):
        return MultipleChoiceHead(width)  # Linear(width, 1): ViltForImageAndTextRetrieval's rank_output too

    def collate(self, items, tokenize, vocab_index, candidates, vocab) -> Collated:
        n = len(items[0].candidates)
        if any(len(it.candidates) != n for it in items):
            raise UserError("VCR items in one batch must have the same number of candidates")
        seqs = [f"{it.query} {c}" for it in items for c in it.candidates]
        labels = torch.tensor([it.label for it in items])
        payload = Choices(labels, n, [it.sub for it in items])
        # the teacher reads (and the student distils) each item's ground-truth candidate sequence
        return Collated(tokenize(seqs), payload, [seqs[i * n + it.label] for i, it in enumerate(items)], seqs, labels)

    def student_images(self, batch):
        return batch.image.repeat_interleave(batch.task.n_choices, dim=0)

    def logits(self, head, out, batch):
        return head(out.cls, batch.task.n_choices)

    def _rows(self, batch: TDBatch) -> torch.Tensor:
        task: Choices = batch.task
        return torch.arange(len(task.labels), device=task.labels.device) * task.n_choices + task.labels

    def distilled(self, out, batch):
        return out.rows(self._rows(batch))

    def distilled_ids(self, batch):
        return batch.ids[self._rows(batch)]

    def scorer(self) -> Scorer:
        return _VCRScorer()

    def prior(self, train, train_meta, evals: dict[str, TaskData]):
        """The most frequent correct position, for Q->A and QA->R separately."""
        position = {sub: Counter(it.label for it in self.items(train) if it.sub == sub).most_common(1)
                    for sub in ("q_a", "qa_r")}
        guess = {sub: c[0][0] if c else 0 for sub, c in position.items()}

        def score(data: TaskData) -> dict[str, float]:
            vcr: dict[str, dict[str, tuple[int, int]]] = {"q_a": {}, "qa_r": {}}
            for it in self.items(data.examples):
                vcr[it.sub][it.key] = (guess[it.sub], it.label)
            return vcr_result(vcr)

        return {name: score(data) for name, data in evals.items()}
