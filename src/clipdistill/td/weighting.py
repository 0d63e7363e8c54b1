"""Dynamic per-instance distillation weights from the teacher's zero-shot confidence in the ground truth —
OUR RECONSTRUCTION (docs/reconstruction.md#td-weighting; the paper's formula is unpublished). Every weight is detached.

Confidence c = the teacher's probability of the ground truth:
- multiple choice (VCR, and VQA through prompts "question answer" over a candidate set):
  softmax over candidates of logit_scale * cos(image, candidate text);
- SNLI-VE (a prompt-based proxy): q = sigmoid(logit_scale * (cos(image, hypothesis) - cos(image, null prompt)))
  is the teacher's "entailment" belief; p = [q, 1 - |2q - 1|, 1 - q] for (entailment, neutral, contradiction).
Weight w = c where the teacher's argmax is right, beta * c where it is wrong (beta = 0 drops those instances).
With `normalize`, w is divided by its batch mean: the weights then only redistribute the distillation signal
between instances (mean 1, as with uniform weights) instead of also shrinking it to the mean confidence.
Per modality (optional): [m_v, m_t] = 2 * softmax([c_i2t, c_t2i] / T), where c_i2t is the image->candidates
confidence above and c_t2i how strongly the ground-truth text picks its own image among the batch's images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from clipdistill.config import StrictModel


class WeightConfig(StrictModel):
    mode: Literal["confidence", "uniform"] = "confidence"  # uniform: w = 1 (naive distillation)
    beta: float = 0.0  # factor for instances the teacher gets wrong (0 drops them, 1 keeps c)
    per_modality: bool = False
    modality_temperature: float = 1.0
    normalize: bool = False  # divide by the batch mean (a batch the teacher gets all wrong with beta 0 stays 0)


def choice_probs(image_t: torch.Tensor, cand_t: torch.Tensor, logit_scale: torch.Tensor | float,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
    """[B, C] teacher probabilities over candidate texts cand_t [B, C, D] given image_t [B, D]; `valid` (bool
    [B, C]) keeps padding candidates out of the softmax (probability 0), so a padded row gives its real candidates
    the probabilities of the unpadded row."""
    sims = torch.einsum("bd,bcd->bc", F.normalize(image_t, dim=-1), F.normalize(cand_t, dim=-1))
    logits = logit_scale * sims
    if valid is not None:
        logits = logits.masked_fill(~valid, float("-inf"))
    return logits.softmax(-1)


def entailment_probs(
    image_t: torch.Tensor, hyp_t: torch.Tensor, null_t: torch.Tensor, logit_scale: torch.Tensor | float
) -> torch.Tensor:
    """[B, 3] proxy probabilities (entailment, neutral, contradiction); null_t [D] or [B, D] is a neutral prompt."""
    img = F.normalize(image_t, dim=-1)
    gap = (img * F.normalize(hyp_t, dim=-1)).sum(-1) - (img * F.normalize(null_t, dim=-1)).sum(-1)
    q = torch.sigmoid(logit_scale * gap)
    return torch.stack([q, 1 - (2 * q - 1).abs(), 1 - q], dim=-1)


def text_to_image_confidence(image_t: torch.Tensor, text_t: torch.Tensor, logit_scale: torch.Tensor | float):
    """[B]: probability that each ground-truth text retrieves its own image among the batch's images."""
    logits = logit_scale * F.normalize(text_t, dim=-1) @ F.normalize(image_t, dim=-1).T
    return logits.softmax(-1).diagonal()


@dataclass(frozen=True)
class InstanceWeights:
    """What `instance_weights` gives each instance of a batch (all detached)."""

    weight: torch.Tensor  # [B]: the distillation weight w
    confidence: torch.Tensor  # [B]: c, the teacher's probability of the ground truth
    teacher_correct: torch.Tensor  # bool [B]: the teacher's argmax is the ground truth


@torch.no_grad()
def instance_weights(probs: torch.Tensor, labels: torch.Tensor, cfg: WeightConfig) -> InstanceWeights:
    """The weights of the instances whose teacher probabilities are probs [B, C] and ground truths labels [B]."""
    conf = probs.gather(1, labels[:, None]).squeeze(1)
    correct = probs.argmax(1) == labels
    if cfg.mode == "uniform":
        w = torch.ones_like(conf)
    elif cfg.mode == "confidence":
        w = torch.where(correct, conf, cfg.beta * conf)
    else:
        raise ValueError(f"unknown weight mode {cfg.mode!r} (confidence | uniform)")
    if cfg.normalize:
        w = w / w.mean().clamp(min=1e-8)
    return InstanceWeights(weight=w.detach(), confidence=conf.detach(), teacher_correct=correct)


@torch.no_grad()
def modality_weights(conf_i2t: torch.Tensor, conf_t2i: torch.Tensor, temperature: float) -> torch.Tensor:
    """[B, 2] (vision, text) multipliers summing to 2, so uniform confidence leaves the loss unchanged."""
    return 2 * (torch.stack([conf_i2t, conf_t2i], dim=-1) / temperature).softmax(-1)
