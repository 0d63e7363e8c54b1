"""Zero-shot classification as CLIP_benchmark does it: class names x prompt templates, template
ensembling (mean of the normalised text embeddings of a class, renormalised), logits
`100 * image @ classifier`, top-1 / top-5 accuracy and mean per-class recall.

`zeroshot_eval` is also what `distill` calls every N steps: same function, same result schema.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipdistill.evaluation.datasets import ClassificationSet
from clipdistill.evaluation.features import encode_images, encode_texts
from clipdistill.evaluation.metrics import classification_metrics
from clipdistill.evaluation.results import make_record
from clipdistill.zoo import ClipModel

TASK = "zeroshot_classification"


def build_classifier(model: ClipModel, classnames: list[str], templates: list[str], *, batch_size: int = 256,
                     device: str = "cpu") -> tuple[torch.Tensor, float]:
    """([D, C] zero-shot weights, seconds inside encode_text). All prompts go through in batches."""
    prompts = [t.format(c=c) for c in classnames for t in templates]
    emb, seconds = encode_texts(model, prompts, batch_size=batch_size, device=device)
    per_class = emb.view(len(classnames), len(templates), -1).mean(dim=1)
    return F.normalize(per_class, dim=-1).T.contiguous(), seconds


def zeroshot_eval(model: ClipModel, dataset: ClassificationSet, *, batch_size: int = 64, num_workers: int = 0,
                  device: str = "cpu", limit: int | None = None, progress: bool = True) -> dict:
    """Evaluate and return the full result record (the JSON `eval zeroshot` writes)."""
    classifier, text_seconds = build_classifier(model, dataset.classnames, dataset.templates, device=device)
    enc = encode_images(model, dataset, batch_size=batch_size, num_workers=num_workers, device=device,
                        limit=limit, progress=progress)
    logits = 100.0 * enc.features @ classifier
    target = torch.tensor(dataset.labels)[enc.index]
    metrics = classification_metrics(logits, target, len(dataset.classnames), dataset.classnames)
    n_texts = len(dataset.classnames) * len(dataset.templates)
    return make_record(
        model, dataset=dataset.name, task=TASK, metrics=metrics, data_fingerprint=dataset.fingerprint(),
        samples=len(enc.index), skipped=enc.skipped, templates=dataset.templates, classnames=dataset.classnames,
        efficiency={"image_encode_per_s": len(enc.index) / max(enc.encode_seconds, 1e-9),
                    "text_encode_per_s": n_texts / max(text_seconds, 1e-9), "batch_size": batch_size,
                    "device": device},
    )
