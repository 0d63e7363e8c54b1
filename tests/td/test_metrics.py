import pytest

from clipdistill.td.heads import build_answer_vocab, vqa_targets
from clipdistill.td.metrics import normalize_answer, vcr_joint_accuracy, vqa_accuracy, vqa_soft_score


@pytest.mark.parametrize("pred, gt", [("two", "2"), ("a dog", "dog"), ("yes.", "yes"), ("dont", "don't"),
                                      ("The Red one!", "red 1"), ("3.5", "3.5")])
def test_official_normalisation_matches_tricky_answers(pred, gt):
    # GT answers disagree (as they usually do), so the official code also punctuation-normalises them
    assert vqa_accuracy(pred, [gt] * 9 + ["other"]) == 1.0


def test_normalisation_pieces():
    assert normalize_answer("two dogs") == "2 dogs"
    assert normalize_answer("an apple") == "apple"
    assert normalize_answer("  yes.\n") == "yes"
    assert normalize_answer("1,000") == "1000"  # comma between digits -> punctuation removed
    assert normalize_answer("black/white") == "black white"


def test_leave_one_out_average_hand_computed():
    # 2 of 10 humans said "cat": 8 subsets keep both (2/3), 2 subsets keep one (1/3) -> (8*2/3 + 2*1/3)/10 = 0.6
    assert vqa_accuracy("cat", ["cat", "cat"] + ["dog"] * 8) == pytest.approx(0.6)
    # 3 of 10: 7 subsets with 3 (1.0), 3 subsets with 2 (2/3) -> 0.9, not the naive min(3/3, 1) = 1
    assert vqa_accuracy("cat", ["cat"] * 3 + ["dog"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("cat", ["cat"] * 4 + ["dog"] * 6) == 1.0
    assert vqa_accuracy("bird", ["cat"] * 4 + ["dog"] * 6) == 0.0
    for k in range(11):
        assert vqa_soft_score(k) == pytest.approx(vqa_accuracy("cat", ["cat"] * k + ["dog"] * (10 - k)))


def test_unanimous_answers_are_not_normalised_like_the_official_code():
    # quirk kept on purpose: with unanimous human answers the official code leaves them as they are
    assert vqa_accuracy("yes", ["Yes."] * 10) == 0.0
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0


def test_answer_vocab_and_soft_targets():
    vocab = build_answer_vocab([["Two", "2", "two", "three"], ["a dog", "dog"]], max_answers=2)
    assert vocab == ["2", "dog"]
    t = vqa_targets(["two"] * 3 + ["cat"] * 7, {a: i for i, a in enumerate(vocab)})
    assert t.tolist() == pytest.approx([0.9, 0.0])


def test_vcr_joint_is_the_indicator_not_the_product():
    m = vcr_joint_accuracy([0, 1, 2, 3], [0, 1, 0, 0], [1, 1, 2, 0], [0, 0, 2, 0])
    assert m["q_a"] == 0.5 and m["qa_r"] == 0.5
    assert m["q_ar"] == 0.0  # the two right answers and the two right rationales are on different items
    m = vcr_joint_accuracy([0, 1, 2, 3], [0, 1, 0, 0], [1, 0, 2, 2], [1, 0, 0, 0])
    assert m["q_ar"] == 0.5
    with pytest.raises(ValueError):
        vcr_joint_accuracy([0], [0], [], [])
