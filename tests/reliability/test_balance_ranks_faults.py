"""`balance` and `embed` under torchrun (2 gloo ranks, spawned) when only rank 0's step fails: every rank ends
alike."""

from __future__ import annotations

import json

import pytest
from rel_cases import case
from rel_helpers import cli_rank_worker, synthetic_feature_store

from ddp_helpers import spawn_ranks


@case("folder", "2-rank torchrun `balance` or `embed` whose `--out` rank 0 refuses to claim (a non-empty folder "
      "the toolkit did not make); only rank 0 claims the folder",
      "both ranks exit 2 with the same one line `error: ... not empty ...`, no traceback, no rank left waiting in "
      "a collective; the folder is untouched")
@pytest.mark.parametrize("verb", ["balance", "embed"])
def test_rank0_refusing_the_out_folder_stops_every_rank(tmp_path, verb):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    if verb == "balance":
        args = ["--features", str(synthetic_feature_store(tmp_path / "feats")), "--clusters", "2", "--timeout-s", "60"]
    else:  # the folder is refused before the teacher or the data is opened
        args = ["--teacher", "open_clip:cd-student-xs-32", "--data", str(tmp_path / "pairs.csv")]
    spawn_ranks(cli_rank_worker, str(tmp_path), verb, *args, "--out", str(out), "--device", "cpu")
    ends = [json.loads((tmp_path / f"cli{rank}.json").read_text()) for rank in range(2)]
    for end in ends:
        lines = end["out"].splitlines()
        assert end["code"] == 2 and len(lines) == 1 and lines[0].startswith("error: "), end
        assert "not empty" in lines[0] and "Traceback" not in end["out"], end
    assert ends[0]["out"] == ends[1]["out"]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
