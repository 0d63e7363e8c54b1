"""Task readers on small fixtures written in the real VQA v2 / VQA-CP / SNLI-VE / VCR formats."""

import json
import subprocess
import sys

import pytest
from PIL import Image

import clipdistill  # noqa: F401
from clipdistill.data.tasks import load_snli_ve, load_vcr, load_vqa, open_task, vcr_text
from clipdistill.errors import DataError


def _img(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)


def _answers(words):
    return [{"answer": w, "answer_confidence": "yes", "answer_id": i + 1} for i, w in enumerate(words)]


@pytest.fixture
def vqa(tmp_path):
    _img(tmp_path / "images" / "COCO_train2014_000000000009.jpg")
    # top-level keys as in v2_OpenEnded_mscoco_train2014_questions.json / v2_mscoco_train2014_annotations.json
    qs = {"info": {"description": "This is v2.0 of the VQA dataset."}, "task_type": "Open-Ended", "data_type": "mscoco",
          "license": {"url": "http://creativecommons.org/licenses/by/4.0/"}, "data_subtype": "train2014", "questions": [
        {"image_id": 9, "question": "What color is it?", "question_id": 9000},
        {"image_id": 9, "question": "How many?", "question_id": 9001},
        {"image_id": 77, "question": "Where?", "question_id": 77000}]}
    anns = {"info": {}, "license": {}, "data_subtype": "train2014", "data_type": "mscoco", "annotations": [
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
        load_vcr(path, tmp_path / "vcr1images")
    with pytest.raises(DataError, match="tried: test.jsonl"):
        open_task("vcr", tmp_path, "test")


def test_vqa_cp_images_from_both_coco_folders_by_coco_split(tmp_path):
    # VQA-CP v2 re-splits train2014 + val2014: bare lists, each record with `coco_split`
    _img(tmp_path / "images" / "train2014" / "COCO_train2014_000000000009.jpg")
    _img(tmp_path / "images" / "val2014" / "COCO_val2014_000000000042.jpg")
    _img(tmp_path / "images" / "val2014" / "COCO_val2014_000000000009.jpg")  # same id in both: coco_split decides
    qs = [{"image_id": 9, "coco_split": "train2014", "question": "Is it red?", "question_id": 9000},
          {"image_id": 42, "coco_split": "val2014", "question": "How many?", "question_id": 42000},
          {"image_id": 9, "question": "No split?", "question_id": 9001}]
    anns = [{"question_type": "is it", "multiple_choice_answer": "yes", "answers": _answers(["yes"] * 10),
             "image_id": q["image_id"], "answer_type": "yes/no", "question_id": q["question_id"],
             **({"coco_split": q["coco_split"]} if "coco_split" in q else {})} for q in qs]
    (tmp_path / "vqacp_v2_train_questions.json").write_text(json.dumps(qs))
    (tmp_path / "vqacp_v2_train_annotations.json").write_text(json.dumps(anns))
    data = open_task("vqa", tmp_path, "train")
    got = {e.key: (e.image.parent.name, e.image.name) for e in data.examples}
    assert got == {"9000": ("train2014", "COCO_train2014_000000000009.jpg"),
                   "42000": ("val2014", "COCO_val2014_000000000042.jpg")}
    assert dict(data.skips) == {"ambiguous_image": 1} and data.meta["42000"]["coco_split"] == "val2014"


# The first record of SNLI 1.0's train file, as SNLI-VE's generators write it: every SNLI field, keys sorted,
# plus the image id under the key (and in the value format) of each release.
_SNLI = {"annotator_labels": ["neutral"], "captionID": "3416050480.jpg#4", "gold_label": "neutral",
         "pairID": "3416050480.jpg#4r1n", "sentence1": "A person on a horse jumps over a broken down airplane.",
         "sentence1_binary_parse": "( ( ( A person ) ( on ( a horse ) ) ) ( ( jumps ( over ( a ( broken ( down "
                                   "airplane ) ) ) ) ) . ) )",
         "sentence1_parse": "(ROOT (S (NP (NP (DT A) (NN person)) (PP (IN on) (NP (DT a) (NN horse)))) (VP (VBZ "
                            "jumps) (PP (IN over) (NP (DT a) (JJ broken) (JJ down) (NN airplane)))) (. .)))",
         "sentence2": "A person is training his horse for a competition.",
         "sentence2_binary_parse": "( ( A person ) ( ( is ( ( training ( his horse ) ) ( for ( a competition ) ) ) "
                                   ") . ) )",
         "sentence2_parse": "(ROOT (S (NP (DT A) (NN person)) (VP (VBZ is) (VP (VBG training) (NP (PRP$ his) (NN "
                            "horse)) (PP (IN for) (NP (DT a) (NN competition))))) (. .)))"}


@pytest.mark.parametrize("key, value", [
    ("Flickr30K_ID", "3416050480"),  # necla-ml/SNLI-VE vet/tools/snli_ve_generator.py (2020)
    ("Flikr30kID", "3416050480.jpg"),  # the 2018 generator and parser (snli_ve_generator.py, dcfc893)
    ("Flickr30kID", "3416050480.jpg"),  # the README's spelling, used by re-releases (e-SNLI-VE)
])
def test_snli_ve_reads_every_released_spelling_of_the_image_key(tmp_path, key, value):
    _img(tmp_path / "flickr30k-images" / "3416050480.jpg")
    path = tmp_path / "snli_ve_train.jsonl"
    path.write_text(json.dumps(dict(sorted({**_SNLI, key: value}.items()))) + "\n")
    (ex,) = load_snli_ve(path, tmp_path / "flickr30k-images").examples
    assert (ex.key, ex.text, ex.label) == ("3416050480.jpg#4r1n", _SNLI["sentence2"], 1)
    assert ex.image.name == "3416050480.jpg"


def test_vcr_reads_the_released_record_and_counts_unlabelled_test_records(tmp_path):
    # A VCR train.jsonl record verbatim (quoted in rowanz/r2c dataloaders/vcr.py)
    row = json.loads(
        '{"movie": "3015_CHARLIE_ST_CLOUD", "objects": ["person", "person", "person", "car"], "interesting_scores": '
        '[0], "answer_likelihood": "possible", "img_fn": "lsmdc_3015_CHARLIE_ST_CLOUD/3015_CHARLIE_ST_CLOUD_00.23.57.'
        '935-00.24.00.783@0.jpg", "metadata_fn": "lsmdc_3015_CHARLIE_ST_CLOUD/3015_CHARLIE_ST_CLOUD_00.23.57.935-00.2'
        '4.00.783@0.json", "answer_orig": "No she does not", "question_orig": "Does 3 feel comfortable?", "rationale_'
        'orig": "She is standing with her arms crossed and looks disturbed", "question": ["Does", [2], "feel", "comf'
        'ortable", "?"], "answer_match_iter": [3, 0, 2, 1], "answer_sources": [3287, 0, 10184, 2260], "answer_choice'
        's": [["Yes", "because", "the", "person", "sitting", "next", "to", "her", "is", "smiling", "."], ["No", "she"'
        ', "does", "not", "."], ["Yes", ",", "she", "is", "wearing", "something", "with", "thin", "straps", "."], ["Y'
        'es", ",", "she", "is", "cold", "."]], "answer_label": 1, "rationale_choices": [["There", "is", "snow", "on"'
        ', "the", "ground", ",", "and", "she", "is", "wearing", "a", "coat", "and", "hate", "."], ["She", "is", "sta'
        'nding", "with", "her", "arms", "crossed", "and", "looks", "disturbed", "."], ["She", "is", "sitting", "very'
        '", "rigidly", "and", "tensely", "on", "the", "edge", "of", "the", "bed", ".", "her", "posture", "is", "not",'
        ' "relaxed", "and", "her", "face", "looks", "serious", "."], [[2], "is", "laying", "in", "bed", "but", "not",'
        ' "sleeping", ".", "she", "looks", "sad", "and", "is", "curled", "into", "a", "ball", "."]], "rationale_sourc'
        'es": [1921, 0, 9750, 25743], "rationale_match_iter": [3, 0, 2, 1], "rationale_label": 1, "img_id": "train-0'
        '", "question_number": 0, "annot_id": "train-0", "match_fold": "train-0", "match_index": 0}')
    _img(tmp_path / "vcr1images" / row["img_fn"])
    test_row = {k: v for k, v in row.items() if k not in ("answer_label", "rationale_label")} | {"annot_id": "test-0"}
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(test_row) + "\n")
    data = load_vcr(path, tmp_path / "vcr1images")
    (ex,) = data.examples
    assert ex.key == "train-0" and ex.text == "Does person2 feel comfortable?"
    assert ex.choices[1] == "No she does not." and ex.label == 1
    assert ex.rationales[3].startswith("person2 is laying in bed but not sleeping.") and ex.rationale_label == 1
    assert data.meta["train-0"]["movie"] == "3015_CHARLIE_ST_CLOUD" and data.meta["train-0"]["source"] == "lsmdc"
    assert dict(data.skips) == {"missing_label": 1}


def test_an_unknown_key_layout_names_the_keys_it_found(tmp_path):
    _img(tmp_path / "images" / "1.jpg")
    ve = tmp_path / "snli_ve_dev.jsonl"
    ve.write_text(json.dumps({"image": "1.jpg", "hypothesis": "A dog.", "label": 0}) + "\n")
    with pytest.raises(DataError, match=r"not a SNLI-VE file.*Flickr30K_ID \| Flikr30kID \| Flickr30kID.*"
                                        r"its keys: hypothesis, image, label"):
        load_snli_ve(ve, tmp_path / "images")
    # questions and annotations passed the other way round
    (tmp_path / "q.json").write_text(json.dumps({"questions": [{"image_id": 1, "question": "?", "question_id": 1}]}))
    (tmp_path / "a.json").write_text(json.dumps({"annotations": [{"question_id": 1, "answers": _answers(["x"])}]}))
    with pytest.raises(DataError, match=r"a.json: expected a \{'questions'.*found an object with keys annotations"):
        load_vqa(tmp_path / "a.json", tmp_path / "q.json", tmp_path / "images")
    (tmp_path / "q_list.json").write_text(json.dumps(json.loads((tmp_path / "q.json").read_text())["questions"]))
    with pytest.raises(DataError, match=r"not a VQA annotations file.*lacks answers \(its keys: image_id, question, "):
        load_vqa(tmp_path / "q.json", tmp_path / "q_list.json", tmp_path / "images")  # a VQA-CP questions list
    vcr = tmp_path / "val.jsonl"
    vcr.write_text(json.dumps({"id": "v0", "image": "x.jpg", "question": "Why?", "choices": ["a", "b"]}) + "\n")
    with pytest.raises(DataError, match=r"not a VCR file.*lacks annot_id, img_fn, objects, answer_choices"):
        load_vcr(vcr, tmp_path / "images")


def test_data_layer_does_not_import_td():
    code = ("import sys, clipdistill.data.tasks; "
            "bad = sorted(m for m in sys.modules if m.startswith('clipdistill.td')); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
