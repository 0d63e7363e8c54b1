"""The protocol as a low-shot protocol: step budgets with warmup and a body / head lr split, the training-set size
and the score minus the answer prior of every cell, and options chosen on the dev carve alone."""

import csv
import io
import json

import pytest
from td_helpers import TASKS, TINY_STUDENT, build_tiny_vilt

from clipdistill.data.tasks import open_task
from clipdistill.td import runner
from clipdistill.td.data import TaskConfig, split_dev
from clipdistill.td.protocol import ProtocolConfig, cell_configs, run_protocol, selection_cells
from clipdistill.td.student import VLStudentConfig, build_student
from clipdistill.td.task import TDTask
from clipdistill.train.optim import build_optimizer
from clipdistill.train.schedule import lr_factor

TEACHER = "open_clip:cd-student-xs-32"
LOOP = {"lr": 1e-3, "log_every": 1, "save_every": 100, "progress": False, "tensorboard": False, "device": "cpu"}


def _cfg(world, out, **kw):
    base = {"tasks": [{"name": "vqa", "kind": "vqa", "folder": TASKS["vqa"]}], "world": str(world),
            "fractions": [0.05, 0.25], "seeds": [0], "full": False, "methods": ["prior", "baseline"],
            "teacher": {"models": [TEACHER]}, "student": TINY_STUDENT, "batch_size": 8, "eval_batch_size": 64,
            "train": LOOP, "out": str(out)}
    return ProtocolConfig(**{**base, **kw})


