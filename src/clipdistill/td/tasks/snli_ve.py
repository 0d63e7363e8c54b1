"""SNLI-VE: 3-way classification (entailment, neutral, contradiction) of an image and a hypothesis."""

from __future__ import annotations

from collections import Counter

import torch

from clipdistill.data.tasks import TaskData
from clipdistill.td.batch import Labels, TDBatch
from clipdistill.td.heads import VE_LABELS, ClassifierHead, MLPClassifierHead
from clipdistill.td.metrics import accuracy_result
from clipdistill.td.tasks.base import Collated, MeanScorer, Scorer, TaskKindBase
from clipdistill.td.weighting import entailment_probs


def _hits(preds: list, batch: TDBatch) -> list[float]:
    return [float(p == y) for p, y in zip(preds, batch.task.labels.tolist(), strict=True)]


class SNLIVE(TaskKindBase):
    name = "snli_ve"
    default_val_split = "dev"
    main_metric = "accuracy"
    vilt_class = "question_answering"  # with three labels: the same classifier shape (heads.MLPClassifierHead)

    def label_names(self, vocab):
        return list(VE_LABELS)

    def make_head(self, width: int, vocab, vilt: bool = False):
        return MLPClassifierHead(width, len(VE_LABELS)) if vilt else ClassifierHead(width, len(VE_LABELS))

    def prior_bias(self, train, vocab, n_out):
        # a cross-entropy head: softmax(bias) = the subset's class shares (smoothed: a class it lacks stays possible)
        counts = torch.bincount(torch.tensor([ex.label for ex in train]), minlength=n_out).double() + 0.5
        return torch.log(counts / counts.sum()).float()

    def recorded_td_defaults(self) -> dict:
        return {"head_bias": "random"}  # how SNLI-VE cells ran before the option existed

    def collate(self, items, tokenize, vocab_index, candidates, vocab) -> Collated:
        texts = [ex.text for ex in items]
        labels = torch.tensor([ex.label for ex in items])
        return Collated(tokenize(texts), Labels(labels), texts, None, labels)

    def teacher_probs(self, task, img_pooled, txt_pooled, batch):
        """Proxy over the three classes from the hypothesis' image similarity against a neutral prompt's."""
        return entailment_probs(img_pooled, txt_pooled, task.null_embedding(), task.teacher.logit_scale)

    def scorer(self) -> Scorer:
        return MeanScorer(_hits)

    def prior(self, train, train_meta, evals: dict[str, TaskData]):
        """The majority class of the training subset."""
        majority = Counter(ex.label for ex in train).most_common(1)[0][0]
        return {name: accuracy_result([float(ex.label == majority) for ex in data.examples])
                for name, data in evals.items()}
