"""experiments/teacher_vs_prior.py: its prior columns are the protocol's answer prior, split by question type."""

import importlib.util
from pathlib import Path

import pytest

from clipdistill.data.tasks import open_task
from clipdistill.td.tasks import task_kind

SCRIPT = Path(__file__).parents[2] / "experiments" / "teacher_vs_prior.py"


def _script():
    spec = importlib.util.spec_from_file_location("teacher_vs_prior", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_prior_columns_are_the_protocols_prior_by_question_type(world, teacher, capsys):
    mod = _script()
    table = mod.measure(teacher.eval(), world, "val", distractors=7, batch_size=64)
    folder = world / "tasks" / "vqa"
    train, val = open_task("vqa", folder, "train"), open_task("vqa", folder, "val")
    assert sum(r["n"] for r in table.values()) == len(val.examples) and len(table) > 1
    overall = task_kind("vqa").prior(train.examples, train.meta, {"val": val})["val"]["accuracy"]
    assert 100 * sum(r["prior_open"] * r["n"] for r in table.values()) / len(val.examples) == pytest.approx(overall)
    assert all(0 <= r[k] <= 1 for r in table.values() for k in r if k not in ("n", "cands"))

    assert mod.main(["--teacher", "open_clip:cd-student-xs-32", "--world", str(world)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| question type | n | cands |") and "td.vqa_candidates=question_type" in out


def test_candidate_columns_read_the_protocols_candidate_policy(world, teacher):
    """The candidate sets are td.vqa_candidates' own: a yes/no type's two answers (question_type) or the GT and 7
    vocabulary answers whatever the type (frequent, the world's vocabulary being larger than 8)."""
    mod = _script()
    by_type = mod.measure(teacher.eval(), world, "val", distractors=7, batch_size=64)
    frequent = mod.measure(teacher.eval(), world, "val", distractors=7, batch_size=64, candidates="frequent")
    assert by_type["is there a"]["cands"] == 2 and by_type["what color is the"]["cands"] == 8
    assert all(r["cands"] == 8 for r in frequent.values())
    assert by_type["is there a"]["teacher_open"] == frequent["is there a"]["teacher_open"]  # open sets: no policy


def test_caption_prompts_cover_every_world_question_but_existence(world):
    """`--prompts caption` rewrites each world question template into the captions' own phrasing; only "is there
    a" (a yes/no answer no caption states) keeps the question form, so no other type silently falls back."""
    from clipdistill.data.attributes import AttributeVocab
    from clipdistill.td.tasks.vqa import question_type
    from clipdistill.world.text import WORLD_ATTRIBUTES

    mod = _script()
    vocab = AttributeVocab(WORLD_ATTRIBUTES)
    val = open_task("vqa", world / "tasks" / "vqa", "val")
    for ex in val.examples:
        answer = ex.answers[0]
        caption = mod.prompt(ex.text, answer, "caption")
        if question_type(ex, val.meta) == "is there a":
            assert caption == mod.prompt(ex.text, answer, "question") == f"{ex.text} {answer}"
            continue
        assert "?" not in caption and vocab.mentions(caption), (ex.text, caption)
    assert mod.prompt("Where is the star?", "top", "caption") == "a star at the top"
