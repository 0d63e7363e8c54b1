"""The answer-prior floor of a task: predictions that never look at the image, fitted on the training subset.

The row every VQA table needs (the VQA paper's "per Q-type prior"): a fine-tuned model that does not beat it
has learnt the answer statistics, not the task.
- VQA: the most frequent (normalised) human answer per question type (the annotation's `question_type`, else
  the question's first three words); the overall most frequent answer for a type the subset never saw;
- SNLI-VE: the majority class;
- VCR: the most frequent correct position, for Q->A and QA->R separately.
Scored with the same metrics as the trained models (`td.task.evaluate`). Each rule is its task kind's `prior`.
"""

from __future__ import annotations

from clipdistill.data.tasks import TaskData
from clipdistill.errors import UserError
from clipdistill.td.examples import TaskExample
from clipdistill.td.tasks import TaskKindBase, task_kind
from clipdistill.td.tasks.vqa import question_type

__all__ = ["prior_metrics", "question_type"]


def prior_metrics(kind: str | TaskKindBase, train: list[TaskExample], train_meta: dict,
                  evals: dict[str, TaskData]) -> dict[str, dict[str, float]]:
    """{"val": metrics, "shift:NAME": metrics} of the prior fitted on `train`, like `run_finetune`'s result; each
    kind's rule is its `prior` (td/tasks/)."""
    if not train:
        raise UserError("the answer prior needs a non-empty training subset")
    return task_kind(kind).prior(train, train_meta, evals)
