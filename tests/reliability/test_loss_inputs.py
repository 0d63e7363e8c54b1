"""A loss term whose input the config does not provide: refused when the loss is built, before any step,
naming the input and the setting that provides it."""

from __future__ import annotations

import pytest
from rel_cases import param_cases
from rel_helpers import run_main, tiny_distill_config

ENSEMBLE = ["teacher.mode=ensemble", "teacher.models=[open_clip:cd-student-xs-32, open_clip:cd-student-s-32]"]

MISSING = param_cases("config", "test_loss_inputs.py::test_loss_without_its_input_is_refused", [
    ("teacher", "a teacher loss (`fd`) with no teacher (`teacher.mode=none`)",
     "`error: loss 'fd' needs teacher (teacher features: set teacher.models (mode online) or teacher.features "
     "(mode cached)) ...` (exit 2, nothing trained)",
     (["loss={clip: {}, fd: {}}"], ["loss 'fd' needs teacher", "set teacher.models"])),
    ("cluster_labels", "the `cluster` loss without cluster labels (no `data.keep` balance output)",
     "`error: loss 'cluster' needs cluster_labels (cluster labels and centres: set data.keep to a "
     "`clipdistill balance` output) ...` (exit 2, nothing trained)",
     (["loss={clip: {}, cluster: {}}"], ["loss 'cluster' needs cluster_labels", "data.keep"])),
    ("ensemble", "a single-teacher loss (`fd`) over a teacher ensemble whose members differ in dim",
     "`error: loss 'fd' needs teacher (this teacher ensemble's members differ in dim, so there are no single "
     "teacher features; only terms that average members (logit_kd) take it) ...` (exit 2, nothing trained)",
     ([*ENSEMBLE, "loss={logit_kd: {}, fd: {}}"], ["loss 'fd' needs teacher", "differ in dim"])),
])


def _distill(tmp_path, pairs, *sets: str) -> tuple[int, str]:
    cfg = tiny_distill_config(tmp_path / "c.yaml", str(pairs))
    return run_main("distill", cfg, "--out", str(tmp_path / "run"), *[a for s in sets for a in ("--set", s)])


@pytest.mark.parametrize("given", MISSING)
def test_loss_without_its_input_is_refused(tmp_path, pairs, given):
    sets, said = given
    code, out = _distill(tmp_path, pairs, *sets)
    assert code == 2 and "Traceback" not in out, out
    assert all(s in out for s in said), out
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_ensemble_of_other_dims_trains_logit_kd(tmp_path, pairs):
    """logit_kd averages the members itself: the ensemble refused for fd above trains it."""
    code, out = _distill(tmp_path, pairs, *ENSEMBLE, "loss={logit_kd: {}}", "train.steps=1")
    assert code == 0, out
