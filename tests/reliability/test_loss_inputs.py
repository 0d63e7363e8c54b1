"""A loss term whose input the config does not provide: refused when the loss is built, before any step,
naming the input and the setting that provides it."""

from __future__ import annotations

from rel_cases import case
from rel_helpers import run_main, tiny_distill_config


def _distill(tmp_path, pairs, *sets: str) -> tuple[int, str]:
    cfg = tiny_distill_config(tmp_path / "c.yaml", str(pairs))
    return run_main("distill", cfg, "--out", str(tmp_path / "run"), *[a for s in sets for a in ("--set", s)])


@case("config", "a teacher loss (`fd`) with no teacher (`teacher.mode=none`)",
      "`error: loss 'fd' needs teacher (teacher features: set teacher.models (mode online) or teacher.features "
      "(mode cached)) ...` (exit 2, nothing trained)")
def test_teacher_loss_without_a_teacher_is_refused(tmp_path, pairs):
    code, out = _distill(tmp_path, pairs, "loss={clip: {}, fd: {}}")
    assert code == 2 and "Traceback" not in out, out
    assert "loss 'fd' needs teacher" in out and "set teacher.models" in out, out
    assert not (tmp_path / "run" / "checkpoints").exists()


@case("config", "the `cluster` loss without cluster labels (no `data.keep` balance output)",
      "`error: loss 'cluster' needs cluster_labels (cluster labels and centres: set data.keep to a "
      "`clipdistill balance` output) ...` (exit 2, nothing trained)")
def test_cluster_loss_without_balance_is_refused(tmp_path, pairs):
    code, out = _distill(tmp_path, pairs, "loss={clip: {}, cluster: {}}")
    assert code == 2 and "Traceback" not in out, out
    assert "loss 'cluster' needs cluster_labels" in out and "data.keep" in out, out
    assert not (tmp_path / "run" / "checkpoints").exists()


@case("config", "a single-teacher loss (`fd`) over a teacher ensemble whose members differ in dim",
      "`error: loss 'fd' needs teacher (this teacher ensemble's members differ in dim, so there are no single "
      "teacher features; only terms that average members (logit_kd) take it) ...` (exit 2, nothing trained)")
def test_feature_loss_over_an_ensemble_of_other_dims_is_refused(tmp_path, pairs):
    models = "teacher.models=[open_clip:cd-student-xs-32, open_clip:cd-student-s-32]"
    code, out = _distill(tmp_path, pairs, "teacher.mode=ensemble", models, "loss={logit_kd: {}, fd: {}}")
    assert code == 2 and "Traceback" not in out, out
    assert "loss 'fd' needs teacher" in out and "differ in dim" in out, out
    assert not (tmp_path / "run" / "checkpoints").exists()
    # logit_kd averages the members itself: the same ensemble trains it
    code, out = _distill(tmp_path, pairs, "teacher.mode=ensemble", models, "loss={logit_kd: {}}",
                         "train.steps=1")
    assert code == 0, out
