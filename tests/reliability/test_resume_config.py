"""`distill --resume` with the run's config edited: the config the run was trained under is never lost."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from rel_cases import case
from rel_helpers import run_main, tiny_distill_config, tiny_finetune_args

from clipdistill.train.checkpoint import list_checkpoints


def distill(tmp_path, pairs, out, *extra: str, **train):
    return run_main("distill", tiny_distill_config(tmp_path / "c.yaml", str(pairs), **train), "--out", str(out), *extra)


def names(folder):
    return sorted(p.name for p in folder.iterdir())


@case("folder", "`distill --resume latest` with the config edited (another train.epochs, then another train.lr)",
      "the run continues; the config it was trained under is kept as `config.before-resume-1.yaml` (then `-2`, "
      "`-1` untouched), one warning line names the changed keys, and the manifest's `config_history` records "
      "them; a resume with the same config leaves `config.yaml` byte-identical and adds no file")
def test_resume_with_an_edited_config_keeps_the_old_one(tmp_path, pairs):
    run = tmp_path / "run"
    assert distill(tmp_path, pairs, run, save_every=2)[0] == 0  # 4 steps
    first = (run / "config.yaml").read_bytes()
    before = names(run)

    code, out = distill(tmp_path, pairs, run, "--resume", "latest", save_every=2)
    assert code == 0 and "warning: resumed with a config" not in out, out
    assert (run / "config.yaml").read_bytes() == first and names(run) == before
    assert "config_history" not in json.loads((run / "manifest.json").read_text())

    code, out = distill(tmp_path, pairs, run, "--resume", "latest", "--set", "train.epochs=2", save_every=2)
    assert code == 0, out
    assert list_checkpoints(run)[-1].name == "step_0000008"  # it did continue, under the new config
    warning = [line for line in out.splitlines() if "warning: resumed with a config" in line]
    assert len(warning) == 1 and "differs from the run's in train.epochs;" in warning[0], out
    assert (run / "config.before-resume-1.yaml").read_bytes() == first
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 2
    second = (run / "config.yaml").read_bytes()
    history = json.loads((run / "manifest.json").read_text())["config_history"]
    assert [(e["file"], e["changed"]) for e in history] == [("config.before-resume-1.yaml", ["train.epochs"])]

    code, out = distill(tmp_path, pairs, run, "--resume", "latest", "--set", "train.epochs=2", "--set", "train.lr=0.01",
                        save_every=2)
    assert code == 0 and "differs from the run's in train.lr;" in out, out
    assert (run / "config.before-resume-1.yaml").read_bytes() == first
    assert (run / "config.before-resume-2.yaml").read_bytes() == second
    manifest = json.loads((run / "manifest.json").read_text())
    assert [(e["file"], e["changed"]) for e in manifest["config_history"]] == [
        ("config.before-resume-1.yaml", ["train.epochs"]), ("config.before-resume-2.yaml", ["train.lr"])]
    assert "schedule" in manifest and "skipped_reads" in manifest  # the end-of-run rewrite kept the history

    # --overwrite starts a new run: the kept configs are the old run's, removed with it
    assert distill(tmp_path, pairs, run, "--overwrite", save_every=2)[0] == 0
    assert not list(run.glob("config.before-resume-*"))
    assert "config_history" not in json.loads((run / "manifest.json").read_text())


def test_finetune_resume_keeps_the_old_config_and_ranks_above_0_write_none(tmp_path):
    """`finetune --resume` follows the same rule (config.yaml untouched, or kept and recorded); a torchrun rank
    > 0 writes neither config.yaml nor manifest.json (rank 0 alone writes the folder)."""
    args, out = tiny_finetune_args(tmp_path)
    code, text = run_main(*args)
    assert code == 0, text
    first = (out / "config.yaml").read_bytes()
    before = names(out)
    code, text = run_main(*args, "--resume", "latest")
    assert code == 0 and "warning: resumed" not in text, text
    assert (out / "config.yaml").read_bytes() == first and names(out) == before
    code, text = run_main(*args, "--resume", "latest", "--set", "train.epochs=2")
    assert code == 0 and "warning: resumed with a config that differs from the run's in train.epochs;" in text, text
    assert (out / "config.before-resume-1.yaml").read_bytes() == first
    history = json.loads((out / "manifest.json").read_text())["config_history"]
    assert [(e["file"], e["changed"]) for e in history] == [("config.before-resume-1.yaml", ["train.epochs"])]

    from clipdistill.config import load_config
    from clipdistill.td.runner import FinetuneConfig, run_finetune

    cfg = load_config(FinetuneConfig, Path(args[1]), args[3::2][:-1] + [f"out={tmp_path / 'rank1'}"])
    trained = []
    assert run_finetune(cfg, tmp_path / "rank1", trainer=lambda *a: trained.append(a), main=False) == {}
    assert trained and names(tmp_path / "rank1") == []
