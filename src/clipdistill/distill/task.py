"""`DistillTask`: student CLIP (trainable) + frozen teacher(s) + `WeightedLoss`, as a `train.Task`."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from clipdistill.distill.batch import DistillBatch, TeacherMode
from clipdistill.distill.teacher import FrozenTeachers, TeacherOutputs
from clipdistill.errors import UserError
from clipdistill.losses import LossInput, LossInputs, WeightedLoss, masked_encode_image
from clipdistill.zoo import ClipModel


class DistillTask:
    """One step: student forward, teacher features (online forward or read from the batch for a cached
    teacher), optional masked-image pass (mfd) and cluster labels (cluster), then the weighted loss.

    Cluster labels come with the batch (`DistillBatch.cluster_labels`, joined by sample key from the balance
    output by `distill.joins`), not looked up by `batch.index`: that is the source row for a map source but only
    the position inside its tar for a stream source."""

    # loss inputs the step computes from the student itself, whatever the config (the rest come with the data)
    COMPUTES: ClassVar[frozenset[LossInput]] = frozenset({LossInput.MASKED_IMAGE})

    def __init__(self, student: ClipModel, loss: WeightedLoss, teachers: FrozenTeachers | None = None,
                 mask_ratio: float = 0.5):
        self.student, self.loss, self.teachers = student, loss, teachers
        self.mask_ratio = mask_ratio

    def trainable(self) -> dict[str, nn.Module]:
        return {"student": self.student, "loss": self.loss}

    def teacher_outputs(self, batch: DistillBatch) -> TeacherOutputs | None:
        if batch.teacher_mode is TeacherMode.CACHED:  # features come with the data, no teacher forward
            c = batch.cached
            return TeacherOutputs([(c.image, c.text)], c.logit_scale, c.sigmoid)
        if batch.teacher_mode is TeacherMode.NONE or self.teachers is None:
            return None
        if self.teachers.models[0].logit_scale.device != batch.teachers[0].image.device:
            self.teachers.to(batch.teachers[0].image.device)
        return self.teachers(batch.teachers)

    def training_step(self, batch: DistillBatch) -> dict[str, torch.Tensor]:
        # Teacher first: run while the student's autograd graph is not yet alive, its activations reuse
        # freed memory instead of adding to the peak (measured: online step 1.17x -> 1.00x of teacher
        # forward + plain step, benchmarks/bench_distill.py).
        t = self.teacher_outputs(batch) if LossInput.TEACHER in self.loss.needs else None
        texts, negatives = batch.student.text, LossInput.HARD_NEGATIVES in self.loss.needs
        if negatives:  # one text forward for captions and their negatives
            if batch.negatives is None:
                raise UserError("the negclip loss needs a hard negative caption per pair: set data.hard_negatives=swap")
            present = [i for i, c in enumerate(batch.negatives) if c is not None]
            if present:  # a caption without a negative is not encoded: its column is masked out of the loss
                ids = self.student.tokenizer([batch.negatives[i] for i in present]).to(texts.device)
                texts = torch.cat([texts, ids])
        out = self.student(batch.student.image, texts)
        n = len(batch)
        inputs = LossInputs(out["image_features"], out["text_features"][:n], out["logit_scale"],
                            logit_bias=out.get("logit_bias"))
        if negatives:
            feats = out["text_features"]
            rows = torch.tensor(present, dtype=torch.long, device=feats.device)
            # zeros where a pair has no negative, so every rank's block keeps one row per pair for the gather
            inputs.negative_text_features = feats.new_zeros(n, feats.shape[1]).index_copy(0, rows, feats[n:])
            inputs.negative_mask = torch.tensor([c is not None for c in batch.negatives], device=texts.device)
        if t is not None:
            single = t.single
            if single is not None:
                inputs.t_image_features, inputs.t_text_features = single
            inputs.t_logit_scale = t.logit_scale
            inputs.t_sigmoid = t.sigmoid
            if len(t.members) > 1:
                inputs.t_ensemble = t.members
        if LossInput.MASKED_IMAGE in self.loss.needs:
            inputs.masked_image_features = masked_encode_image(self.student, batch.student.image, self.mask_ratio)
        if LossInput.CLUSTER_LABELS in self.loss.needs:
            inputs.cluster_labels = self._labels(batch)
        return self.loss(inputs)

    def _labels(self, batch: DistillBatch) -> torch.Tensor:
        if batch.cluster_labels is None:
            raise UserError("the cluster loss needs cluster labels: train on a balance output (data.keep)")
        return batch.cluster_labels
