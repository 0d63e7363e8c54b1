"""Task readers on small fixtures written in the real VQA v2 / VQA-CP / SNLI-VE / VCR formats."""

import json

import pytest
from PIL import Image

import clipdistill  # noqa: F401
from clipdistill.data.tasks import load_snli_ve, load_vcr, load_vqa, open_task, read_vcr, vcr_text
from clipdistill.errors import DataError


def _img(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)


def _answers(words):
    return [{"answer": w, "answer_confidence": "yes", "answer_id": i + 1} for i, w in enumerate(words)]


@pytest.fixture
def vqa(tmp_path):
    _img(tmp_path / "images" / "COCO_train2014_000000000009.jpg")
    qs = {"data_subtype": "train2014", "questions": [
        {"image_id": 9, "question": "What color is it?", "question_id": 9000},
        {"image_id": 9, "question": "How many?", "question_id": 9001},
        {"image_id": 77, "question": "Where?", "question_id": 77000}]}
    anns = {"annotations": [
        {"question_id": 9000, "image_id": 9, "question_type": "what color is", "answer_type": "other",
         "multiple_choice_answer": "red", "answers": _answers(["red"] * 9 + ["blue"])},
        {"question_id": 9001, "image_id": 9, "question_type": "how many", "answer_type": "number",
         "multiple_choice_answer": "2", "answers": []},
        {"question_id": 77000, "image_id": 77, "question_type": "where", "answer_type": "other",
         "multiple_choice_answer": "left", "answers": _answers(["left"] * 10)},
        {"question_id": 5, "image_id": 9, "answers": _answers(["x"])}]}
    (tmp_path / "train_questions.json").write_text(json.dumps(qs))
    (tmp_path / "train_annotations.json").write_text(json.dumps(anns))
    return tmp_path


def test_vqa_v2_keys_answers_and_counted_skips(vqa):
    data = load_vqa(vqa / "train_questions.json", vqa / "train_annotations.json", vqa / "images")
    (ex,) = data.examples
    assert ex.key == "9000" and ex.text == "What color is it?" and ex.answers.count("red") == 9
    assert ex.image.name == "COCO_train2014_000000000009.jpg"
    assert dict(data.skips) == {"no_answers": 1, "missing_image": 1, "annotation_without_question": 1}
    assert data.meta["9000"]["question_type"] == "what color is"
    assert open_task("vqa", vqa, "train").source_sha256() == data.source_sha256()


def test_vqa_cp_bare_lists_are_read_too(vqa):
    qs = json.loads((vqa / "train_questions.json").read_text())["questions"]
    anns = json.loads((vqa / "train_annotations.json").read_text())["annotations"]
    (vqa / "vqacp_v2_test_questions.json").write_text(json.dumps(qs))
    (vqa / "vqacp_v2_test_annotations.json").write_text(json.dumps(anns))
    assert [ex.key for ex in open_task("vqa", vqa, "test").examples] == ["9000"]


def test_snli_ve_labels_and_skips(tmp_path):
    _img(tmp_path / "img" / "3416050480.jpg")
    rows = [
        {"Flickr30K_ID": "3416050480", "sentence1": "a dog", "sentence2": "An animal.", "gold_label": "entailment",
         "pairID": "3416050480.jpg#4r1e", "captionID": "3416050480.jpg#4"},
        {"Flickr30K_ID": "3416050480", "sentence2": "A cat.", "gold_label": "contradiction",
         "pairID": "3416050480.jpg#4r1c"},
        {"Flickr30K_ID": "3416050480", "sentence2": "Hm.", "gold_label": "-", "pairID": "3416050480.jpg#4r1n"},
        {"Flickr30K_ID": "1", "sentence2": "A cat.", "gold_label": "neutral", "pairID": "1.jpg#0r1n"},
        {"Flickr30K_ID": "3416050480", "sentence2": "A cat.", "gold_label": "neutral", "pairID": "3416050480.jpg#4r1e"},
    ]
    path = tmp_path / "snli_ve_dev.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    data = load_snli_ve(path, tmp_path / "img")
    assert [(e.key, e.text, e.label) for e in data.examples] == [
        ("3416050480.jpg#4r1e", "An animal.", 0), ("3416050480.jpg#4r1c", "A cat.", 2)]
    assert dict(data.skips) == {"unknown_label": 1, "missing_image": 1, "duplicate_key": 1, "not_json": 1}


def _vcr_row(annot_id, **over):
    row = {"movie": "3015_CHARLIE_ST_CLOUD", "objects": ["person", "person", "chair"],
           "img_fn": "lsmdc_3015_CHARLIE_ST_CLOUD/3015@0.jpg", "metadata_fn": "lsmdc_3015_CHARLIE_ST_CLOUD/3015@0.json",
           "question": ["Why", "is", [0], "near", [2], "?"],
           "answer_choices": [[[0], "wants", "to", "sit", "."], ["No", "reason", "."], [[1, 2], "are", "close", "."],
                              ["He", "is", "tired", "."]],
           "answer_label": 0, "rationale_choices": [["Because", "."], ["Chairs", "are", "for", "sitting", "."],
                                                    [[1], "said", "so", "."], ["It", "is", "late", "."]],
           "rationale_label": 1, "annot_id": annot_id, "img_id": "val-1", "question_number": 0, "match_fold": "val-0"}
    return {**row, **over}


def test_vcr_object_refs_rendered_with_their_index(tmp_path):
    _img(tmp_path / "vcr1images" / "lsmdc_3015_CHARLIE_ST_CLOUD" / "3015@0.jpg")
    rows = [_vcr_row("val-0"), _vcr_row("val-1", question=["Who", "is", [7], "?"]),
            _vcr_row("val-2", img_fn="../../etc/passwd"), _vcr_row("val-3", answer_label=4),
            _vcr_row("val-4", img_fn="lsmdc_x/missing.jpg")]
    path = tmp_path / "val.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_vcr(path, tmp_path / "vcr1images")
    (ex,) = data.examples
    assert ex.key == "val-0" and ex.text == "Why is person0 near chair2?"
    assert ex.choices[2] == "person1 and chair2 are close." and ex.label == 0
    assert ex.rationales[1] == "Chairs are for sitting." and ex.rationale_label == 1
    assert data.meta["val-0"]["source"] == "lsmdc" and data.meta["val-0"]["qtype"] == "why"
    assert dict(data.skips) == {"bad_object_ref": 1, "unsafe_path": 1, "label_out_of_range": 1, "missing_image": 1}
    assert vcr_text([[0, 1, 2], "talk", "."], ["a", "b", "c"]) == "a0, b1 and c2 talk."


def test_nothing_usable_is_a_clear_error(tmp_path):
    (tmp_path / "vcr1images").mkdir()
    path = tmp_path / "val.jsonl"
    path.write_text(json.dumps(_vcr_row("val-0")) + "\n")
    with pytest.raises(DataError, match="no usable examples.*missing_image: 1"):
        read_vcr(path, tmp_path / "vcr1images")
    with pytest.raises(DataError, match="tried: test.jsonl"):
        open_task("vcr", tmp_path, "test")
