"""The run-folder contract (`clipdistill.runfolder`): a reused, foreign, locked or unwritable `--out` is refused
before anything is computed or written; `--overwrite` removes only what the toolkit wrote; checkpoints of
another run in the folder are never pruned nor resumed."""

from __future__ import annotations

import json
import os
import shutil
import socket

import pytest
from rel_cases import case
from rel_helpers import run_main, tiny_distill_config, tiny_finetune_args

from clipdistill.errors import UserError
from clipdistill.runfolder import LOCK, MARKER, check_writable_file, claim, read_marker
from clipdistill.train.checkpoint import checkpoint_run_id, list_checkpoints, resolve_resume

USER_FILES = {"config.yaml": b"my: notes\n", "model.safetensors": b"my weights", "manifest.json": b'{"mine": 1}',
              "keys.txt": b"k1\nk2\n"}


def snapshot(folder):
    """Every file's bytes, but the lock file's (it names whoever held the lock last)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK}


def distill(tmp_path, pairs, out, *extra: str, **train):
    return run_main("distill", tiny_distill_config(tmp_path / "c.yaml", str(pairs), **train), "--out", str(out), *extra)


@case("folder", "`distill --out RUN` again on a finished run's folder, without --resume or --overwrite",
      "refused at once (exit 2) naming the run (run_id, created) and the choices (--resume latest / --overwrite / "
      "another --out); the folder is unchanged")
def test_reused_folder_is_refused(tmp_path, pairs):
    run = tmp_path / "run"
    assert distill(tmp_path, pairs, run)[0] == 0
    marker = read_marker(run)
    before = snapshot(run)
    code, out = distill(tmp_path, pairs, run)
    assert code == 2 and "Traceback" not in out, out
    assert f"run_id {marker['run_id']}" in out and "--resume latest" in out and "--overwrite" in out
    assert snapshot(run) == before


@case("folder", "`distill --overwrite` on a finished run's folder (4 steps) with a shorter new run (2 steps), and "
      "the user's own `notes.txt` in it",
      "only the names the marker lists are removed (the user's file stays); the old run's higher-numbered "
      "checkpoints are gone, so pruning and `--resume latest` see the new run's only")
def test_overwrite_clears_only_toolkit_files(tmp_path, pairs):
    run = tmp_path / "run"
    assert distill(tmp_path, pairs, run)[0] == 0
    (run / "notes.txt").write_text("mine")
    old_id = read_marker(run)["run_id"]
    code, out = distill(tmp_path, pairs, run, "--overwrite", steps=2, save_every=1, keep_last=1)
    assert code == 0, out
    new_id = read_marker(run)["run_id"]
    assert new_id != old_id and (run / "notes.txt").read_text() == "mine"
    assert [p.name for p in list_checkpoints(run)] == ["step_0000002"]
    assert not (run / "checkpoints" / "step_0000004").exists()
    assert json.loads((run / "manifest.json").read_text())["run_id"] == new_id


@case("folder", "a folder that holds another run's checkpoints with higher step numbers than this run's",
      "checkpoints carry their run_id: pruning keeps this run's newest, never deletes the other run's, and "
      "`--resume latest` picks this run's")
def test_foreign_checkpoints_are_neither_pruned_nor_resumed(tmp_path, pairs):
    run = tmp_path / "run"
    assert distill(tmp_path, pairs, run, steps=2, save_every=1, keep_last=1)[0] == 0
    foreign = run / "checkpoints" / "step_0000009"  # e.g. copied in from another run of the same config
    shutil.copytree(run / "checkpoints" / "step_0000002", foreign)
    (foreign / "run.json").write_text(json.dumps({"run_id": "someone-else", "step": 9}))
    code, out = distill(tmp_path, pairs, run, "--resume", "latest", steps=4, save_every=1, keep_last=1)
    assert code == 0, out
    mine = read_marker(run)["run_id"]
    assert [p.name for p in list_checkpoints(run)] == ["step_0000004"]
    assert checkpoint_run_id(resolve_resume(run, "latest")) == mine
    assert foreign.is_dir() and checkpoint_run_id(foreign) == "someone-else"


@pytest.mark.parametrize("verb", ["distill", "balance"])
@case("folder", "`--out` is the user's own folder holding `config.yaml`, `model.safetensors`, `manifest.json`, "
      "`keys.txt` (`distill` and `balance`), with and without --overwrite",
      "refused (exit 2, `not made by clipdistill`); every file byte-identical; no lock or marker file added")
def test_users_folder_is_never_written(tmp_path, pairs, verb, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    for name, data in USER_FILES.items():
        (mine / name).write_bytes(data)
    import clipdistill.features.balance as balance

    monkeypatch.setattr(balance, "run_balance", lambda *a, **k: pytest.fail("balance ran"))
    for extra in ([], ["--overwrite"]):
        if verb == "distill":
            code, out = distill(tmp_path, pairs, mine, *extra)
        else:
            code, out = run_main("balance", "--features", str(tmp_path), "--out", str(mine), "--clusters", "2",
                                 *extra)
        assert code == 2 and "Traceback" not in out and "not empty" in out, out
        assert snapshot(mine) == USER_FILES
        assert not (mine / LOCK).exists() and not (mine / MARKER).exists()


@case("folder", "two runs write the same `--out` at the same time",
      "the second fails at once (exit 2) naming the first one's pid and host; the first run's folder is "
      "untouched")
def test_second_concurrent_writer_fails_at_once(tmp_path, pairs):
    run = tmp_path / "run"
    with claim(run, "distill") as first:
        (run / "config.yaml").write_text("the first run's\n")
        before = snapshot(run)
        code, out = distill(tmp_path, pairs, run, "--resume", "latest")
        assert code == 2 and "Traceback" not in out, out
        assert "in use by another clipdistill run" in out and f"on host {socket.gethostname()}" in out
        assert f"pid {os.getpid()}" in out
        assert snapshot(run) == before and read_marker(run)["run_id"] == first.run_id
        with pytest.raises(UserError, match="in use"):
            claim(run, "distill", resume=True)
    with claim(run, "distill", resume=True) as again:  # released: the lock does not outlive its holder
        assert again.run_id == first.run_id
    (run / "config.yaml").unlink()  # a folder holding only the marker (a run that wrote nothing) counts as empty
    with claim(run, "balance") as other:
        assert other.run_id != first.run_id


@case("folder", "resume a run with its config edited to another student architecture",
      "refused before anything is written (`the checkpoint does not fit ... shapes differ`, exit 2, no "
      "traceback); `manifest.json` and `config.yaml` byte-identical")
def test_resume_with_another_architecture_changes_nothing(tmp_path, pairs):
    run = tmp_path / "run"
    assert distill(tmp_path, pairs, run, steps=2)[0] == 0
    before = snapshot(run)
    code, out = distill(tmp_path, pairs, run, "--resume", "latest", "--set", "student.model=open_clip:cd-student-s-32")
    assert code == 2 and "Traceback" not in out, out
    assert "does not fit the model this config builds" in out and "shape(s) differ" in out
    assert snapshot(run) == before


@case("folder", "`--out` is an existing file, or a place that cannot be written even by root (under `/proc`)",
      "refused before any model or data is loaded (`exists and is not a folder` / `cannot write to ...`, exit 2)")
def test_unwritable_out_fails_before_work(tmp_path, pairs, monkeypatch):
    import clipdistill.distill.run as run_mod

    monkeypatch.setattr(run_mod, "run_distill", lambda *a, **k: pytest.fail("distill started"))
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, out = distill(tmp_path, pairs, afile)
    assert code == 2 and "exists and is not a folder" in out and afile.read_text() == "x", out
    code, out = distill(tmp_path, pairs, "/proc/clipdistill-cannot-exist/run")
    assert code == 2 and "cannot write to /proc/clipdistill-cannot-exist/run" in out and "Traceback" not in out, out


@case("folder", "`balance --out` under `/proc` (unwritable even for root)",
      "refused before the store is read or anything is clustered (exit 2)")
def test_balance_unwritable_out_fails_before_computing(tmp_path, monkeypatch):
    import clipdistill.features.balance as balance

    monkeypatch.setattr(balance, "run_balance", lambda *a, **k: pytest.fail("balance computed"))
    code, out = run_main("balance", "--features", str(tmp_path), "--out", "/proc/clipdistill-x/bal", "--clusters", "2")
    assert code == 2 and "cannot write to /proc/clipdistill-x/bal" in out and "Traceback" not in out, out


@case("folder", "`eval --output` is a folder, or under `/proc`",
      "refused before the model is loaded or any image is encoded (exit 2); no temp file left beside it")
def test_eval_output_checked_before_evaluating(tmp_path, monkeypatch):
    import clipdistill.zoo as zoo

    monkeypatch.setattr(zoo, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    from rel_helpers import png_bytes

    data = tmp_path / "cls"
    for i, c in enumerate(("a", "b")):
        (data / c).mkdir(parents=True)
        (data / c / "0.png").write_bytes(png_bytes(i))
    folder = tmp_path / "results"
    folder.mkdir()
    for output, needle in ((str(folder), "is a folder"), ("/proc/clipdistill-x/r.json", "cannot write --output")):
        code, out = run_main("eval", "zeroshot", "--model", "open_clip:cd-student-xs-32", "--data", str(data),
                             "--output", output)
        assert code == 2 and needle in out and "Traceback" not in out, out
    assert list(folder.iterdir()) == [] and list(tmp_path.glob(".*")) == []  # nothing beside or inside it


def test_atomic_write_leaves_no_temp_file_when_the_target_is_a_folder(tmp_path):
    from clipdistill.manifest import atomic_write_text

    (tmp_path / "r.json").mkdir()
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "r.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    with pytest.raises(UserError, match="is a folder"):
        check_writable_file(tmp_path / "r.json")


def test_resume_adopts_a_folder_from_before_markers(tmp_path, pairs):
    """A run folder written before markers existed (no marker, unstamped checkpoints) resumes with --resume."""
    run = tmp_path / "run"
    assert distill(tmp_path, pairs, run, steps=2, save_every=1)[0] == 0
    (run / MARKER).unlink()
    for ckpt in (run / "checkpoints").iterdir():
        (ckpt / "run.json").unlink()
    assert distill(tmp_path, pairs, run)[0] == 2  # still refused without --resume
    code, out = distill(tmp_path, pairs, run, "--resume", "latest", steps=3, save_every=1)
    assert code == 0, out
    assert read_marker(run)["adopted"] and [p.name for p in list_checkpoints(run)][-1] == "step_0000003"


def test_embed_and_protocol_continue_their_own_folder_but_not_another_commands(tmp_path):
    out = tmp_path / "f"
    with claim(out, "embed", continues=True):
        pass
    (out / "plan.json").write_text("{}")
    with claim(out, "embed", continues=True) as again:
        assert again.resumed
    with pytest.raises(UserError, match="not a `protocol` run"):
        claim(out, "protocol", continues=True)
    with pytest.raises(UserError, match="contradict"):
        claim(out, "distill", resume=True, overwrite=True)


@case("folder", "`finetune` again into a finished run's `out`; then `--resume latest` with `student.width` edited",
      "the rerun is refused (`--resume latest to continue it, --overwrite to replace it`); the edited resume is "
      "refused before anything is written (`student differ from the run's config.yaml`); a plain "
      "`--resume latest` continues")
def test_finetune_reuse_and_edited_resume(tmp_path):
    args, out = tiny_finetune_args(tmp_path)
    code, text = run_main(*args)
    assert code == 0, text
    code, text = run_main(*args)
    assert code == 2 and "--resume latest to continue it, --overwrite to replace it" in text, text
    before = snapshot(out)
    from td_helpers import TINY_STUDENT  # on sys.path from tiny_finetune_args

    wider = {**TINY_STUDENT, "width": 64}
    code, text = run_main(*args, "--set", f"student={json.dumps(wider)}", "--resume", "latest")
    assert code == 2 and "student differ from the run's" in text and "Traceback" not in text, text
    assert snapshot(out) == before
    code, text = run_main(*args, "--resume", "latest")
    assert code == 0, text
