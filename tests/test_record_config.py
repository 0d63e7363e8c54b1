"""`runfolder.record_config`: a resume keeps the config.yaml its run was trained under when the config changed,
and leaves it alone when it did not (compared by value, not bytes)."""

from __future__ import annotations

import json

import yaml

from clipdistill.config import StrictModel
from clipdistill.runfolder import record_config


class Train(StrictModel):
    lr: float = 1e-3
    epochs: int = 1


class Cfg(StrictModel):
    name: str = "a"
    train: Train = Train()
    tags: list[str] = []


class Wide(StrictModel):
    a: int = 0
    b: int = 0
    c: int = 0
    d: int = 0
    e: int = 0
    f: int = 0
    g: int = 0
    h: int = 0
    i: int = 0
    j: int = 0


def files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_fresh_run_writes_and_overwrites_config(tmp_path):
    (tmp_path / "config.yaml").write_text("name: stale\n")  # a fresh start (e.g. --resume latest, no checkpoint)
    assert record_config(Cfg(name="b"), tmp_path, resumed=False) == []
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == Cfg(name="b").model_dump(mode="json")
    assert files(tmp_path) == ["config.yaml"]


def test_resume_with_the_same_config_leaves_the_file_alone(tmp_path, capsys):
    record_config(Cfg(), tmp_path, resumed=False)
    path = tmp_path / "config.yaml"
    # written by an older version: a key with its default left out, other order and spelling of the same values
    path.write_text("train: {epochs: 1, lr: 0.001}\nname: a\n")
    before = path.read_bytes()
    assert record_config(Cfg(), tmp_path, resumed=True) == []
    assert path.read_bytes() == before and files(tmp_path) == ["config.yaml"]
    assert capsys.readouterr().err == ""


def test_changed_resumes_keep_every_earlier_config(tmp_path, capsys):
    record_config(Cfg(), tmp_path, resumed=False)
    first = (tmp_path / "config.yaml").read_bytes()
    history = record_config(Cfg(train=Train(lr=0.01), tags=["x"]), tmp_path, resumed=True)
    assert (tmp_path / "config.before-resume-1.yaml").read_bytes() == first
    assert [(e["file"], e["changed"]) for e in history] == [("config.before-resume-1.yaml", ["train.lr", "tags"])]
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]["lr"] == 0.01
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning:" in err and "train.lr, tags" in err
    assert "config.before-resume-1.yaml" in err

    # the caller writes the history into the manifest; the next resume reads it back and adds to it
    (tmp_path / "manifest.json").write_text(json.dumps({"stage": "distill", "config_history": history}))
    second = (tmp_path / "config.yaml").read_bytes()
    history = record_config(Cfg(train=Train(lr=0.01, epochs=3), tags=["x"]), tmp_path, resumed=True)
    assert [(e["file"], e["changed"]) for e in history] == [("config.before-resume-1.yaml", ["train.lr", "tags"]),
                                                            ("config.before-resume-2.yaml", ["train.epochs"])]
    assert (tmp_path / "config.before-resume-1.yaml").read_bytes() == first
    assert (tmp_path / "config.before-resume-2.yaml").read_bytes() == second

    # a resume with the same config again: nothing changes, the history is carried as it is
    (tmp_path / "manifest.json").write_text(json.dumps({"stage": "distill", "config_history": history}))
    assert record_config(Cfg(train=Train(lr=0.01, epochs=3), tags=["x"]), tmp_path, resumed=True) == history
    assert len(files(tmp_path)) == 4


def test_an_existing_kept_file_is_never_overwritten(tmp_path):
    record_config(Cfg(), tmp_path, resumed=False)
    (tmp_path / "config.before-resume-1.yaml").write_text("mine\n")
    history = record_config(Cfg(name="b"), tmp_path, resumed=True)
    assert history[-1]["file"] == "config.before-resume-2.yaml"
    assert (tmp_path / "config.before-resume-1.yaml").read_text() == "mine\n"


class WithOut(StrictModel):
    out: str | None = None
    train: Train = Train()


def test_out_spelt_another_way_is_no_change(tmp_path, capsys):
    record_config(WithOut(out="runs/a"), tmp_path, resumed=False)
    before = (tmp_path / "config.yaml").read_bytes()
    assert record_config(WithOut(out=str(tmp_path)), tmp_path, resumed=True) == []
    assert (tmp_path / "config.yaml").read_bytes() == before and files(tmp_path) == ["config.yaml"]
    assert capsys.readouterr().err == ""
    history = record_config(WithOut(out=str(tmp_path), train=Train(lr=1.0)), tmp_path, resumed=True)
    assert history[0]["changed"] == ["train.lr"]


def test_warning_names_at_most_eight_keys(tmp_path, capsys):
    record_config(Wide(), tmp_path, resumed=False)
    history = record_config(Wide(**{k: 1 for k in "abcdefghij"}), tmp_path, resumed=True)
    assert history[-1]["changed"] == list("abcdefghij")  # the manifest lists them all
    err = capsys.readouterr().err
    assert "a, b, c, d, e, f, g, h and 2 more;" in err and "i," not in err


def test_unreadable_or_foreign_earlier_config_is_kept(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("train: [unclosed\n")
    history = record_config(Cfg(), tmp_path, resumed=True)
    assert history[-1]["changed"] == ["(the earlier config.yaml could not be read)"]
    assert (tmp_path / "config.before-resume-1.yaml").read_text() == "train: [unclosed\n"
    # keys this version no longer knows: compared as written, so the removed key is named too
    path.write_text("name: a\nold_key: 3\ntrain: {lr: 0.001, epochs: 1}\ntags: []\n")
    assert record_config(Cfg(), tmp_path, resumed=True)[-1]["changed"] == ["old_key"]
    assert "old_key" in capsys.readouterr().err

