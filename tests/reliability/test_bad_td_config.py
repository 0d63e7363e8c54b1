"""`finetune` / `protocol` configs are validated in full when read: a bad `train.` key, task kind or low-shot
setting (`budget`, `select`) is refused before any cell (the answer-prior cell included) writes anything."""

from __future__ import annotations

import sys

import pytest
import yaml
from rel_cases import case
from rel_helpers import HERE, assert_one_line_refusal, assert_refused, run_main

sys.path.insert(0, str(HERE.parent / "td"))
from td_helpers import TINY_STUDENT, build_tiny_world  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_tiny_world(tmp_path_factory.mktemp("world"))


LOOP = {"epochs": 1, "progress": False, "tensorboard": False, "device": "cpu"}
VQA = {"name": "vqa", "kind": "vqa", "folder": "tasks/vqa"}


def _write(path, cfg: dict) -> str:
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _protocol(tmp_path, world, **kw) -> str:
    """A one-cell-per-method protocol config in `tmp_path/p.yaml` (out: `tmp_path/p`); `kw` replaces sections."""
    return _write(tmp_path / "p.yaml", {
        "world": str(world), "tasks": [VQA], "fractions": [0.25], "seeds": [0], "full": False,
        "methods": ["prior", "baseline"], "teacher": {"models": ["open_clip:cd-student-xs-32"]},
        "student": TINY_STUDENT, "out": str(tmp_path / "p"), "train": LOOP, **kw})


def _finetune(tmp_path, world, **kw) -> str:
    """A baseline VQA finetune config in `tmp_path/f.yaml` (out: `tmp_path/ft`); `kw` replaces sections."""
    return _write(tmp_path / "f.yaml", {"world": str(world), "task": VQA, "student": TINY_STUDENT,
                                        "td": {"method": "baseline"}, "out": str(tmp_path / "ft"), "train": LOOP, **kw})


@case("config", "`protocol` config with a misspelt `train.` key (`train.lrr: 0.001`) after a `prior` cell that "
      "trains nothing", "`error: invalid config` naming `train.lrr` (exit 2); no cell runs, nothing is written")
def test_protocol_misspelt_train_key_refused_before_any_cell(tmp_path, world):
    assert_refused(run_main("protocol", _protocol(tmp_path, world), "--set", "train.lrr=0.001"),
                   "error: invalid config", "train.lrr")
    assert not (tmp_path / "p").exists()


@case("config", "`finetune` config with a misspelt `train.` key (`train.epoch: 3`)",
      "`error: invalid config` naming `train.epoch` (exit 2); `out` is not created")
def test_finetune_misspelt_train_key_refused(tmp_path, world):
    assert_refused(run_main("finetune", _finetune(tmp_path, world, train={"epoch": 3})),
                   "error: invalid config", "train.epoch")
    assert not (tmp_path / "ft").exists()


@case("config", "`finetune` config with a misspelt `td.vqa_candidates` value (`question-type`)",
      "`error: invalid config` naming `td.vqa_candidates` and the two values (exit 2); `out` is not created")
def test_finetune_misspelt_vqa_candidates_refused(tmp_path, world):
    assert_refused(run_main("finetune", _finetune(tmp_path, world, td={"method": "clip_td",
                                                                      "vqa_candidates": "question-type"})),
                   "error: invalid config", "td.vqa_candidates", "'question_type' or 'frequent'")
    assert not (tmp_path / "ft").exists()


@case("config", "`protocol` task with an unregistered kind (`kind: gqa`)",
      "`error: invalid config`: `unknown task kind 'gqa'; choose one of vqa, snli_ve, vcr` (exit 2); nothing written")
def test_protocol_unknown_task_kind_refused(tmp_path, world):
    path = _protocol(tmp_path, world, tasks=[{**VQA, "name": "g", "kind": "gqa"}])
    assert_refused(run_main("protocol", path), "unknown task kind 'gqa'")
    assert not (tmp_path / "p").exists()


@case("config", "`finetune` with `student.model: hf:DIR` where DIR holds a ViLT config and only a pickled "
      "`pytorch_model.bin`", "`error: student hf:DIR: no .safetensors weights ... pickled .bin weights are refused` "
      "(exit 2) before the run folder is written; the pickle is never opened")
def test_finetune_hf_student_with_pickled_weights_refused(tmp_path, world, monkeypatch):
    import json

    folder = tmp_path / "vilt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "vilt", "hidden_size": 32}))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 a pickle that must not be read")
    import torch

    def no_pickles(*a, **k):
        raise AssertionError("a pickle was opened")

    monkeypatch.setattr(torch, "load", no_pickles)
    assert_refused(run_main("finetune", _finetune(tmp_path, world, student={"model": f"hf:{folder}"})),
                   "pickled .bin weights are refused")
    assert not (tmp_path / "ft" / "config.yaml").exists()


@case("config", "`student.init: open_clip:...` together with `student.model: hf:DIR`",
      "`error: invalid config`: student.init seeds our own student from a CLIP; hf:DIR brings its own weights (exit 2)")
