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


def test_answer_prior_per_question_type_majority_class_and_vcr_position(tmp_path):
    from clipdistill.data.tasks import TaskData
    from clipdistill.td.examples import TaskExample
    from clipdistill.td.prior import prior_metrics

    img = tmp_path / "x.png"

    def vqa(key, text, answers, qtype=None):
        return TaskExample(key=key, image=img, text=text, answers=answers), ({"question_type": qtype} if qtype else {})

    train = [vqa("1", "What color is the ball?", ["red"] * 6 + ["blue"] * 4, "what color is"),
             vqa("2", "What color is the cube?", ["Red."] * 10, "what color is"),
             vqa("3", "How many dogs?", ["two"] * 10),  # no question_type: its first three words
             vqa("4", "How many dogs?", ["3"] * 8 + ["2"] * 2)]
    test = [vqa("5", "What color is the sky?", ["blue"] * 10, "what color is"),  # prior says red: 0
            vqa("6", "How many dogs?", ["2"] * 10),  # "two" normalises to "2" (12 votes > 8 for "3"): 100
            vqa("7", "Is it raining?", ["yes"] * 10)]  # unseen type: overall most frequent answer ("red", 16): 0
    tr_ex, tr_meta = [e for e, _ in train], {e.key: m for e, m in train}
    data = TaskData("vqa", [e for e, _ in test], {e.key: m for e, m in test}, [])
    assert prior_metrics("vqa", tr_ex, tr_meta, {"val": data})["val"] == {"accuracy": pytest.approx(100 / 3), "n": 3}

    ve = [TaskExample(key=str(i), image=img, text="h", label=lab) for i, lab in enumerate([2, 2, 0, 1, 2])]
    dev = TaskData("snli_ve", ve[:4], {}, [])  # majority class 2: right on 2 of 4
    assert prior_metrics("snli_ve", ve, {}, {"val": dev})["val"]["accuracy"] == 50.0

    def vcr(key, label, rationale_label):
        return TaskExample(key=key, image=img, text="q", label=label, choices=list("abcd"),
                           rationales=list("efgh"), rationale_label=rationale_label)

    vtrain = [vcr("a", 1, 3), vcr("b", 1, 0), vcr("c", 2, 3)]  # most frequent positions: answer 1, rationale 3
    vval = TaskData("vcr", [vcr("d", 1, 3), vcr("e", 1, 2), vcr("f", 0, 3)], {}, [])
    m = prior_metrics("vcr", vtrain, {}, {"val": vval})["val"]
    assert m["q_a"] == pytest.approx(200 / 3) and m["qa_r"] == pytest.approx(200 / 3)
    assert m["q_ar"] == pytest.approx(100 / 3) and m["n"] == 3  # joint: only "d" has both right
