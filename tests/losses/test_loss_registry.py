"""Registry errors, projector creation, learnable state, input checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clipdistill.errors import ConfigError, UserError
from clipdistill.losses import LOSSES, LossInput, LossInputs, build_loss


def batch(b=3, ds=4, dt=6, **kw):
    g = torch.Generator().manual_seed(0)
    return LossInputs(
        torch.randn(b, ds, generator=g),
        torch.randn(b, ds, generator=g),
        torch.tensor(10.0),
        F.normalize(torch.randn(b, dt, generator=g), dim=1),
        F.normalize(torch.randn(b, dt, generator=g), dim=1),
        torch.tensor(20.0),
        **kw,
    )


def test_unknown_loss_names_closest():
    with pytest.raises(ConfigError, match="did you mean 'clip'"):
        build_loss({"clp": {}}, 4, 6)


def test_unknown_option_names_closest():
    with pytest.raises(ConfigError, match="did you mean 'margin'"):
        build_loss({"cluster": {"margn": 0.3}}, 4, 6, centroids=torch.randn(5, 6))


def test_bad_option_value_and_spec_shape():
    with pytest.raises(ConfigError, match="sample_rate"):
        build_loss({"cluster": {"sample_rate": 2}}, 4, 6, centroids=torch.randn(5, 6))
    with pytest.raises(ConfigError, match="non-empty mapping"):
        build_loss({}, 4, 6)
    with pytest.raises(ConfigError, match="options must be a mapping"):
        build_loss({"fd": 3}, 4, 6)


def test_teacher_loss_needs_teacher_dim_and_cluster_needs_centres():
    with pytest.raises(ConfigError, match="teacher_dim"):
        build_loss({"fd": {}}, 4)
    with pytest.raises(UserError, match="k-means centres"):
        build_loss({"cluster": {}}, 4, 6)
    with pytest.raises(UserError, match=r"\[K, 6\]"):
        build_loss({"cluster": {}}, 4, 6, centroids=torch.randn(5, 4))


def test_default_weights_and_needs():
    loss = build_loss({"clip": {}, "fd": {}, "gd": {}, "mfd": {"weight": 3}}, 4, 6)
    assert loss.weights == {"clip": 1.0, "fd": 2000.0, "gd": 1e8, "mfd": 3.0}
    assert loss.needs == {"teacher", "masked_image"}
    assert build_loss({"clip": {}}, 4).needs == set()
    assert LOSSES["cluster"].needs == {"cluster_labels"}


def test_projector_created_only_when_dims_differ_and_used():
    differ = build_loss({"fd": {}}, 4, 6)
    assert isinstance(differ.image_proj, nn.Linear) and differ.image_proj.weight.shape == (6, 4)
    assert isinstance(differ.text_proj, nn.Linear)
    assert isinstance(build_loss({"fd": {}}, 6, 6).image_proj, nn.Identity)
    assert isinstance(build_loss({"clip": {}, "crd": {}}, 4, 6).image_proj, nn.Identity)


def test_learnable_parts_in_state_dict_and_restored():
    spec = {
        "icl": {},
        "afd": {},
        "vrd": {},
        "xrd": {},
        "instance": {},
        "cross_kd": {},
        "cluster": {"learnable_centres": True},
    }
    loss = build_loss(spec, 4, 6, num_clusters=5)
    params = dict(loss.named_parameters())
    for key in (
        "image_proj.weight",
        "text_proj.weight",
        "terms.icl.cross_scale",
        "terms.afd.image_fusion.weight",
        "terms.afd.fusion_scale",
        "terms.vrd.image_scale",
        "terms.vrd.text_scale",
        "terms.xrd.cross_scale",
        "terms.instance.log_scale",
        "terms.cross_kd.cross_scale",
        "terms.cluster.centres",
    ):
        assert key in params and key in loss.state_dict()
    frozen = build_loss({"cluster": {}, "icl": {"learnable": False}}, 4, 6, centroids=torch.randn(5, 6))
    names = dict(frozen.named_parameters())
    assert "terms.cluster.centres" not in names and "terms.cluster.centres" in frozen.state_dict()
    assert "terms.icl.cross_scale" not in names and "terms.icl.cross_scale" in frozen.state_dict()

    inp = batch(cluster_labels=torch.tensor([0, 4, 2]))
    with torch.no_grad():
        for p in loss.parameters():
            p.add_(0.1)
    torch.manual_seed(0)
    restored = build_loss(spec, 4, 6, num_clusters=5)
    restored.load_state_dict(loss.state_dict())
    a, b = loss(inp), restored(inp)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gradients_reach_student_and_loss_parameters():
    inp = batch()
    inp.image_features.requires_grad_(True)
    loss = build_loss({"clip": {}, "icl": {}, "fd": {}}, 4, 6)
    loss(inp)["loss"].backward()
    assert inp.image_features.grad.abs().sum() > 0
    assert loss.terms["icl"].cross_scale.grad is not None and loss.image_proj.weight.grad.abs().sum() > 0


def test_missing_inputs_are_clear_errors():
    with pytest.raises(UserError, match="'mfd' needs masked_image"):
        build_loss({"mfd": {}}, 4, 6)(batch())
    with pytest.raises(UserError, match="'fd' needs teacher"):
        build_loss({"fd": {}}, 4, 6)(LossInputs(torch.randn(2, 4), torch.randn(2, 4), 1.0))
    with pytest.raises(UserError, match="t_logit_scale"):
        inp = batch()
        inp.t_logit_scale = None
        build_loss({"crd": {}}, 4, 6)(inp)
    with pytest.raises(UserError, match=r"labels must be in \[0, 5\)"):
        build_loss({"cluster": {}}, 4, 6, centroids=torch.randn(5, 6))(
            batch(cluster_labels=torch.tensor([0, 5, 1]))
        )


def test_declared_inputs_are_checked_once_when_built():
    with pytest.raises(UserError, match=r"'fd' needs teacher \(teacher features: set teacher.models"):
        build_loss({"clip": {}, "fd": {}}, 4, 6, provided=set())
    with pytest.raises(UserError, match=r"'mfd' needs masked_image .*missing: masked_image_features"):
        build_loss({"mfd": {}}, 4, 6, provided={LossInput.TEACHER})
    with pytest.raises(UserError, match=r"'cluster' needs cluster_labels .*set data.keep"):
        build_loss({"cluster": {}}, 4, 6, provided={LossInput.TEACHER})
    # an ensemble without single features feeds only a term that averages members itself
    with pytest.raises(UserError, match="differ in dim"):
        build_loss({"fd": {}}, 4, 6, provided={LossInput.TEACHER_ENSEMBLE})
    assert LOSSES["logit_kd"].averages_ensemble and not LOSSES["fd"].averages_ensemble
    build_loss({"logit_kd": {}}, 4, 6, provided={LossInput.TEACHER_ENSEMBLE})
    # declared at build: calls are not checked again (the caller promised the inputs)
    loss = build_loss({"clip": {}, "fd": {}}, 4, 6, provided={LossInput.TEACHER})
    assert loss.checked and loss.needs == {LossInput.TEACHER}
    assert set(loss(batch())) == {"loss", "clip", "fd"}
    assert not build_loss({"fd": {}}, 4, 6).checked


def test_inputs_report_what_they_carry():
    assert batch().provided() == {LossInput.TEACHER}
    members = [(torch.randn(3, 6), torch.randn(3, 6))]
    inp = LossInputs(torch.randn(3, 4), torch.randn(3, 4), 1.0, t_ensemble=members, cluster_labels=torch.zeros(3))
    assert inp.provided() == {LossInput.TEACHER_ENSEMBLE, LossInput.CLUSTER_LABELS}


def test_half_batches_equal_full_batch_only_for_per_sample_terms():
    inp = batch(b=4, cluster_labels=torch.tensor([0, 1, 2, 3]))
    halves = [
        LossInputs(
            inp.image_features[s],
            inp.text_features[s],
            inp.logit_scale,
            inp.t_image_features[s],
            inp.t_text_features[s],
            inp.t_logit_scale,
            cluster_labels=inp.cluster_labels[s],
        )
        for s in (slice(0, 2), slice(2, 4))
    ]
    loss = build_loss({"fd": {}, "cluster": {}, "clip": {}}, 4, 6, centroids=torch.randn(4, 6))
    full, parts = loss(inp), [loss(h) for h in halves]
    for term in ("fd", "cluster"):
        assert ((parts[0][term] + parts[1][term]) / 2).item() == pytest.approx(full[term].item(), rel=1e-5)
    assert ((parts[0]["clip"] + parts[1]["clip"]) / 2).item() != pytest.approx(full["clip"].item(), rel=1e-3)
