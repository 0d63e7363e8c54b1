import json
import shutil
from pathlib import Path

import pytest
import yaml
from td_helpers import TASKS, TINY_STUDENT, stand_in_fit
from typer.testing import CliRunner

from clipdistill.data.tasks import open_task
from clipdistill.errors import DataError, ManifestMismatch, UserError
from clipdistill.splits import make_splits
from clipdistill.td.data import TaskConfig, low_shot_examples, split_dev
from clipdistill.td.protocol import ProtocolConfig, run_protocol, summarise
from clipdistill.train.checkpoint import CKPT_DIR, WEIGHTS, step_dir

TRAIN = {"epochs": 1, "lr": 3e-3}


def _cfg(world, out, **kw):
    tasks = [{"name": k, "kind": k, "folder": folder} for k, folder in TASKS.items()]
    tasks[0]["shift_splits"] = ["shift_style"]
    base = {"tasks": tasks, "world": str(world), "fractions": [0.25], "seeds": [0], "full": False,
            "methods": ["baseline", "clip_td"], "teacher": {"models": ["open_clip:cd-student-xs-32"]},
            "student": TINY_STUDENT, "batch_size": 16, "eval_batch_size": 64, "out": str(out)}
    return ProtocolConfig(**{**base, **kw})


def test_protocol_on_the_world_end_to_end_resume_and_refusals(world, tmp_path):
    cfg = _cfg(world, tmp_path / "p")
    assert [t.val_split for t in cfg.tasks] == ["val", "dev", "val"]  # per-kind defaults (SNLI-VE: dev)
    res = run_protocol(cfg, trainer=stand_in_fit, train_config=TRAIN, progress=lambda s: None)
    rows = res["rows"]
    assert {r["task"] for r in rows} == {"vqa", "snli_ve", "vcr"}
    assert {r["method"] for r in rows} == {"baseline", "clip_td"}
    assert {(r["task"], r["regime"]) for r in rows} == {("vqa", "low_shot"), ("vqa", "shift:shift_style"),
                                                      ("snli_ve", "low_shot"), ("vcr", "low_shot")}
    assert {r["metric"] for r in rows if r["task"] == "vcr"} == {"q_a", "qa_r", "q_ar"}
    assert all(0 <= r["value"] <= 100 for r in rows)
    assert set(rows[0]) == {"task", "kind", "regime", "fraction", "method", "seed", "metric", "value"}
    assert "| vcr | low_shot | 0.25 | q_ar | clip_td |" in (tmp_path / "p" / "results.md").read_text()

    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["table"] == str(tmp_path / "p" / "results.md")
    gains = summary["gain_points"]
    assert set(gains) == {"vqa low_shot f0.25", "vqa shift:shift_style f0.25", "snli_ve low_shot f0.25",
                          "vcr low_shot f0.25"}
    table = {(e["task"], e["regime"], e["metric"], e["method"]): e["mean"] for e in res["table"]}
    assert gains["vcr low_shot f0.25"] == pytest.approx(
        table[("vcr", "low_shot", "q_ar", "clip_td")] - table[("vcr", "low_shot", "q_ar", "baseline")], abs=1e-3)

    run = tmp_path / "p" / "cells" / "vqa" / "f0.25-s0" / "clip_td"
    exported = json.loads((run / "task_model.json").read_text())
    train = open_task("vqa", world / "tasks" / "vqa", "train")
    assert exported["data"]["source_sha256"] == train.source_sha256()
    assert exported["data"]["train_examples"] == round(0.25 * len(train.examples))

    for recorded in (tmp_path / "p" / "cells").rglob("config.yaml"):  # as cells recorded `teacher: SPEC`
        data = yaml.safe_load(recorded.read_text())
        data["teacher"] = data["teacher"]["models"][0]
        recorded.write_text(yaml.safe_dump(data))
    moved = tmp_path / "moved_world"  # rerun from a moved copy of the world: every cell is done, nothing trains
    shutil.copytree(world / "tasks", moved / "tasks")
    seen = []
    again = run_protocol(_cfg(moved, tmp_path / "p"), trainer=None, train_config=TRAIN, progress=seen.append)
    assert seen and all(s.startswith("skip") for s in seen) and again["rows"] == rows

    other_teacher = _cfg(moved, tmp_path / "p", teacher={"models": ["open_clip:cd-student-s-32"]})
    seen.clear()  # baseline cells never load the teacher: reused under another one, distilled cells are not
    stored = _cfg(moved, tmp_path / "p", teacher={"models": ["open_clip:cd-student-s-32"]}, methods=["baseline"])
    stored.tasks[0].teacher_features = str(tmp_path / "feats")  # nor a teacher feature store
    run_protocol(stored, trainer=None, train_config=TRAIN, progress=seen.append)
    assert len(seen) == 3 and all(s.startswith("skip") for s in seen)
    with pytest.raises(ManifestMismatch, match=r"teacher.models=\['open_clip:cd-student-xs-32'\]"):
        run_protocol(other_teacher, trainer=None, train_config=TRAIN, progress=lambda s: None)

    with pytest.raises(ManifestMismatch, match="td.lam"):
        run_protocol(_cfg(world, tmp_path / "p", td={"lam": 0.25}), trainer=stand_in_fit, train_config=TRAIN,
                     progress=lambda s: None)
    dev = moved / "tasks" / "snli_ve" / "snli_ve_dev.jsonl"  # same config, other annotations: refused too
    dev.write_text("\n".join(dev.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(ManifestMismatch, match="other snli_ve data"):
        run_protocol(_cfg(moved, tmp_path / "p"), trainer=stand_in_fit, train_config=TRAIN, progress=lambda s: None)


def test_finished_cells_drop_their_checkpoints_only_when_asked(world, tmp_path):
    def fit_with_checkpoint(task, loader_factory, train_cfg, run_dir):
        step_dir(run_dir, 1).mkdir(parents=True)
        (step_dir(run_dir, 1) / WEIGHTS).write_bytes(b"x")
        return stand_in_fit(task, loader_factory, train_cfg, run_dir)

    tasks = [{"name": "vqa", "kind": "vqa", "folder": TASKS["vqa"]}]
    for keep in (True, False):
        out = tmp_path / str(keep)
        run_protocol(_cfg(world, out, tasks=tasks, methods=["baseline"], keep_checkpoints=keep),
                     trainer=fit_with_checkpoint, train_config=TRAIN, progress=lambda s: None)
        cell = out / "cells" / "vqa" / "f0.25-s0" / "baseline"
        assert (cell / "result.json").is_file() and (cell / "task_model.safetensors").is_file()
        assert (cell / CKPT_DIR).is_dir() == keep
    seen = []  # asking later clears a finished cell's checkpoints without retraining it
    run_protocol(_cfg(world, tmp_path / "True", tasks=tasks, methods=["baseline"], keep_checkpoints=False),
                 trainer=None, train_config=TRAIN, progress=seen.append)
    assert seen == ["skip (done) cells/vqa/f0.25-s0/baseline"]
    assert not (tmp_path / "True" / "cells" / "vqa" / "f0.25-s0" / "baseline" / CKPT_DIR).exists()


def test_unknown_split_fails_before_any_training(world, tmp_path):
    cfg = _cfg(world, tmp_path / "p", tasks=[{"name": "vcr", "kind": "vcr", "folder": "tasks/vcr",
                                              "shift_splits": ["shift_style"]}])
    with pytest.raises(DataError, match="no 'shift_style' file"):
        run_protocol(cfg, trainer=stand_in_fit, train_config=TRAIN, progress=lambda s: None)
    assert not (tmp_path / "p" / "cells").exists()


def test_low_shot_subsets_nested_and_same_from_a_splits_folder(world, tmp_path):
    task = TaskConfig(name="snli_ve", kind="snli_ve", folder=str(world / "tasks" / "snli_ve"))
    data = open_task("snli_ve", task.folder, "train")
    keys = {f: {ex.key for ex in low_shot_examples(task, data, f, seed=1)} for f in (0.05, 0.25, 1.0)}
    assert keys[0.05] < keys[0.25] < keys[1.0] and len(keys[0.25]) == round(0.25 * len(data.examples))
    assert {ex.key for ex in low_shot_examples(task, data, 0.25, seed=2)} != keys[0.25]
    labels = [ex.label for ex in low_shot_examples(task, data, 0.25, seed=1)]
    assert {labels.count(y) for y in range(3)} <= {len(labels) // 3, len(labels) // 3 + 1}  # stratified

    make_splits(data, tmp_path / "splits", task="snli_ve", fractions=[0.05, 0.25, 1.0], seeds=[1],
                shift_fields=[])
    from_file = task.model_copy(update={"splits": str(tmp_path / "splits")})
    assert {ex.key for ex in low_shot_examples(from_file, data, 0.25, seed=1)} == keys[0.25]


def test_splits_made_for_other_data_are_refused(world, tmp_path):
    folder = world / "tasks" / "snli_ve"
    make_splits(open_task("snli_ve", folder, "dev"), tmp_path / "splits", task="snli_ve", fractions=[0.25], seeds=[0],
                shift_fields=[])
    task = TaskConfig(name="snli_ve", kind="snli_ve", folder=str(folder), splits=str(tmp_path / "splits"))
    with pytest.raises(ManifestMismatch, match="source.sha256"):
        low_shot_examples(task, open_task("snli_ve", folder, "train"), 0.25, seed=0)


def test_summary_mean_std_and_gains():
    rows = [{"task": "t", "regime": "low_shot", "fraction": 0.1, "metric": "accuracy", "method": m, "seed": s,
             "value": v} for m, s, v in [("baseline", 0, 40.0), ("baseline", 1, 60.0), ("clip_td", 0, 55.0),
                                         ("clip_td", 1, 65.0)]]
    td = next(e for e in summarise(rows) if e["method"] == "clip_td")
    assert td["mean"] == 60.0 and td["std"] == pytest.approx(7.0710678)
    assert td["gain_abs"] == 10.0 and td["gain_rel_pct"] == pytest.approx(20.0)


def test_finetune_command_reads_the_world(world, tmp_path):
    from clipdistill.cli import app

    out = tmp_path / "ft"
    config = Path(__file__).parents[2] / "configs" / "td" / "finetune_tiny.yaml"
    r = CliRunner().invoke(app, ["finetune", str(config), "--set", f"world={world}",
                                 "--set", "td.method=baseline", "--set", "fraction=0.1", "--out", str(out),
                                 "--set", f"student={json.dumps(TINY_STUDENT)}", "--set",
                                 "train={epochs: 1, progress: false, tensorboard: false, device: cpu}"])
    assert r.exit_code == 0, r.output
    # --out wins over the config's own `out:` (finetune_tiny.yaml names runs/td_finetune_tiny)
    assert yaml.safe_load((out / "config.yaml").read_text())["out"] == str(out)
    results = json.loads(r.output[r.output.index('{\n  "val"'):])
    assert set(results) == {"val", "shift:shift_style"} and results["val"]["n"] > 0
    assert json.loads((out / "task_model.json").read_text())["data"]["train_split"] == "train"


def test_commands_have_help_with_example_and_bad_config_is_a_clear_error(tmp_path):
    from clipdistill.cli import app

    runner = CliRunner()
    for verb in ("finetune", "protocol"):
        r = runner.invoke(app, [verb, "--help"])
        # `Example: clipdistill VERB ...` or `Example (what it shows):` with the command on the next line
        assert r.exit_code == 0 and "Example" in r.output and f"clipdistill {verb} configs/td/" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: []\nteacher: {models: [open_clip:cd-student-xs-32]}\nseeds: [0]\nfractionz: [0.1]\n")
    r = runner.invoke(app, ["protocol", str(bad)])
    assert r.exit_code != 0 and "fractions" in str(r.exception)


def test_shipped_td_configs_validate():
    from clipdistill.config import load_config
    from clipdistill.td.runner import FinetuneConfig

    root = Path(__file__).parents[2] / "configs" / "td"
    assert load_config(FinetuneConfig, root / "finetune_tiny.yaml").task.folder == "tasks/vqa"
    assert load_config(ProtocolConfig, root / "protocol_tiny.yaml").methods == ["prior", "baseline", "naive", "clip_td"]
    demo = load_config(ProtocolConfig, root / "protocol_demo.yaml", ["world=w", "teacher.models=[open_clip:x]"])
    assert demo.teacher.spec == "open_clip:x"
    with pytest.warns(FutureWarning, match=r"old spelling.*teacher: \{models: \[open_clip:x\]\}"):
        old = load_config(ProtocolConfig, root / "protocol_demo.yaml", ["world=w", "teacher=open_clip:x"])
    assert old == demo  # `teacher: SPEC` is still read, as {models: [SPEC]}
    assert demo.world == "w" and [t.kind for t in demo.tasks] == ["vqa"] and demo.full is False
    assert demo.student.model == "hf:src/clipdistill/world/pretrained/vilt-small-s0" and demo.budget.steps == 150
    # the relative hf: path names the shipped folder when run from the repository root
    assert (root.parents[1] / demo.student.model.removeprefix("hf:") / "model.safetensors").is_file()
    default = load_config(ProtocolConfig, root / "protocol_default.yaml")
    assert {t.kind: t.shift_splits for t in default.tasks} == {
        "vqa": ["shift_style", "heldout"], "snli_ve": ["shift_style", "heldout"], "vcr": []}



def test_experiment_protocol_configs_validate():
    # the protocol configs behind RESULTS' CLIP-TD tables, as their header comments run them
    from clipdistill.config import load_config

    repo = Path(__file__).parents[2]
    for path in sorted((repo / "experiments").glob("td_*.yaml")):
        assert load_config(ProtocolConfig, path).tasks[0].kind == "vqa", path.name
    vqa_only = "tasks=[{name: vqa, kind: vqa, folder: tasks/vqa, shift_splits: [shift_style, heldout]}]"
    cfg = load_config(ProtocolConfig, repo / "experiments" / "td_default_vilt.yaml", [vqa_only])
    assert [t.name for t in cfg.tasks] == ["vqa"] and cfg.seeds == [0, 1, 2] and cfg.fractions == [0.01, 0.05]
    assert (repo / cfg.student.model.removeprefix("hf:") / "model.safetensors").is_file()

def test_prior_cells_train_nothing_and_score_every_split(world, tmp_path):
    def no_training(*a, **k):
        raise AssertionError("the prior method trained")

    res = run_protocol(_cfg(world, tmp_path / "p", methods=["prior"]), trainer=no_training, train_config=TRAIN,
                       progress=lambda s: None)
    got = {(r["task"], r["regime"], r["metric"]) for r in res["rows"]}
    assert got == {("vqa", "low_shot", "accuracy"), ("vqa", "shift:shift_style", "accuracy"),
                   ("snli_ve", "low_shot", "accuracy"), ("vcr", "low_shot", "q_a"), ("vcr", "low_shot", "qa_r"),
                   ("vcr", "low_shot", "q_ar")}
    vqa = next(r["value"] for r in res["rows"] if r["task"] == "vqa" and r["regime"] == "low_shot")
    assert 5 < vqa < 95  # the world's questions have typed answers: the prior is far from 0 and from perfect
    assert not (tmp_path / "p" / "cells" / "vqa" / "f0.25-s0" / "prior" / "task_model.json").exists()


def test_dev_set_is_one_fixed_stratified_draw_outside_every_training_subset(world):
    task = TaskConfig(name="snli_ve", kind="snli_ve", folder=str(world / "tasks" / "snli_ve"), dev_fraction=0.2)
    data = open_task("snli_ve", task.folder, "train")
    pool, dev = split_dev(task, data)
    dev_keys = {ex.key for ex in dev.examples}
    assert len(dev_keys) == round(0.2 * len(data.examples)) and len(pool.examples) + len(dev_keys) == len(
        data.examples)
    labels = [ex.label for ex in dev.examples]
    assert {labels.count(y) for y in range(3)} <= {len(labels) // 3, len(labels) // 3 + 1}  # stratified
    assert {ex.key for ex in split_dev(task, data)[1].examples} == dev_keys  # same draw every time
    for seed in (0, 1):
        subsets = [{ex.key for ex in low_shot_examples(task, pool, f, seed)} for f in (0.05, 0.25, 1.0)]
        assert subsets[0] < subsets[1] < subsets[2] and not subsets[2] & dev_keys
    assert split_dev(task.model_copy(update={"dev_fraction": 0.0}), data) == (data, None)
    with pytest.raises(ValueError, match="use one or the other"):
        TaskConfig(name="v", kind="vqa", folder="f", dev_fraction=0.1, splits="some/splits")
    with pytest.raises(UserError, match="nothing to train on"):
        split_dev(task.model_copy(update={"dev_fraction": 0.9999}), data)


def test_protocol_scores_the_dev_set_and_keeps_cells_run_before_dev_fraction_existed(world, tmp_path):
    cfg = _cfg(world, tmp_path / "p", methods=["prior", "baseline"])
    cfg.tasks[0].dev_fraction = 0.1
    res = run_protocol(cfg, trainer=stand_in_fit, train_config=TRAIN, progress=lambda s: None)
    regimes = {(r["task"], r["method"], r["regime"]) for r in res["rows"]}
    assert {("vqa", m, "train_dev") for m in ("prior", "baseline")} <= regimes
    assert not any(t != "vqa" and reg == "train_dev" for t, _, reg in regimes)  # only the task that asked for one
    train = open_task("vqa", world / "tasks" / "vqa", "train")
    exported = json.loads((tmp_path / "p" / "cells" / "vqa" / "f0.25-s0" / "baseline" / "task_model.json")
                          .read_text())
    assert exported["data"]["train_examples"] == round(0.25 * (len(train.examples) - round(0.1 * len(train.examples))))

    result = tmp_path / "p" / "cells" / "snli_ve" / "f0.25-s0" / "baseline" / "result.json"
    done = json.loads(result.read_text())  # a cell finished by a version without the option: ran at its default
    del done["config"]["task"]["dev_fraction"]
    result.write_text(json.dumps(done))
    seen = []
    run_protocol(cfg, trainer=None, train_config=TRAIN, progress=seen.append)
    assert len(seen) == 6 and all(s.startswith("skip") for s in seen)
    done["config"]["td"]["retired_knob"] = 1  # an option that no longer exists is named, not silently dropped
    result.write_text(json.dumps(done))
    with pytest.raises(ManifestMismatch, match="td.retired_knob=1"):
        run_protocol(cfg, trainer=None, train_config=TRAIN, progress=lambda s: None)
    del done["config"]["td"]["retired_knob"]
    result.write_text(json.dumps(done))
    cfg.tasks[1].dev_fraction = 0.1  # and a cell run without a dev set is not reused once the task carves one
    with pytest.raises(ManifestMismatch, match="task.dev_fraction=0.0"):
        run_protocol(cfg, trainer=None, train_config=TRAIN, progress=lambda s: None)
