"""Task kinds are registered objects (td/tasks/): a new kind is one subclass plus a registry entry, and nothing
else in td branches on the kind's name."""

import re
from pathlib import Path

import pytest
from pydantic import ValidationError
from td_helpers import TASKS, TINY_STUDENT, stand_in_fit

from clipdistill.td.data import TaskConfig
from clipdistill.td.runner import FinetuneConfig, run_finetune
from clipdistill.td.tasks import TASK_KINDS, task_kind
from clipdistill.td.tasks.snli_ve import SNLIVE


class TwoWayVE(SNLIVE):
    """A new kind: SNLI-VE files, entailment vs not (labels 1 and 2 merged), its own default val split."""

    name = "ve2"
    default_val_split = "test"

    def read(self, folder, split, images=None):
        import dataclasses

        data = task_kind("snli_ve").read(folder, split, images)
        exs = [dataclasses.replace(ex, label=min(ex.label, 1)) for ex in data.examples]
        return dataclasses.replace(data, examples=exs)

    def make_head(self, width, vocab, vilt=False):
        from clipdistill.td.heads import ClassifierHead

        return ClassifierHead(width, 2)


def test_a_new_kind_is_one_class_and_a_registry_entry(world, tmp_path, monkeypatch):
    monkeypatch.setitem(TASK_KINDS, "ve2", TwoWayVE())
    cfg = FinetuneConfig(task={"name": "ve2", "kind": "ve2", "folder": TASKS["snli_ve"]}, world=str(world),
                         student=TINY_STUDENT, td={"method": "baseline"}, fraction=0.5)
    assert cfg.task.val_split == "test"  # the kind's default, filled in by the config
    res = run_finetune(cfg, tmp_path / "run", trainer=stand_in_fit, train_config={"epochs": 1, "lr": 1e-3},
                       log=lambda s: None)
    assert set(res) == {"val"} and res["val"]["n"] > 0 and 0 <= res["val"]["accuracy"] <= 100
    prior = run_finetune(cfg.model_copy(update={"td": cfg.td.model_copy(update={"method": "prior"})}),
                         tmp_path / "prior", log=lambda s: None)
    assert prior["val"]["n"] == res["val"]["n"]


def test_unknown_kind_is_refused_when_the_config_is_read():
    with pytest.raises(ValidationError, match="unknown task kind 'gqa'; choose one of vqa, snli_ve, vcr"):
        TaskConfig(name="g", kind="gqa", folder="f")


def test_no_td_module_branches_on_a_kind_name():
    root = Path(__file__).parents[2] / "src" / "clipdistill" / "td"
    names = "|".join(TASK_KINDS)
    pattern = re.compile(rf"""==\s*["']({names})["']|\{{\s*["']({names})["']\s*:""")
    hits = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py") if p.parent.name != "tasks"
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []
