"""What passes between a CLIP-TD student, the frozen teacher and the objective: `StudentOutput`, what every VL
student's forward returns (ours, td/student.py, and the transformers ViLT adapter, td/hf_student.py), and
`TeacherSignals`, the teacher's features aligned to the student's positions, which token selection (selection.py)
and the distillation terms (objective.py) read, returned with the teacher's candidate probabilities and confidence
as one `TeacherPass` (`TDTask._teacher_signals`)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass(frozen=True)
class StudentOutput:
    """A VL student's forward: the pooled [CLS] (the task head's input), its hidden states at the image patches (grid
    order) and at the text positions, and the mask of real text tokens."""

    cls: torch.Tensor  # [B, d]
    image_tokens: torch.Tensor  # [B, N, d]
    text_tokens: torch.Tensor  # [B, L, d]
    text_mask: torch.Tensor  # bool [B, L]: real tokens (not padding)
    # last layer, heads averaged, detached: [CLS]'s attention to the image then the text tokens [B, N + L]; only when
    # the forward is asked for it (need_attention: the student_attention selection rule)
    cls_attention: torch.Tensor | None = None

    def rows(self, index: torch.Tensor) -> StudentOutput:
        """The output of the sequences `index` picks (VCR: each item's ground-truth candidate)."""
        return replace(self, **{f.name: v[index] for f in fields(self) if (v := getattr(self, f.name)) is not None})


@dataclass(frozen=True)
class TeacherSignals:
    """The frozen teacher's features of one batch, token ones aligned to the student's positions: patches pooled onto
    the student's grid, text tokens matched to the student's (same positions, or averaged by words)."""

    patch: torch.Tensor  # [B, N, D]: patch tokens on the student's grid
    tokens: torch.Tensor  # [B, L, D]: text token targets at the student's L positions
    mask: torch.Tensor  # bool [B, L]: the student positions that have a teacher target
    image_pooled: torch.Tensor  # [B, D]
    text_pooled: torch.Tensor  # [B, D]


@dataclass(frozen=True)
class TeacherPass:
    """What one frozen-teacher pass over a batch gives the objective (`TDTask._teacher_signals`): the aligned
    features, and the teacher's own judgement of each instance that the confidence weights read."""

    signals: TeacherSignals
    probs: torch.Tensor  # [B, C]: the teacher's probabilities over the candidates (answers, classes, choices)
    t2i_confidence: torch.Tensor  # [B]: its text-to-image confidence (per-modality weights)
