"""The answer-prior floor of a task: predictions that never look at the image, fitted on the training subset.

The row every VQA table needs (the VQA paper's "per Q-type prior"): a fine-tuned model that does not beat it
has learnt the answer statistics, not the task.
- VQA: the most frequent (normalised) human answer per question type (the annotation's `question_type`, else
  the question's first three words); the overall most frequent answer for a type the subset never saw;
- SNLI-VE: the majority class;
- VCR: the most frequent correct position, for Q->A and QA->R separately.
Scored with the same metrics as the trained models (`td.task.evaluate`).
"""

from __future__ import annotations

from collections import Counter

from clipdistill.data.tasks import TaskData
from clipdistill.errors import UserError
from clipdistill.td.examples import TaskExample, TaskKind, vcr_items
from clipdistill.td.metrics import accuracy_result, normalize_answer, vcr_result, vqa_accuracy


def question_type(ex: TaskExample, meta: dict) -> str:
    qt = meta.get(ex.key, {}).get("question_type")
    return str(qt).lower() if qt else " ".join(ex.text.lower().split()[:3])


def prior_metrics(kind: TaskKind, train: list[TaskExample], train_meta: dict,
                  evals: dict[str, TaskData]) -> dict[str, dict[str, float]]:
    """{"val": metrics, "shift:NAME": metrics} of the prior fitted on `train`, like `run_finetune`'s result."""
    if not train:
        raise UserError("the answer prior needs a non-empty training subset")
    if kind == "vqa":
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
    elif kind == "snli_ve":
        majority = Counter(ex.label for ex in train).most_common(1)[0][0]

        def score(data: TaskData) -> dict[str, float]:
            return accuracy_result([float(ex.label == majority) for ex in data.examples])
    else:
        position = {sub: Counter(it.label for ex in train for it in vcr_items(ex) if it.sub == sub).most_common(1)
                    for sub in ("q_a", "qa_r")}
        guess = {sub: c[0][0] if c else 0 for sub, c in position.items()}

        def score(data: TaskData) -> dict[str, float]:
            vcr: dict[str, dict[str, tuple[int, int]]] = {"q_a": {}, "qa_r": {}}
            for ex in data.examples:
                for it in vcr_items(ex):
                    vcr[it.sub][it.key] = (guess[it.sub], it.label)
            return vcr_result(vcr)
    return {name: score(data) for name, data in evals.items()}
