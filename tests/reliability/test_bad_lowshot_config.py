"""The protocol's low-shot settings (`budget`, `select`) are validated with the rest of the config: a budget that
misses a fraction, or a selection with nowhere to choose but val, is refused before any cell writes anything."""

from __future__ import annotations

import sys

import pytest
import yaml
from rel_cases import case
from rel_helpers import HERE, run_main

sys.path.insert(0, str(HERE.parent / "td"))
from td_helpers import TINY_STUDENT, build_tiny_world  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_tiny_world(tmp_path_factory.mktemp("world"))


def _protocol(tmp_path, world, **kw) -> str:
    cfg = {"world": str(world), "tasks": [{"name": "vqa", "kind": "vqa", "folder": "tasks/vqa"}],
           "fractions": [0.05, 0.25], "seeds": [0], "full": False, "methods": ["prior", "baseline", "clip_td"],
           "teacher": "open_clip:cd-student-xs-32", "student": TINY_STUDENT, "out": str(tmp_path / "p"),
           "train": {"progress": False, "tensorboard": False, "device": "cpu"}, **kw}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@case("config", "`protocol` with a per-fraction step budget that misses a fraction (`budget.steps: {0.05: 300}` "
      "with fractions 0.05 and 0.25)", "`error: invalid config` naming the fraction without a budget (exit 2); "
      "no cell runs, nothing is written")
def test_budget_missing_a_fraction_refused_before_any_cell(tmp_path, world):
    code, out = run_main("protocol", _protocol(tmp_path, world, budget={"steps": {0.05: 300}}))
    assert code == 2 and "Traceback" not in out and "error: invalid config" in out, out
    assert "no budget for fractions [0.25]" in out, out
    assert not (tmp_path / "p").exists()


@case("config", "`protocol` asked to choose options (`select`) for a task without a dev carve (`dev_fraction` unset)",
      "`error: invalid config`: the task has no dev carve, options are never chosen on val (exit 2); nothing written")
def test_selection_without_a_dev_carve_refused(tmp_path, world):
    path = _protocol(tmp_path, world, select={"method": "clip_td", "variants": {"a": {}, "b": {"td.lam": 0.5}}})
    code, out = run_main("protocol", path)
    assert code == 2 and "Traceback" not in out and "error: invalid config" in out, out
    assert "have none: set their dev_fraction" in out, out
    assert not (tmp_path / "p").exists()


@case("config", "`protocol` selection variant with a misspelt option (`select.variants.b: {td.lamb: 0.5}`)",
      "`error: invalid config` naming `select.variants.b` and `td.lamb` (exit 2); nothing written")
def test_selection_variant_with_a_misspelt_option_refused(tmp_path, world):
    task = {"name": "vqa", "kind": "vqa", "folder": "tasks/vqa", "dev_fraction": 0.2}
    path = _protocol(tmp_path, world, tasks=[task], select={"variants": {"a": {}, "b": {"td.lamb": 0.5}}})
    code, out = run_main("protocol", path)
    assert code == 2 and "Traceback" not in out and "error: invalid config" in out, out
    assert "select.variants.b" in out and "td.lamb" in out, out
    assert not (tmp_path / "p").exists()