def test_init_with_hf_student_refused(tmp_path, world):
    student = {"model": "hf:somewhere", "init": "open_clip:cd-student-xs-32"}
    assert_refused(run_main("finetune", _finetune(tmp_path, world, student=student)), "error: invalid config",
                   "brings its own weights")
    assert not (tmp_path / "ft").exists()


@case("config", "`protocol` config without `out:` and no `--out` flag",
      "`error: no output folder: pass --out DIR (or set `out:` in the config)` (exit 2); nothing is written")
def test_protocol_without_an_output_folder_is_refused(tmp_path, world, monkeypatch):
    path = _protocol(tmp_path, world)
    cfg = yaml.safe_load(open(path))
    del cfg["out"]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    assert_refused(run_main("protocol", path), "pass --out DIR")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]
    # the flag alone is enough, and it wins over a config's own `out:`
    code, out = run_main("protocol", _protocol(tmp_path, world, methods=["prior"]), "--out", str(tmp_path / "flag"))
    assert code == 0, out
    assert (tmp_path / "flag" / "results.md").is_file() and not (tmp_path / "p").exists()


@case("config", "`protocol` / `finetune` config naming two teachers (`teacher: {models: [A, B]}`)",
      "`error: invalid config` naming `teacher.models` and `one teacher` (exit 2); nothing is written")
def test_two_td_teachers_refused(tmp_path, world):
    two = {"models": ["open_clip:cd-student-xs-32", "open_clip:cd-teacher-64"]}
    assert_refused(run_main("protocol", _protocol(tmp_path, world, teacher=two)), "teacher.models", "one teacher")
    assert not (tmp_path / "p").exists()


def _lowshot(tmp_path, world, **kw) -> str:
    """A protocol config with two fractions and CLIP-TD, trained by the low-shot settings under test."""
    return _protocol(tmp_path, world, **{"fractions": [0.05, 0.25], "methods": ["prior", "baseline", "clip_td"],
                                         "train": {"progress": False, "tensorboard": False, "device": "cpu"}, **kw})


@case("config", "`protocol` with a per-fraction step budget that misses a fraction (`budget.steps: {0.05: 300}` "
      "with fractions 0.05 and 0.25)", "`error: invalid config` naming the fraction without a budget (exit 2); "
      "no cell runs, nothing is written")
def test_budget_missing_a_fraction_refused_before_any_cell(tmp_path, world):
    assert_refused(run_main("protocol", _lowshot(tmp_path, world, budget={"steps": {0.05: 300}})),
                   "error: invalid config", "no budget for fractions [0.25]")
    assert not (tmp_path / "p").exists()


@case("config", "`protocol` asked to choose options (`select`) for a task without a dev carve (`dev_fraction` unset)",
      "`error: invalid config`: the task has no dev carve, options are never chosen on val (exit 2); nothing written")
def test_selection_without_a_dev_carve_refused(tmp_path, world):
    path = _lowshot(tmp_path, world, select={"method": "clip_td", "variants": {"a": {}, "b": {"td.lam": 0.5}}})
    assert_refused(run_main("protocol", path), "error: invalid config", "have none: set their dev_fraction")
    assert not (tmp_path / "p").exists()


@case("config", "`protocol` selection variant with a misspelt option (`select.variants.b: {td.lamb: 0.5}`)",
      "`error: invalid config` naming `select.variants.b` and `td.lamb` (exit 2); nothing written")
def test_selection_variant_with_a_misspelt_option_refused(tmp_path, world):
    task = {**VQA, "dev_fraction": 0.2}
    path = _lowshot(tmp_path, world, tasks=[task], select={"variants": {"a": {}, "b": {"td.lamb": 0.5}}})
    assert_refused(run_main("protocol", path), "error: invalid config", "select.variants.b", "td.lamb")
    assert not (tmp_path / "p").exists()


@case("config", "`protocol` asked to choose options for a bad method list (`select.methods` naming `clip_td` "
      "twice, naming `prior`, a method the protocol does not run, or an unknown one)", "`error: invalid config` naming "
      "`select.methods` and the fault (exit 2); no cell runs, nothing is written")
def test_selection_with_a_bad_method_list_refused_before_any_cell(tmp_path, world):
    task = {**VQA, "dev_fraction": 0.2}
    variants = {"a": {}, "b": {"train.steps": 1}}
    for methods, fault in ((["clip_td", "clip_td"], "more than once"), (["prior", "clip_td"], "trains nothing"),
                           (["naive", "clip_td"], "must be among the protocol's trained methods"),
                           (["clip-td"], "'baseline', 'naive', 'clip_td' or 'prior'")):
        path = _lowshot(tmp_path, world, tasks=[task], select={"methods": methods, "variants": variants})
        assert_one_line_refusal(*run_main("protocol", path), "error: invalid config", "select.methods", fault)
        assert not (tmp_path / "p").exists()
