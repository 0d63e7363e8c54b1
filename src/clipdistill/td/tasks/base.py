"""What one CLIP-TD task kind supplies. Everything that differs between VQA, SNLI-VE and VCR lives in a subclass
(one module per kind, registered in `td/tasks/__init__.py`); the collator, the task, the runner, the prior and the
protocol ask the kind object and never branch on its name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from clipdistill.data.tasks import TaskData, open_task, task_image_dir
from clipdistill.splits import stratum
from clipdistill.td.batch import Labels, TaskPayload, TDBatch
from clipdistill.td.contracts import StudentOutput
from clipdistill.td.examples import TaskExample
from clipdistill.td.metrics import accuracy_result
from clipdistill.td.weighting import choice_probs


@dataclass(frozen=True)
class Collated:
    """What a kind's `collate` gives the Collator (td/task.py), which adds the images and the teacher's tokens: the
    student's token ids (`TDBatch.ids`), the kind's payload (`TDBatch.task`), and the texts the teacher reads:
    `teacher_texts` (one per instance: the text distilled), `cand_texts` (candidate texts of the confidence weights,
    the same number per instance, or None), `cand_labels` (index of the right candidate / class) and `cand_valid`
    (bool [B, C]: the candidates each row really has; None: all of them; the others are padding)."""

    ids: torch.Tensor
    task: TaskPayload
    teacher_texts: list[str]
    cand_texts: list[str] | None
    cand_labels: torch.Tensor
    cand_valid: torch.Tensor | None = None


class TaskKindBase:
    """Reader, items, head, collation, teacher answer probabilities, metric and prior of one task kind."""

    name: ClassVar[str]
    default_val_split: ClassVar[str]  # the dataset's own name for its validation split
    main_metric: ClassVar[str]  # the metric the protocol's summary reports
    uses_vocab: ClassVar[bool] = False  # answers are a vocabulary built from the training answers (VQA)
    # the transformers ViLT class an hf: student's task model exports as (td/export_hf.py): "question_answering"
    # (ViltForQuestionAnswering, one logit per label) or "retrieval" (ViltForImageAndTextRetrieval, one score)
    vilt_class: ClassVar[str | None] = None

    def label_names(self, vocab: list[str] | None) -> list[str]:
        """The class names of the head's outputs (the export's id2label)."""
        return []

    def read(self, folder: str | Path, split: str, images: str | Path | None = None) -> TaskData:
        return open_task(self.name, folder, split, images)

    def image_dir(self, folder: str | Path, images: str | Path | None = None) -> Path:
        """Where the task's images are (the folder a teacher feature store of them is keyed by)."""
        return task_image_dir(self.name, folder, images)

    def stratum(self, ex: TaskExample, meta: dict[str, Any]) -> str:
        """What low-shot subsets and the dev carve are stratified by."""
        return stratum(self.name, ex, meta)

    def items(self, examples: Sequence[TaskExample]) -> list:
        """What one training / eval step consumes per instance (VCR: two multiple-choice items per example)."""
        return list(examples)

    def answer_vocab(self, examples: Sequence[TaskExample], max_answers: int) -> list[str] | None:
        return None

    def make_head(self, width: int, vocab: list[str] | None, vilt: bool = False) -> nn.Module:
        """The task head over the student's `cls`; `vilt`: shaped like a transformers ViLT head (hf: students), so
        the task model exports as a transformers ViLT class."""
        raise NotImplementedError

    def prior_bias(self, train: Sequence[TaskExample], vocab: list[str] | None, n_out: int) -> torch.Tensor | None:
        """The bias of the head's output layer (`head.output`, `n_out` wide) under `td.head_bias: prior`: with it the
        head, before any step, ranks answers by the training subset's answer statistics rather than by its random
        init. None: no such bias (multiple choice scores each candidate alone)."""
        return None

    def candidate_policy(self, train: Sequence[TaskExample], train_meta: dict, vocab: list[str] | None,
                         td: Any) -> Any:
        """What `collate` needs to choose each instance's confidence-weight candidates, fitted on the training
        subset with the run's `td` settings (VQA: each question type's answers); None where the items carry their
        candidates (VCR) or there are none (SNLI-VE)."""
        return None

    def recorded_td_defaults(self) -> dict[str, Any]:
        """td options added after protocol cells of this kind were first recorded, whose default is not how those
        cells ran: a resumed protocol fills a recorded cell's missing keys with these."""
        return {}

    def collate(self, items: list, tokenize, vocab_index: dict[str, int], candidates: Any,
                vocab: list[str]) -> Collated:
        """`tokenize(texts) -> ids` is the student's tokenizer; `candidates` is `candidate_policy`'s result."""
        raise NotImplementedError

    def student_images(self, batch: TDBatch) -> torch.Tensor:
        """The images the student sees, one per text sequence."""
        return batch.image

    def logits(self, head: nn.Module, out: StudentOutput, batch: TDBatch) -> torch.Tensor:
        return head(out.cls)

    def targets(self, batch: TDBatch) -> torch.Tensor:
        """The head's loss target; this default serves kinds whose payload is `Labels` (or extends it)."""
        if not isinstance(batch.task, Labels):
            raise TypeError(f"a {type(batch.task).__name__} payload has no labels: its kind defines targets()")
        return batch.task.labels

    def distilled(self, out: StudentOutput, batch: TDBatch) -> StudentOutput:
        """The student outputs distilled: one row per instance (VCR keeps the ground-truth candidate's row)."""
        return out

    def distilled_ids(self, batch: TDBatch) -> torch.Tensor:
        return batch.ids

    def teacher_probs(self, task, img_pooled: torch.Tensor, txt_pooled: torch.Tensor, batch: TDBatch) -> torch.Tensor:
        """[B, C] teacher probabilities over the candidates (`batch.teacher.labels` indexes the right one).
        `task` (a TDTask) gives the memoised candidate text embeddings: `task.candidate_embeddings(ids)`."""
        cand = task.candidate_embeddings(batch.teacher.cand_ids).view(len(img_pooled), -1, img_pooled.shape[-1])
        return choice_probs(img_pooled, cand, task.teacher.logit_scale, batch.teacher.cand_valid)

    def predictions(self, logits: torch.Tensor, vocab: list[str] | None) -> list:
        return logits.argmax(-1).tolist()

    def scorer(self) -> Scorer:
        raise NotImplementedError

    def prior(self, train: list[TaskExample], train_meta: dict, evals: dict[str, TaskData]) -> dict[str, dict]:
        """{split name: metrics} of the answer prior fitted on `train` (td/prior.py)."""
        raise NotImplementedError


class Scorer:
    """Accumulates predictions batch by batch; `result()` gives the kind's metrics dict (with "n")."""

    def add(self, preds: list, batch: TDBatch) -> None:
        raise NotImplementedError

    def result(self) -> dict[str, float]:
        raise NotImplementedError


class MeanScorer(Scorer):
    """The mean of a per-example score (`metrics.accuracy_result`): `score(preds, batch)` gives one float per
    prediction (a hit for SNLI-VE, the official VQA accuracy for VQA)."""

    def __init__(self, score: Callable[[list, TDBatch], list[float]]):
        self.score = score
        self.scores: list[float] = []

    def add(self, preds: list, batch: TDBatch) -> None:
        self.scores += self.score(preds, batch)

    def result(self) -> dict[str, float]:
        return accuracy_result(self.scores)