def test_cells_run_their_step_budget_with_warmup_inside_and_report_size_and_minus_prior(world, tmp_path):
    budget = {"steps": {0.05: 5, 0.25: 8}, "warmup": 0.4, "body_lr_scale": 0.1}
    res = run_protocol(_cfg(world, tmp_path / "p", budget=budget), progress=lambda s: None)  # the real loop
    n_train = len(open_task("vqa", world / "tasks" / "vqa", "train").examples)
    for fraction, steps in ((0.05, 5), (0.25, 8)):
        cell = tmp_path / "p" / "cells" / "vqa" / f"f{fraction:g}-s0" / "baseline"
        records = [json.loads(line) for line in (cell / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records] == list(range(1, steps + 1))  # one record per optimizer step
        warmup = round(0.4 * steps)
        assert json.loads((cell / "manifest.json").read_text())["schedule"] == {"total_steps": steps,
                                                                               "warmup_steps": warmup}
        assert [r["lr"] for r in records] == pytest.approx([1e-3 * lr_factor(i, steps, warmup) for i in range(steps)])
        assert records[0]["lr"] < records[warmup - 1]["lr"]  # the ramp is part of the budget, not added to it
        done = json.loads((cell / "result.json").read_text())
        assert done["config"]["train"]["steps"] == steps and done["config"]["train"]["lr_scale"] == {"student": 0.1}
        assert done["train_examples"] == round(fraction * n_train)
        prior = json.loads((cell.parent / "prior" / "result.json").read_text())
        assert prior["train_examples"] == done["train_examples"]
        got = done["minus_prior"]["val"]["accuracy"]
        assert got == pytest.approx(done["metrics"]["val"]["accuracy"] - prior["metrics"]["val"]["accuracy"])
        assert prior["minus_prior"]["val"]["accuracy"] == 0.0

    entry = next(e for e in res["table"] if e["method"] == "baseline" and e["fraction"] == 0.25)
    cell = json.loads((tmp_path / "p" / "cells" / "vqa" / "f0.25-s0" / "baseline" / "result.json").read_text())
    assert entry["n_train"] == cell["train_examples"]
    assert entry["minus_prior"] == pytest.approx(cell["minus_prior"]["val"]["accuracy"])
    md = (tmp_path / "p" / "results.md").read_text()
    assert "| train n |" in md and f"| vqa | low_shot | 0.25 | accuracy | baseline | {cell['train_examples']} |" in md
    table = list(csv.DictReader(io.StringIO((tmp_path / "p" / "results.csv").read_text())))
    row = next(r for r in table if r["method"] == "baseline" and r["fraction"] == "0.25")
    assert int(row["n_train"]) == cell["train_examples"]
    assert float(row["minus_prior"]) == pytest.approx(cell["minus_prior"]["val"]["accuracy"])


@pytest.mark.parametrize("family", ["clipdistill", "hf_vilt"])
def test_body_lr_scale_moves_every_student_parameter_and_leaves_the_heads_at_lr(world, tmp_path, family):
    student_cfg = TINY_STUDENT if family == "clipdistill" else {"model": f"hf:{build_tiny_vilt(tmp_path, world)}"}
    cfg = _cfg(world, tmp_path / "p", student=student_cfg, methods=["clip_td"], fractions=[0.25],
               budget={"steps": 4, "body_lr_scale": 0.1})
    [(_, ft)] = cell_configs(cfg)
    student, _ = build_student(VLStudentConfig(**ft.student.model_dump()))
    assert getattr(student, "family", "clipdistill") == family
    from clipdistill.zoo import load_model

    task = TDTask("vqa", student, ft.td, load_model(TEACHER), ["red", "blue"])
    opt = build_optimizer(task.trainable(), ft.train)
    scale = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    assert {scale[id(p)] for p in student.parameters()} == {0.1}
    heads = [*task.head.parameters(), *task.distill_heads.parameters()]
    assert heads and {scale[id(p)] for p in heads} == {1.0}


def _dev_keys(world, dev_fraction):
    task = TaskConfig(name="vqa", kind="vqa", folder=str(world / TASKS["vqa"]), dev_fraction=dev_fraction)
    return {ex.key for ex in split_dev(task, open_task("vqa", task.folder, "train"))[1].examples}


def test_options_are_chosen_on_the_dev_carve_and_never_read_val(world, tmp_path, monkeypatch):
    """The dev carve ranks lam=0.5 first, val ranks lam=2 first: the choice follows the dev carve, and the
    selection cells never score a val or shift example."""
    dev = _dev_keys(world, 0.2)
    scored: list[tuple[float, set[str]]] = []

    def fake_evaluate(task, batches):
        keys = {k for b in batches for k in b.keys}
        scored.append((task.td.lam, keys))
        on_dev = keys <= dev
        best = 0.5 if on_dev else 2.0
        return {"accuracy": 60.0 if task.td.lam == best else 40.0, "n": len(keys)}

    monkeypatch.setattr(runner, "evaluate", fake_evaluate)
    task = {"name": "vqa", "kind": "vqa", "folder": TASKS["vqa"], "dev_fraction": 0.2, "shift_splits": ["shift_style"]}
    cfg = _cfg(world, tmp_path / "p", tasks=[task], fractions=[0.25], methods=["baseline", "clip_td"],
               select={"method": "clip_td", "variants": {"lam05": {"td.lam": 0.5}, "lam2": {"td.lam": 2.0}}})
    seen = []
    res = run_protocol(cfg, trainer=lambda task, factory, train_cfg, run_dir: run_dir, progress=seen.append)
    n_select = len(selection_cells(cfg))
    assert n_select == 2 and all(keys <= dev for _, keys in scored[:n_select])  # dev carve only
    assert any(not keys <= dev for _, keys in scored[n_select:])  # the chosen cells are scored on val as before
    for name in ("lam05", "lam2"):
        done = json.loads((tmp_path / "p" / "select" / "vqa" / "f0.25-s0" / name / "result.json").read_text())
        assert set(done["metrics"]) == {"train_dev"} and set(done["minus_prior"]) == {"train_dev"}
    assert res["choices"] == {"clip_td": {"vqa": {"0.25": "lam05"}}}
    record = json.loads((tmp_path / "p" / "selection.json").read_text())
    assert record["vqa"]["0.25"]["chosen"] == "lam05" and record["vqa"]["0.25"]["train_dev"] == {"lam05": 60.0,
                                                                                                "lam2": 40.0}
    chosen = json.loads((tmp_path / "p" / "cells" / "vqa" / "f0.25-s0" / "clip_td" / "result.json").read_text())
    assert chosen["config"]["td"]["lam"] == 0.5
    baseline = json.loads((tmp_path / "p" / "cells" / "vqa" / "f0.25-s0" / "baseline" / "result.json").read_text())
    assert baseline["config"]["td"]["lam"] == cfg.td.lam  # other methods keep the config's options
    assert seen[:2] == ["run select/vqa/f0.25-s0/lam05", "run select/vqa/f0.25-s0/lam2"]

    seen.clear()  # a rerun reuses the selection and every cell, the chosen one included
    run_protocol(cfg, trainer=None, progress=seen.append)
    assert len(seen) == 4 and all(s.startswith("skip") for s in seen)
    assert dict(cell_configs(cfg))["cells/vqa/f0.25-s0/clip_td"].td.lam == 0.5  # what the stop hook reads

    renamed = cfg.model_copy(update={"select": cfg.select.model_copy(update={"variants": {"other": {"td.lam": 3.0}}})})
    assert dict(cell_configs(renamed))["cells/vqa/f0.25-s0/clip_td"].td.lam == cfg.td.lam  # stale choice ignored


def test_choice_takes_the_mean_over_seeds_and_the_first_listed_on_a_tie():
    from clipdistill.td.protocol import choose

    dev = {("vqa", "0.05"): {"a": [50.0, 53.0], "b": [51.0, 51.5]}, ("snli_ve", "0.05"): {"a": [40.0], "b": [40.0]}}
    assert choose(dev) == {"vqa": {"0.05": "a"}, "snli_ve": {"0.05": "a"}}  # mean over seeds; a tie: first listed


def test_low_shot_options_are_validated_before_anything_runs(world, tmp_path):
    vqa = {"name": "vqa", "kind": "vqa", "folder": TASKS["vqa"]}
    with pytest.raises(ValueError, match=r"no budget for fractions \[0.25\]"):
        _cfg(world, tmp_path, budget={"steps": {0.05: 10}})
    with pytest.raises(ValueError, match="leave train.steps unset"):
        _cfg(world, tmp_path, budget={"steps": 10}, train={**LOOP, "steps": 20})
    with pytest.raises(ValueError, match="both set the student's lr"):
        _cfg(world, tmp_path, budget={"steps": 10, "body_lr_scale": 0.1}, train={**LOOP, "lr_scale": {"student": 1}})
    with pytest.raises(ValueError, match=r"tasks \['vqa'\] have none"):
        _cfg(world, tmp_path, tasks=[vqa], methods=["clip_td"], select={"variants": {"a": {"td.lam": 0.5}}})
    dev_vqa = {**vqa, "dev_fraction": 0.2}
    with pytest.raises(ValueError, match="select.variants.a.*lamb"):
        _cfg(world, tmp_path, tasks=[dev_vqa], methods=["clip_td"], select={"variants": {"a": {"td.lamb": 0.5}}})
    with pytest.raises(ValueError, match="not td.<key> / train.<key> options"):
        _cfg(world, tmp_path, tasks=[dev_vqa], methods=["clip_td"], select={"variants": {"a": {"fraction": 0.5}}})
    with pytest.raises(ValueError, match="must be among the protocol.s trained methods"):
        _cfg(world, tmp_path, tasks=[dev_vqa], methods=["baseline"], select={"variants": {"a": {"td.lam": 0.5}}})


def test_each_selected_method_gets_its_own_choice_and_its_cells_run_with_it(world, tmp_path, monkeypatch):
    """A step budget chosen per method on the dev carve: the dev scores favour 1 step for the baseline and the
    budget's 2 for CLIP-TD, so each method's cells run with its own choice (a variant's train.steps replaces the
    budget's steps for that variant's cells)."""
    ran: list[tuple[str, int]] = []  # (method, optimizer steps) of every cell the trainer was handed

    def fake_fit(task, factory, train_cfg, run_dir):
        ran.append((task.td.method, train_cfg.steps))
        return run_dir

    best = {("baseline", 1), ("clip_td", 2)}
    monkeypatch.setattr(runner, "evaluate", lambda task, batches: {"accuracy": 60.0 if ran[-1] in best else 40.0,
                                                                   "n": 1})
    task = {"name": "vqa", "kind": "vqa", "folder": TASKS["vqa"], "dev_fraction": 0.2}
    cfg = _cfg(world, tmp_path / "p", tasks=[task], fractions=[0.25], methods=["baseline", "clip_td"],
               budget={"steps": 2}, select={"methods": ["baseline", "clip_td"],
                                            "variants": {"budget": {}, "short": {"train.steps": 1}}})
    seen: list[str] = []
    res = run_protocol(cfg, trainer=fake_fit, progress=seen.append)
    assert seen == ["run select/vqa/f0.25-s0/baseline/budget", "run select/vqa/f0.25-s0/baseline/short",
                    "run select/vqa/f0.25-s0/clip_td/budget", "run select/vqa/f0.25-s0/clip_td/short",
                    "run cells/vqa/f0.25-s0/baseline", "run cells/vqa/f0.25-s0/clip_td"]
    assert ran == [("baseline", 2), ("baseline", 1), ("clip_td", 2), ("clip_td", 1), ("baseline", 1), ("clip_td", 2)]
    out = tmp_path / "p"
    for rel, steps in (("select/vqa/f0.25-s0/baseline/short", 1), ("select/vqa/f0.25-s0/clip_td/budget", 2),
                       ("cells/vqa/f0.25-s0/baseline", 1), ("cells/vqa/f0.25-s0/clip_td", 2)):
        assert json.loads((out / rel / "result.json").read_text())["config"]["train"]["steps"] == steps, rel
    choices = {"baseline": {"vqa": {"0.25": "short"}}, "clip_td": {"vqa": {"0.25": "budget"}}}
    assert res["choices"] == choices and res["summary"]["chosen"] == choices
    record = json.loads((out / "selection.json").read_text())
    assert record["baseline"]["vqa"]["0.25"]["chosen"] == "short"
    assert record["clip_td"]["vqa"]["0.25"]["chosen"] == "budget"
    assert record["baseline"]["vqa"]["0.25"]["train_dev"] == {"budget": 40.0, "short": 60.0}
    assert record["clip_td"]["vqa"]["0.25"]["train_dev"] == {"budget": 60.0, "short": 40.0}
    marked = {(e["method"], e["regime"]): e.get("chosen") for e in res["table"]}
    assert marked[("baseline", "low_shot")] == "short" and marked[("clip_td", "low_shot")] == "budget"
    assert json.loads((out / "results.json").read_text()) == res["table"]
    md = (out / "results.md").read_text()
    assert "| vqa | 0.25 | baseline | short | train.steps=1 |" in md
    assert "| vqa | 0.25 | clip_td | budget | the config's |" in md
    table = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert {(r["method"], r["chosen"]) for r in table if r["regime"] == "low_shot"} == {("baseline", "short"),
                                                                                       ("clip_td", "budget")}

    seen.clear()  # a rerun reads each method's choice back and reuses every cell
    ran.clear()
    assert dict(cell_configs(cfg))["cells/vqa/f0.25-s0/baseline"].train.steps == 1  # what the stop hook reads
    run_protocol(cfg, trainer=fake_fit, progress=seen.append)
    assert ran == [] and len(seen) == 6 and all(s.startswith("skip (done) ") for s in seen)


def test_a_folder_made_by_one_method_selection_resumes_without_rerunning_a_cell(world, tmp_path, monkeypatch):
    """A protocol folder laid out as one-method selection has always written it (`select/<task>/f..-s../<variant>`,
    selection.json {task: {fraction: {chosen, metric, seeds, train_dev}}} without a method level) is read as it
    is: the old `method:` spelling and `methods: [one]` both reuse every cell and read its choice."""
    monkeypatch.setattr(runner, "evaluate", lambda task, batches: {"accuracy": 60.0 if task.td.lam == 0.5 else 40.0,
                                                                   "n": 1})
    task = {"name": "vqa", "kind": "vqa", "folder": TASKS["vqa"], "dev_fraction": 0.2}
    variants = {"lam05": {"td.lam": 0.5}, "lam2": {"td.lam": 2.0}}
    old = _cfg(world, tmp_path / "p", tasks=[task], fractions=[0.25], methods=["baseline", "clip_td"],
               select={"method": "clip_td", "variants": variants})
    out = tmp_path / "p"
    run_protocol(old, trainer=lambda task, factory, train_cfg, run_dir: run_dir, progress=lambda s: None)
    assert sorted(str(p.parent.relative_to(out)) for p in out.rglob("result.json")) == [
        "cells/vqa/f0.25-s0/baseline", "cells/vqa/f0.25-s0/clip_td", "select/vqa/f0.25-s0/lam05",
        "select/vqa/f0.25-s0/lam2"]
    # selection.json exactly as it was written before several methods could be selected (leaves name no method)
    (out / "selection.json").write_text(json.dumps({"vqa": {"0.25": {
        "chosen": "lam05", "metric": "train_dev accuracy", "seeds": [0], "train_dev": {"lam05": 60.0, "lam2": 40.0}}}},
        indent=2))

    def no_training(*args):
        raise AssertionError("a finished cell was trained again")

    for select in ({"method": "clip_td", "variants": variants}, {"methods": ["clip_td"], "variants": variants}):
        cfg = old.model_copy(update={"select": old.select.model_validate(select)})
        assert dict(cell_configs(cfg))["cells/vqa/f0.25-s0/clip_td"].td.lam == 0.5  # the old file's choice, read
        seen: list[str] = []
        res = run_protocol(cfg, trainer=no_training, progress=seen.append)
        assert seen == ["skip (done) select/vqa/f0.25-s0/lam05", "skip (done) select/vqa/f0.25-s0/lam2",
                        "skip (done) cells/vqa/f0.25-s0/baseline", "skip (done) cells/vqa/f0.25-s0/clip_td"]
        assert res["choices"] == {"clip_td": {"vqa": {"0.25": "lam05"}}}
        record = json.loads((out / "selection.json").read_text())
        assert record["vqa"]["0.25"]["chosen"] == "lam05"  # still the one-method shape, now naming its method
        assert record["vqa"]["0.25"]["method"] == "clip_td"

    # an old-shape file is no choice for other methods: before the selection reruns, their cells keep the config
    both = old.model_copy(update={"select": old.select.model_validate({"methods": ["baseline", "clip_td"],
                                                                      "variants": variants})})
    assert dict(cell_configs(both))["cells/vqa/f0.25-s0/clip_td"].td.lam == old.td.lam


def test_the_selected_methods_are_validated_before_anything_runs(world, tmp_path):
    dev_vqa = {"name": "vqa", "kind": "vqa", "folder": TASKS["vqa"], "dev_fraction": 0.2}
    methods = ["prior", "baseline", "naive", "clip_td"]
    variants = {"a": {}, "b": {"train.steps": 1}}
    for select, message in (
            ({"methods": ["clip_td", "clip_td"]}, r"select.methods lists \['clip_td'\] more than once"),
            ({"methods": ["baseline", "prior"]}, "'prior' trains nothing"),
            ({"methods": ["baseline", "distill"]}, "select.methods.1"),
            ({"methods": []}, "select.methods is empty"),
            ({"method": "clip_td", "methods": ["clip_td"]}, "both given"),
            ({"method": ["baseline", "clip_td"]}, "list several under select.methods"),
            ({"variants": {"../cells": {}}}, "is not a folder name")):
        with pytest.raises(ValueError, match=message):
            _cfg(world, tmp_path, tasks=[dev_vqa], methods=methods, select={"variants": variants, **select})
    with pytest.raises(ValueError, match=r"select.methods \['naive'\] must be among the protocol's trained methods"):
        _cfg(world, tmp_path, tasks=[dev_vqa], methods=["baseline", "clip_td"],
             select={"methods": ["baseline", "naive"], "variants": variants})
    with pytest.raises(ValueError, match=r"select.variants.b \(baseline\): train.steps: .*greater than or equal to 1"):
        _cfg(world, tmp_path, tasks=[dev_vqa], methods=methods, budget={"steps": 10},
             select={"methods": ["baseline", "clip_td"], "variants": {"a": {}, "b": {"train.steps": 0}}})
    cfg = _cfg(world, tmp_path, tasks=[dev_vqa], methods=methods, select={"methods": ["naive", "clip_td"],
                                                                          "variants": variants})
    assert cfg.select.methods == ["naive", "clip_td"] and len(selection_cells(cfg)) == 2 * 2 * 2  # fractions x m x v
