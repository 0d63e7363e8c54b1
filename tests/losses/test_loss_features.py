"""FeatureView: features selected by `Feature` members, made and gathered once per forward, and every registered
term reads only features whose inputs it declares."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clipdistill.errors import UserError
from clipdistill.losses import LOSSES, DistContext, LossInput, LossInputs, WeightedLoss, build_loss
from clipdistill.losses import features as feature_module
from clipdistill.losses.base import DistillLoss, LossDims, LossOptions
from clipdistill.losses.features import P_IMG, S_IMG, T_IMG, T_TXT, Feature, FeatureView

B, DS, DT, K = 3, 4, 6, 5


def _normal(g, *shape):
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def inputs_for(provided: set[LossInput]) -> LossInputs:
    """Student features plus exactly the `provided` inputs; the teacher's logit scale comes with teacher features,
    as the distill task sets it with them."""
    g = torch.Generator().manual_seed(0)
    inp = LossInputs(torch.randn(B, DS, generator=g).requires_grad_(True), torch.randn(B, DS, generator=g), 10.0)
    if LossInput.TEACHER in provided:
        inp.t_image_features, inp.t_text_features = _normal(g, B, DT), _normal(g, B, DT)
    if LossInput.TEACHER_ENSEMBLE in provided:  # members of other dims, so there are no single teacher features
        inp.t_ensemble = [(_normal(g, B, DT), _normal(g, B, DT)), (_normal(g, B, 8), _normal(g, B, 8))]
    if provided & {LossInput.TEACHER, LossInput.TEACHER_ENSEMBLE}:
        inp.t_logit_scale = 20.0
    if LossInput.MASKED_IMAGE in provided:
        inp.masked_image_features = torch.randn(B, DS, generator=g)
    if LossInput.CLUSTER_LABELS in provided:
        inp.cluster_labels = torch.tensor([0, 4, 2])
    if LossInput.HARD_NEGATIVES in provided:  # the second caption names no attribute: no negative
        inp.negative_text_features = torch.randn(B, DS, generator=g).requires_grad_(True)
        inp.negative_mask = torch.tensor([True, False, True])
    assert inp.provided() == provided
    return inp


def declared_cases():
    for name, cls in sorted(LOSSES.items()):
        yield pytest.param(name, set(cls.needs), id=name)
        if cls.averages_ensemble:
            ensemble = set(cls.needs) - {LossInput.TEACHER} | {LossInput.TEACHER_ENSEMBLE}
            yield pytest.param(name, ensemble, id=f"{name}-ensemble")


@pytest.mark.parametrize(("name", "provided"), list(declared_cases()))
def test_every_term_runs_on_exactly_its_declared_inputs(name, provided):
    """A term reading a feature whose input it does not declare fails here (FeatureView refuses the feature)."""
    loss = build_loss({name: {}}, DS, DT, centroids=torch.randn(K, DT), provided=provided)
    out = loss(inputs_for(provided))
    assert name in out and all(torch.isfinite(v).all() for v in out.values()), out
    out["loss"].backward()


class _Peek(DistillLoss):
    """Declares no input but reads the teacher's image features."""

    def forward(self, f: FeatureView) -> torch.Tensor:
        return f.local(T_IMG).sum()


def test_a_feature_beyond_the_declared_inputs_is_refused_by_name():
    dims = LossDims(DS, DT)
    loss = WeightedLoss({"peek": _Peek(LossOptions(), dims)}, {"peek": 1.0}, dims, local_loss=False)
    with pytest.raises(UserError, match=r"feature t_img needs teacher \(teacher features: .*missing: "
                                        r"t_image_features, t_text_features"):
        loss(inputs_for(set()))


def test_features_are_members_not_strings():
    view = FeatureView(inputs_for(set()), DistContext(), nn.Identity(), nn.Identity())
    with pytest.raises(TypeError, match="Feature members"):
        view.local("s_img")
    # the module-level names the terms import are the members of the same name
    assert all(getattr(feature_module, m.name) is m for m in Feature)
    assert {m for m in Feature if m.input is not None} == {Feature.P_MASKED, T_IMG, T_TXT, Feature.S_NEG}


def test_each_feature_is_made_and_gathered_once_per_forward(monkeypatch):
    sized = []
    real_sized = DistContext.sized
    monkeypatch.setattr(DistContext, "sized", lambda self, n, device: sized.append(n) or real_sized(self, n, device))
    view = FeatureView(inputs_for({LossInput.TEACHER}), DistContext(), nn.Identity(), nn.Identity())
    assert view.local(S_IMG) is view.local(S_IMG) and not sized  # local features never learn the row counts
    assert view.all(T_IMG) is view.all(T_IMG)
    view.logits(T_IMG, T_TXT, 1.0)
    assert sized == [B]  # the row counts are learnt once, at the first gather

    # across terms: the shared projector runs once per modality per forward, whichever terms read its output
    loss = build_loss({"fd": {}, "icl": {}, "vrd": {}, "cluster": {}}, DS, DT, centroids=torch.randn(K, DT))
    calls = []
    loss.image_proj.register_forward_hook(lambda *_: calls.append("image"))
    loss.text_proj.register_forward_hook(lambda *_: calls.append("text"))
    sized.clear()
    loss(inputs_for({LossInput.TEACHER, LossInput.CLUSTER_LABELS}))
    assert sorted(calls) == ["image", "text"] and sized == [B]

    sized.clear()
    build_loss({"fd": {}}, DS, DT)(inputs_for({LossInput.TEACHER}))
    assert not sized  # per-sample terms only: no collective at all
    assert P_IMG.input is None
