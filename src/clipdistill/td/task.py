"""The CLIP-TD task for the shared training loop (`clipdistill.train` Task protocol): a VL student + task head,
optionally taught by a frozen zoo CLIP through the reconstructed CLIP-TD objective (objective.py).

Methods (`TDConfig.method`): `baseline` (task loss only), `naive` (all tokens, uniform weights) and
`clip_td` (the configured selection rule and confidence weights). The teacher is frozen, kept in eval
mode and out of `trainable()`, so it never enters checkpoints; the projection heads are trainable but
`export_modules()` leaves them out, so the exported task model is identical with and without CLIP-TD.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from clipdistill.config import StrictModel
from clipdistill.errors import UserError
from clipdistill.td.align import align_batch, teacher_spans
from clipdistill.td.batch import TDBatch, TeacherInputs, WordAlignment
from clipdistill.td.contracts import StudentOutput, TeacherPass, TeacherSignals
from clipdistill.td.examples import ChoiceItem, TaskExample
from clipdistill.td.objective import Distance, DistillHeads, distillation_terms
from clipdistill.td.selection import SelectionRule, select_tokens
from clipdistill.td.student import CLIP_MEAN, CLIP_STD, VLStudent, student_transform  # noqa: F401 (re-exported)
from clipdistill.td.tasks import Collated, TaskKindBase, task_kind
from clipdistill.td.weighting import WeightConfig, instance_weights, modality_weights, text_to_image_confidence

TextAlignment = Literal["words", "pooled"]


class TDConfig(StrictModel):
    """CLIP-TD objective settings — our reconstruction; every choice is an option (docs/clip_td.md)."""

    method: Literal["baseline", "naive", "clip_td", "prior"] = "clip_td"  # prior: no training (td/prior.py)
    selection: SelectionRule = "teacher_relevance"
    image_fraction: float = 0.5
    text_fraction: float = 0.5
    distance: Distance = "cosine"
    pooled_weight: float = 0.0
    lam: float = 1.0  # lambda: weight of the distillation sum against the task loss
    weights: WeightConfig = WeightConfig()
    # VQA confidence proxy: the GT answer vs up to `vqa_distractors` other answers: the most frequent training answers
    # of the question's own type ("question_type"; an unseen type falls back to "frequent"), or of the whole answer
    # vocabulary ("frequent") — our reconstruction's choice, the paper publishes no candidate set (docs/clip_td.md)
    vqa_distractors: int = Field(7, ge=0)
    vqa_candidates: Literal["question_type", "frequent"] = "question_type"
    null_prompt: str = "a photo."  # SNLI-VE confidence proxy baseline text
    # the task head's output bias: "prior" starts the head at the training subset's answer statistics (VQA:
    # sigmoid(bias) = each answer's mean soft score; SNLI-VE: softmax(bias) = the class shares), so a low-shot cell
    # starts at the answer prior instead of a random ranking; "random": nn.Linear's own init, as ViLT's heads
    head_bias: Literal["prior", "random"] = "prior"
    # a student whose tokenizer is not the teacher's (hf: ViLT, BERT WordPiece): text tokens matched to the teacher's
    # by words (td/align.py), or every student text token distilled towards the teacher's pooled text ("pooled")
    text_alignment: TextAlignment = "words"

    def effective(self) -> TDConfig:
        """naive = all tokens + uniform weights; baseline = no distillation."""
        if self.method == "naive":
            return self.model_copy(update={"selection": "all", "weights": WeightConfig(mode="uniform")})
        return self.model_copy()

    @property
    def distils(self) -> bool:
        return self.method not in ("baseline", "prior") and self.lam > 0


def align_patches(patch: torch.Tensor, grid: int) -> torch.Tensor:
    """Teacher patch tokens [B, n*n, D] average-pooled / resized to the student's grid [B, grid*grid, D]."""
    b, n, d = patch.shape
    side = int(round(n**0.5))
    if side * side != n:
        raise UserError(f"teacher patch tokens ({n}) are not a square grid")
    g = patch.transpose(1, 2).reshape(b, d, side, side)
    g = F.adaptive_avg_pool2d(g, grid) if side >= grid else F.interpolate(g, size=(grid, grid), mode="bilinear")
    return g.reshape(b, d, grid * grid).transpose(1, 2)


