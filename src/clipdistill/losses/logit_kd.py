"""Terms that match the student's image-text similarity distributions to the teacher's."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipdistill.errors import ConfigError, UserError
from clipdistill.losses.base import RAW_SCALE_INIT, DistillLoss, LossDims, LossOptions, register_loss
from clipdistill.losses.features import P_IMG, P_TXT, S_IMG, S_TXT, T_IMG, T_TXT, FeatureView, distill_kl, soft_ce
from clipdistill.losses.inputs import LossInput


class LogitKDOptions(LossOptions):
    # TinyCLIP sets the teacher scale to 50 (`--logit-scale 50`); MobileCLIP uses 100; null = teacher's own.
    teacher_scale: float | None = 50.0
    temperature: float = 1.0
    # ensembles: mean of per-teacher softmaxes (MobileCLIP --distill-average-after-softmax) or of logits
    average_after_softmax: bool = True


@register_loss("logit_kd")
class LogitKD(DistillLoss):
    """TinyCLIP affinity mimicking / MobileCLIP ensemble KD (docs/reconstruction.md#tinyclip-affinity,
    #mobileclip): soft-target cross-entropy of the student's image->text and text->image logits to the
    teacher's softmaxed logits, both directions.

    With `LossInputs.t_ensemble` the target is the average over the teacher members; otherwise the single
    teacher. Temperature T divides both logits and the result is scaled by T^2 (T=1 in both papers).
    A sigmoid (SigLIP) teacher (`build_loss(..., teacher_sigmoid=True)`) is matched pair by pair instead: see
    `_sigmoid_kd` and the pairing table in docs/losses.md."""

    Options = LogitKDOptions
    needs = frozenset({LossInput.TEACHER})
    averages_ensemble = True

    def __init__(self, opts: LogitKDOptions, dims: LossDims):
        super().__init__(opts, dims)
        if dims.teacher_sigmoid:
            # a sigmoid teacher's probabilities need its own scale next to its own bias, and have no temperature
            if "teacher_scale" in opts.model_fields_set:
                raise ConfigError("loss 'logit_kd': a sigmoid (SigLIP) teacher's targets use its own scale with "
                                  "its own bias; remove teacher_scale (and teacher.logit_scale, which sets it)")
            if opts.temperature != 1.0:
                raise ConfigError("loss 'logit_kd': temperature applies to softmax teachers only; a sigmoid "
                                  "(SigLIP) teacher needs temperature 1")

    def uses_student_sigmoid(self) -> bool:
        return self.dims.teacher_sigmoid

    def _sigmoid_kd(self, f: FeatureView) -> torch.Tensor:
        """Sigmoid teacher: binary cross-entropy of every pair's student logit to the teacher's probability
        sigmoid(t_scale * cos + t_bias), summed over columns and averaged over rows as SigLIP normalises (with
        one-hot targets it is the `siglip` loss). One direction suffices: image->text and text->image are the
        same pairs. Student logits use its own scale and bias, or the loss-owned pair for a CLIP student."""
        if f.inputs.t_sigmoid is None:
            raise UserError("loss 'logit_kd' was built for a sigmoid teacher but got no teacher logit bias")
        if f.inputs.t_ensemble:
            raise UserError("loss 'logit_kd' does not average sigmoid teachers (an ensemble with a logit bias)")
        t_scale, t_bias = f.inputs.t_sigmoid
        s_scale, s_bias = f.sigmoid(self.name)
        target = torch.sigmoid(f.logits(T_IMG, T_TXT, t_scale) + t_bias)
        student = f.logits(S_IMG, S_TXT, s_scale) + s_bias
        return F.binary_cross_entropy_with_logits(student, target, reduction="sum") / student.shape[0]

    @staticmethod
    def _members(f: FeatureView):
        """(image, text, gathered image, gathered text) of each teacher: every ensemble member's, or the single
        teacher's through the view (made and gathered once per forward, shared with the other terms)."""
        if not f.inputs.t_ensemble:
            yield f.local(T_IMG), f.local(T_TXT), f.all(T_IMG), f.all(T_TXT)
            return
        for img, txt in f.inputs.t_ensemble:
            img, txt = img.detach(), txt.detach()
            yield img, txt, f.ctx.gather(img), f.ctx.gather(txt)

    def _targets(self, f: FeatureView, scale) -> tuple[torch.Tensor, torch.Tensor]:
        T, local = self.opts.temperature, f.ctx.local_loss
        i2t, t2i = [], []
        for img, txt, all_img, all_txt in self._members(f):
            i2t.append(scale * (img if local else all_img) @ all_txt.T / T)
            t2i.append(scale * (txt if local else all_txt) @ all_img.T / T)
        if self.opts.average_after_softmax:
            return (
                torch.stack([x.softmax(1) for x in i2t]).mean(0),
                torch.stack([x.softmax(1) for x in t2i]).mean(0),
            )
        return torch.stack(i2t).mean(0).softmax(1), torch.stack(t2i).mean(0).softmax(1)

    def forward(self, f: FeatureView) -> torch.Tensor:
        if self.dims.teacher_sigmoid:
            return self._sigmoid_kd(f)
        if f.inputs.t_sigmoid is not None:
            raise UserError("loss 'logit_kd' was built for a softmax teacher but the teacher has a logit bias "
                            "(build_loss(..., teacher_sigmoid=True))")
        scale = f.teacher_scale(self.opts.teacher_scale, self.name)
        p_i2t, p_t2i = self._targets(f, scale)
        T, s = self.opts.temperature, f.inputs.logit_scale
        s_i2t = f.logits(S_IMG, S_TXT, s) / T
        s_t2i = f.logits(S_TXT, S_IMG, s) / T
        return (soft_ce(s_i2t, p_i2t) + soft_ce(s_t2i, p_t2i)) / 2 * T**2


class CRDOptions(LossOptions):
    temperature: float = 1.0
    teacher_scale: float | None = None  # null = the teacher's own learned scale, as in CLIP-KD


@register_loss("crd")
class ContrastiveRelationalDistillation(DistillLoss):
    """CLIP-KD CRD (= CLIP-RD's HRD, docs/reconstruction.md#kd-crd): KL(teacher || student) of the contrastive
    distributions, both directions, T=1, batchmean. Student logits use the student's own (unprojected) features."""

    Options = CRDOptions
    needs = frozenset({LossInput.TEACHER})

    def forward(self, f: FeatureView) -> torch.Tensor:
        s, ts, T = (
            f.inputs.logit_scale,
            f.teacher_scale(self.opts.teacher_scale, self.name),
            self.opts.temperature,
        )
        return (
            distill_kl(f.logits(S_IMG, S_TXT, s), f.logits(T_IMG, T_TXT, ts), T)
            + distill_kl(f.logits(S_TXT, S_IMG, s), f.logits(T_TXT, T_IMG, ts), T)
        ) / 2


class CrossKDOptions(CRDOptions):
    init_scale: float = RAW_SCALE_INIT
    learnable: bool = True


@register_loss("cross_kd")
class CrossKD(DistillLoss):
    """CLIP-KD cross-KD (docs/reconstruction.md#kd-cross-kd): KL of the ICL logits (projected student vs teacher
    other modality, raw learnable scale) to the teacher's logits. The released code shares the scale with ICL; here each
    term owns its scale."""

    Options = CrossKDOptions
    needs = frozenset({LossInput.TEACHER})
    projects = True

    def __init__(self, opts: CrossKDOptions, dims: LossDims):
        super().__init__(opts, dims)
        self.scale_tensor("cross_scale", opts.init_scale, opts.learnable)

    def forward(self, f: FeatureView) -> torch.Tensor:
        c, ts, T = (
            self.cross_scale,
            f.teacher_scale(self.opts.teacher_scale, self.name),
            self.opts.temperature,
        )
        return (
            distill_kl(f.logits(P_IMG, T_TXT, c), f.logits(T_IMG, T_TXT, ts), T)
            + distill_kl(f.logits(P_TXT, T_IMG, c), f.logits(T_TXT, T_IMG, ts), T)
        ) / 2
