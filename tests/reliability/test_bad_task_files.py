"""Bad task files (VQA v2 / VQA-CP, SNLI-VE, VCR): a file of another layout is one clear error that names the
keys it found, not a run on zero examples; records a split cannot use are counted."""

from __future__ import annotations

import json

import pytest
from rel_cases import param_cases
from rel_helpers import run_main

from clipdistill.data.tasks import open_task
from clipdistill.errors import DataError


def _png(path):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)


def _snli_other_key(root):
    _png(root / "images" / "3416050480.jpg")
    row = {"image": "3416050480.jpg", "pairID": "3416050480.jpg#4r1n", "sentence2": "A person rides.",
           "gold_label": "neutral"}
    (root / "snli_ve_dev.jsonl").write_text(json.dumps(row) + "\n")
    return "snli_ve", "dev", ["not a SNLI-VE file", "Flickr30K_ID | Flikr30kID | Flickr30kID",
                              "its keys: gold_label, image, pairID, sentence2"]


def _vqa_swapped(root):
    _png(root / "images" / "COCO_val2014_000000000042.jpg")
    qs = {"data_subtype": "val2014", "questions": [{"image_id": 42, "question": "Why?", "question_id": 42000}]}
    answers = [{"answer": "x", "answer_confidence": "yes", "answer_id": 1}]
    anns = {"data_subtype": "val2014", "annotations": [{"question_id": 42000, "image_id": 42, "answers": answers}]}
    (root / "val_questions.json").write_text(json.dumps(anns))  # each file under the other's name
    (root / "val_annotations.json").write_text(json.dumps(qs))
    return "vqa", "val", ["val_questions.json: expected a {'questions': [...]} document",
                          "found an object with keys annotations, data_subtype"]


def _vcr_other_format(root):
    (root / "vcr1images").mkdir(parents=True)
    row = {"id": "val-0", "image": "movie/x.jpg", "question": "Why?", "choices": ["a", "b", "c", "d"], "label": 0}
    (root / "val.jsonl").write_text(json.dumps(row) + "\n")
    return "vcr", "val", ["not a VCR file", "lacks annot_id, img_fn, objects, answer_choices",
                          "its keys: choices, id, image, label, question"]


def _vcr_unlabelled(root):
    _png(root / "vcr1images" / "lsmdc_3015_CHARLIE_ST_CLOUD" / "3015@0.jpg")
    row = {"movie": "3015_CHARLIE_ST_CLOUD", "objects": ["person", "chair"], "img_fn": "lsmdc_3015_CHARLIE_ST_CLOUD/"
           "3015@0.jpg", "metadata_fn": "lsmdc_3015_CHARLIE_ST_CLOUD/3015@0.json", "question": ["Why", "?"],
           "answer_choices": [["a"], ["b"], ["c"], ["d"]], "rationale_choices": [["e"], ["f"], ["g"], ["h"]],
           "annot_id": "test-0", "img_id": "test-0", "question_number": 0}
    (root / "test.jsonl").write_text(json.dumps(row) + "\n")
    return "vcr", "test", ["vcr: no usable examples", "missing_label: 1"]


ROWS = param_cases("data", "test_bad_task_files.py::test_task_file_of_another_layout_is_one_clear_error", [
    ("snli-ve-unknown-image-key", "an SNLI-VE jsonl naming the image under a key no release uses (`image`)",
     "`error: ... not a SNLI-VE file: no record has ... Flickr30K_ID | Flikr30kID | Flickr30kID ... (its keys: "
     "...)` from `splits` (exit 2, no traceback)", _snli_other_key),
    ("vqa-files-swapped", "VQA question and annotation files swapped",
     "`error: ... expected a {'questions': [...]} document (VQA v2) or a list (VQA-CP); found an object with "
     "keys annotations, ...` (exit 2)", _vqa_swapped),
    ("vcr-other-format", "a jsonl of another multiple-choice format where VCR's should be",
     "`error: ... not a VCR file: ... the first lacks annot_id, img_fn, objects, answer_choices (its keys: ...)` "
     "(exit 2)", _vcr_other_format),
    ("vcr-unlabelled-test", "VCR's unlabelled test split (no `answer_label`) used as an evaluation split",
     "each record counted `missing_label`; `error: vcr: no usable examples ... (skipped: missing_label: N)` "
     "(exit 2)", _vcr_unlabelled),
])


@pytest.mark.parametrize("make", ROWS)
def test_task_file_of_another_layout_is_one_clear_error(tmp_path, make):
    kind, split, needles = make(tmp_path / "task")
    with pytest.raises(DataError) as err:
        open_task(kind, tmp_path / "task", split)
    assert all(n in str(err.value) for n in needles), str(err.value)
    code, out = run_main("splits", "--task", kind, "--data", str(tmp_path / "task"), "--out", str(tmp_path / "out"),
                         "--split", split)
    assert code == 2 and "error:" in out and "Traceback" not in out, out
    assert len([line for line in out.splitlines() if line.strip()]) == 1, out
    assert all(n in out for n in needles), out
    assert not (tmp_path / "out").exists()