def align_text(tokens: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher per-token features / mask truncated or zero-padded to the student's text length."""
    b, lt, d = tokens.shape
    if lt >= length:
        return tokens[:, :length], mask[:, :length]
    pad = length - lt
    return F.pad(tokens, (0, 0, 0, pad)), F.pad(mask, (0, pad), value=False)


class Collator:
    """Turns a task kind's items (TaskExamples; VCR: ChoiceItems) into a `TDBatch` (the one place one is built);
    what differs per kind is the kind object's `collate` (td/tasks/)."""

    def __init__(self, kind: str | TaskKindBase, student: VLStudent, teacher=None, vocab: list[str] | None = None,
                 candidates=None, cached=None, text_alignment: TextAlignment = "words"):
        self.kind, self.teacher = task_kind(kind), teacher
        self.student = student
        self.cached = cached  # a td.cached.CachedImageTeacher: image signals read, not computed
        self.transform = student.image_transform()
        self.vocab = vocab or []
        self.index = {a: i for i, a in enumerate(self.vocab)}
        # the confidence candidates' policy (`kind.candidate_policy`, fitted on the training subset by the runner);
        # none given: the kind's policy fitted on no examples with td's defaults (VQA: every question falls back to
        # the vocabulary's most frequent answers)
        self.candidates = candidates if candidates is not None else self.kind.candidate_policy([], {}, self.vocab,
                                                                                                TDConfig())
        self.text_alignment = text_alignment
        self.aligned_rows = self.pooled_rows = 0  # texts aligned by words / fallen back to the pooled teacher text

    def _align(self, texts: list[str], teacher_ids: torch.Tensor) -> WordAlignment:
        """Word alignment of the student's text positions to the teacher's (students whose tokenizer differs from
        the teacher's: td/align.py); `pooled_rows` marks the rows that fall back to the pooled teacher text."""
        student = self.student.token_spans(texts)
        length = teacher_ids.shape[1]
        teacher = None if self.text_alignment == "pooled" else teacher_spans(self.teacher, texts, length)
        a, pooled = align_batch(texts, student, teacher, length)
        real = torch.tensor([[s is not None for s in row] for row in student], dtype=torch.bool)
        self.pooled_rows += int(pooled.sum())
        self.aligned_rows += int((~pooled).sum())
        return WordAlignment(a, pooled, real)

    def __call__(self, items: list) -> TDBatch:
        exs: list[TaskExample] = [it.example if isinstance(it, ChoiceItem) else it for it in items]
        pil = [ex.load_image() for ex in exs]
        image = torch.stack([self.transform(im) for im in pil])
        part = self.kind.collate(items, self.student.tokenize, self.index, self.candidates, self.vocab)
        return TDBatch([ex.key for ex in exs], image, part.ids, part.task,
                       None if self.teacher is None else self._teacher_inputs(exs, pil, part))

    def _teacher_inputs(self, exs: list[TaskExample], pil: list, part: Collated) -> TeacherInputs:
        tok = self.teacher.tokenizer
        image = pooled = patch = None
        if self.cached is not None:
            pooled, patch = self.cached.signals([ex.image for ex in exs])
        else:
            image = torch.stack([self.teacher.eval_transform(im) for im in pil])
        ids = tok(part.teacher_texts)
        alignment = None if self.student.token_spans is None else self._align(part.teacher_texts, ids)
        return TeacherInputs(ids, part.cand_labels, image, pooled, patch,
                             cand_ids=None if part.cand_texts is None else tok(part.cand_texts),
                             cand_valid=part.cand_valid, alignment=alignment)


class CandidateMemo:
    """The frozen teacher's text embeddings of candidate texts (VQA "question answer" prompts, VCR choices),
    memoised by token ids: every epoch asks for the same candidates again, and encoding them was most of a
    CLIP-TD step's teacher cost (8 candidates per VQA item). Least recently used entries go past `capacity`
    (D float32 each: 100k x 512 = 200 MB)."""

    def __init__(self, teacher, capacity: int = 100_000):
        self.teacher, self.capacity = teacher, capacity
        self.memo: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        keys = [tuple(row) for row in ids.tolist()]
        new = list(dict.fromkeys(k for k in keys if k not in self.memo))
        found = {k: self.memo[k] for k in keys if k in self.memo}
        if new:
            encoded = self.teacher.encode_text(torch.tensor(new, device=ids.device))
            found.update((k, e.clone()) for k, e in zip(new, encoded, strict=True))  # own storage, not the batch's
        for k, v in found.items():
            self.memo[k] = v
            self.memo.move_to_end(k)
        while len(self.memo) > self.capacity:
            self.memo.popitem(last=False)
        return torch.stack([found[k] for k in keys])


class TDTask:
    """Task protocol: `trainable()` and `training_step(batch)`; plus `predict` and `export_modules`."""

    def __init__(self, kind: str | TaskKindBase, student: VLStudent, td: TDConfig, teacher=None,
                 vocab: list[str] | None = None):
        self.task_kind = task_kind(kind)
        self.kind = self.task_kind.name
        self.student, self.td = student, td.effective()
        self.vocab = vocab or []
        self.head: nn.Module = self.task_kind.make_head(student.width, self.vocab,
                                                        vilt=getattr(student, "family", "") == "hf_vilt")
        self.teacher = teacher if self.td.distils else None
        if self.td.distils and teacher is None:
            raise UserError(f"method {td.method!r} needs a teacher (set teacher: {{models: [SPEC]}})")
        self.distill_heads = DistillHeads(student.width, teacher.embed_dim) if self.teacher is not None else None
        if self.teacher is not None:
            self.teacher.eval().requires_grad_(False)
            self._null = None
            self._candidates = CandidateMemo(self.teacher)

    def trainable(self) -> dict[str, nn.Module]:
        mods = {"student": self.student, "head": self.head}
        if self.distill_heads is not None:
            mods["distill_heads"] = self.distill_heads
        return mods

    def export_modules(self) -> dict[str, nn.Module]:
        """What inference needs: the student and its task head (teacher and projection heads are dropped)."""
        return {"student": self.student, "head": self.head}

    def _task_logits(self, out: StudentOutput, batch: TDBatch) -> torch.Tensor:
        return self.task_kind.logits(self.head, out, batch)

    def _forward(self, batch: TDBatch, need_attention: bool = False) -> StudentOutput:
        return self.student(self.task_kind.student_images(batch), batch.ids, need_attention=need_attention)

    def candidate_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's (memoised) text embeddings of candidate texts."""
        return self._candidates(ids)

    def null_embedding(self) -> torch.Tensor:
        """The teacher's embedding of `td.null_prompt` (SNLI-VE's confidence proxy baseline)."""
        if self._null is None:
            device = self.teacher.logit_scale.device
            self._null = self.teacher.encode_text(self.teacher.tokenizer([self.td.null_prompt]).to(device))[0]
        return self._null

    def training_step(self, batch: TDBatch) -> dict[str, torch.Tensor]:
        td = self.td
        out = self._forward(batch, need_attention=self.teacher is not None and td.selection == "student_attention")
        logits = self._task_logits(out, batch)
        task = self.head.loss(logits, self.task_kind.targets(batch))
        terms = {"task": task}
        if self.teacher is None:
            terms["loss"] = task
            return terms
        out = self.task_kind.distilled(out, batch)  # VCR: the ground-truth candidate's sequence of each item
        judged = self._teacher_signals(batch)
        teacher = judged.signals
        w = instance_weights(judged.probs, batch.teacher.labels, td.weights)
        modality = None
        if td.weights.per_modality:
            modality = modality_weights(w.confidence, judged.t2i_confidence, td.weights.modality_temperature)
        image_valid = torch.ones(out.image_tokens.shape[:2], dtype=torch.bool)
        text_valid = out.text_mask & teacher.mask
        sel_v, sel_t = select_tokens(td.selection, image_valid=image_valid, text_valid=text_valid,
                                     image_fraction=td.image_fraction, text_fraction=td.text_fraction,
                                     teacher=teacher, cls_attention=out.cls_attention)
        dist = distillation_terms(self.distill_heads, out, teacher, sel_v, sel_t, w.weight, modality,
                                  distance=td.distance, pooled_weight=td.pooled_weight)
        terms.update(dist)
        terms["weight_mean"] = w.weight.mean()
        terms["teacher_acc"] = w.teacher_correct.float().mean()
        terms["loss"] = task + td.lam * dist["distill"]
        return terms

    @torch.no_grad()
    def _teacher_signals(self, batch: TDBatch) -> TeacherPass:
        """The teacher's features aligned to the student's positions, its probabilities over the candidates [B, C]
        and its text-to-image confidence [B]."""
        t, inputs = self.teacher, batch.teacher
        if inputs is None:
            raise ValueError("a distilling task needs batches with teacher inputs: Collator(..., teacher=task.teacher)")
        device = inputs.ids.device
        if t.logit_scale.device != device:  # the loop moves batches and trainable modules, not the frozen teacher
            t.to(device)
            self._null = None
            self._candidates = CandidateMemo(t)
        if inputs.cached:  # read from a feature store by the Collator
            img_pooled, patch = inputs.image_pooled, inputs.patch
        else:
            img_pooled, patch = t.encode_image_tokens(inputs.image)
        txt_pooled, tokens, tmask = t.encode_text_tokens(inputs.ids)
        if inputs.alignment is not None:  # another tokenizer: teacher tokens averaged onto the student's positions
            align = inputs.alignment
            a = align.matrix.to(tokens.dtype)
            tokens, tmask = a @ tokens, a.sum(-1) > 0
            pooled = align.pooled_rows
            if pooled.any():  # no word alignment: every real student token is distilled towards the pooled text
                tokens = torch.where(pooled[:, None, None], txt_pooled[:, None, :].expand_as(tokens), tokens)
                tmask = torch.where(pooled[:, None], align.real, tmask)
        else:
            tokens, tmask = align_text(tokens, tmask, batch.ids.shape[1])
        signals = TeacherSignals(patch=align_patches(patch, self.student.grid), tokens=tokens, mask=tmask,
                                 image_pooled=img_pooled, text_pooled=txt_pooled)
        return TeacherPass(signals, probs=self.task_kind.teacher_probs(self, img_pooled, txt_pooled, batch),
                           t2i_confidence=text_to_image_confidence(img_pooled, txt_pooled, t.logit_scale))

    @torch.no_grad()
    def predict(self, batch: TDBatch) -> list:
        """Predicted answer strings (VQA) or class / candidate indices (SNLI-VE, VCR)."""
        return self.task_kind.predictions(self._task_logits(self._forward(batch), batch), self.vocab)


def evaluate(task: TDTask, batches) -> dict[str, float]:
    """The task kind's metrics over collated batches: VQA official accuracy, SNLI-VE accuracy, VCR Q->A / QA->R /
    Q->AR."""
    for m in task.export_modules().values():
        m.eval()
    scorer = task.task_kind.scorer()
    device = next(task.student.parameters()).device  # where the loop left the student (cuda after GPU training)
    for batch in batches:
        batch = batch.to(device)
        scorer.add(task.predict(batch), batch)
    return scorer.result()
