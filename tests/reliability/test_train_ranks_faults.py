"""`distill`, `finetune`, `protocol` and `vlpretrain` under torchrun (2 gloo ranks, spawned) when only rank 0's
claim of `--out` is refused: every rank ends alike, at once (the ranks join first, rank 0 claims and tells the
others, `commands/_claim.py`)."""

from __future__ import annotations

import json
import time

import pytest
from rel_cases import case, param_cases
from rel_helpers import cli_rank_worker

from ddp_helpers import spawn_ranks

TIMEOUT_S = 60  # the collective timeout: a rank left waiting for rank 0 would end only after it
CONFIGS = {"distill": "configs/baseline.yaml", "finetune": "configs/td/finetune_tiny.yaml",
           "protocol": "configs/td/protocol_tiny.yaml", "vlpretrain": "configs/vlpretrain.yaml"}


def _foreign(out):
    out.mkdir()
    (out / "notes.txt").write_text("mine")


def _file(out):
    out.write_text("mine")


def _run_of(command: str):
    def make(out):
        out.mkdir()
        (out / ".clipdistill-run.json").write_text(json.dumps({"run_id": "0123456789abcdef", "command": command,
                                                               "created": "2026-01-01T00:00:00"}))
        (out / "config.yaml").write_text("task: {name: another, kind: vqa}\n")
    return make


def _contents(out) -> dict[str, str] | str:
    """What the user had at `out` (a toolkit folder's lock file aside: claiming one takes its lock)."""
    if not out.is_dir():
        return out.read_text()
    return {p.name: p.read_text() for p in out.iterdir() if p.name != ".clipdistill-run.lock"}


ROWS = [
    ("distill-not-empty", "2-rank torchrun `distill` whose `--out` rank 0 refuses (a non-empty folder the toolkit did "
     "not make); the ranks join before rank 0 claims the folder",
     "both ranks exit 2 with the same one line `error: ... not empty ...`, no traceback, well within the collective "
     "timeout; the folder is untouched", ("distill", [], _foreign, "not empty")),
    ("finetune-file", "2-rank torchrun `finetune` whose `--out` is a file",
     "both ranks exit 2 with the same one line `error: ... exists and is not a folder ...`, no traceback, well "
     "within the collective timeout; the file is untouched", ("finetune", [], _file, "is not a folder")),
    ("finetune-resume-changed", "2-rank torchrun `finetune --resume latest` with a config whose task differs from "
     "the run's config.yaml (checked by rank 0 alone, holding the folder)",
     "both ranks exit 2 with the same one line `error: --resume: the config's task ... differ ...`, no traceback, "
     "well within the collective timeout", ("finetune", ["--resume", "latest"], _run_of("finetune"), "differ")),
    ("protocol-torchrun", "2-rank torchrun `protocol` (here into a folder holding a `distill` run): every rank would "
     "run the whole sweep, writing and pruning the same cells",
     "both ranks exit 2 with the same one line `error: protocol runs its cells ... not under torchrun ...`, before "
     "any folder is claimed; the folder is untouched", ("protocol", [], _run_of("distill"), "not under torchrun")),
    ("vlpretrain-own-run", "2-rank torchrun `vlpretrain` into a folder holding a `vlpretrain` run, with neither "
     "--resume nor --overwrite",
     "both ranks exit 2 with the same one line `error: ... already holds ... --resume latest ...`, no traceback, "
     "well within the collective timeout", ("vlpretrain", [], _run_of("vlpretrain"), "already holds")),
]


@pytest.mark.parametrize("setup", param_cases("folder", "test_train_ranks_faults.py::"
                                              "test_rank0_refusing_the_out_folder_stops_every_rank", ROWS))
def test_rank0_refusing_the_out_folder_stops_every_rank(tmp_path, setup):
    verb, flags, make, says = setup
    out = tmp_path / "out"
    make(out)
    before = _contents(out)
    sets = ["train.device=cpu", f"train.collective_timeout_s={TIMEOUT_S}"]
    args = [verb, CONFIGS[verb], "--out", str(out), *flags, *[a for s in sets for a in ("--set", s)]]
    start = time.monotonic()
    spawn_ranks(cli_rank_worker, str(tmp_path), *args)
    assert time.monotonic() - start < TIMEOUT_S  # no rank waited for rank 0 in a collective
    ends = [json.loads((tmp_path / f"cli{rank}.json").read_text()) for rank in range(2)]
    for end in ends:
        lines = end["out"].splitlines()
        assert end["code"] == 2 and len(lines) == 1 and lines[0].startswith("error: "), end
        assert says in lines[0] and "Traceback" not in end["out"], end
    assert ends[0]["out"] == ends[1]["out"]
    assert _contents(out) == before


@case("folder", "2-rank torchrun `finetune` that trains to the end: every rank would score the model and write "
      "the task-model exports into the one run folder at once",
      "both ranks exit 0; rank 0 alone scores and exports (it prints the results, rank 1 prints nothing of them); "
      "the exported task model loads")
def test_finetune_under_torchrun_exports_once(tmp_path):
    from clipdistill.world import build_world

    world = tmp_path / "world"
    build_world(world, "tiny", seed=0)
    out = tmp_path / "ft"
    sets = ["train.device=cpu", f"train.collective_timeout_s={TIMEOUT_S}", f"world={world}", "train.epochs=1",
            "td.method=baseline", "train.progress=false", "train.tensorboard=false"]
    args = ["finetune", CONFIGS["finetune"], "--out", str(out), *[a for s in sets for a in ("--set", s)]]
    spawn_ranks(cli_rank_worker, str(tmp_path), *args)
    ends = [json.loads((tmp_path / f"cli{rank}.json").read_text()) for rank in range(2)]
    assert [e["code"] for e in ends] == [0, 0], ends
    assert '"val"' in ends[0]["out"] and '"val"' not in ends[1]["out"], ends
    assert "Traceback" not in ends[0]["out"] + ends[1]["out"]
    from safetensors.torch import load_file

    meta = json.loads((out / "task_model.json").read_text())
    assert meta["kind"] == "vqa" and load_file(str(out / "task_model.safetensors"))

    # what a rank > 0 does after training: nothing scored, nothing exported
    from clipdistill.config import load_config
    from clipdistill.td.runner import FinetuneConfig, run_finetune

    cfg = load_config(FinetuneConfig, CONFIGS["finetune"], sets[2:] + [f"out={tmp_path / 'rank1'}"])
    trained = []
    assert run_finetune(cfg, tmp_path / "rank1", trainer=lambda *a: trained.append(a), main=False) == {}
    assert trained and not list((tmp_path / "rank1").glob("task_model*"))
