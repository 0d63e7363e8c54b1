"""Evaluation: zero-shot classification, retrieval and linear probe with CLIP_benchmark's definitions,
one result JSON per (model, dataset, task), and `eval build` to gather them into a CSV."""

from clipdistill.evaluation.datasets import ClassificationSet, RetrievalSet, open_imagefolder, open_retrieval
from clipdistill.evaluation.linear_probe import linear_probe_eval
from clipdistill.evaluation.results import build_csv, read_result, write_result
from clipdistill.evaluation.retrieval import recall_at_k, retrieval_eval
from clipdistill.evaluation.zeroshot import build_classifier, zeroshot_eval

__all__ = [
    "ClassificationSet", "RetrievalSet", "build_classifier", "build_csv", "linear_probe_eval", "open_imagefolder",
    "open_retrieval", "read_result", "recall_at_k", "retrieval_eval", "write_result", "zeroshot_eval",
]
