import random

import pytest
from official_vqa_eval import VQAEval

from clipdistill.td.heads import build_answer_vocab, vqa_targets
from clipdistill.td.metrics import (
    accuracy_result,
    normalize_answer,
    process_punctuation,
    vcr_joint_accuracy,
    vqa_accuracy,
    vqa_soft_score,
)


class _Qa:
    def __init__(self, qa):
        self.qa = qa

    def getQuesIds(self):  # the official API's names
        return list(self.qa)


class _RawEval(VQAEval):
    """The official evaluator, keeping each question's unrounded accuracy (it stores round(100 * acc, 2))."""

    def setEvalQA(self, quesId, acc):
        self.raw = getattr(self, "raw", {})
        self.raw[quesId] = acc


def official(items: list[tuple[str, list[str]]]) -> tuple[list[float], float]:
    """Run the verbatim official `VQAEval.evaluate` on (prediction, human answers) pairs, laid out as the
    released annotations are: answer dicts with distinct answer_ids."""
    gts = {i: {"question_type": "what is", "answer_type": "other",
               "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(ans)]}
           for i, (_, ans) in enumerate(items)}
    ev = _RawEval(_Qa(gts), _Qa({i: {"answer": p} for i, (p, _) in enumerate(items)}))
    ev.evaluate()
    return [ev.raw[i] for i in range(len(items))], ev.accuracy["overall"]


# Answer pieces that exercise every step: number words / digits, articles, both contraction spellings,
# every punctuation mark of the official list, periods and commas next to digits, case, stray whitespace.
_WORDS = ["two", "2", "none", "0", "ten", "10", "eleven", "a", "an", "the", "The", "A", "dont", "don't", "isnt",
          "Im", "yes", "no", "red", "dog", "dogs", "3.5", "3.", ".5", "1,000", "1, 000", "o'clock", "oclock",
          "black/white", "t-shirt", "t - shirt", "(left)", "left", "yes!", "no?", "mr.", "e.g.", "u.s.", "cat's"]
_PUNCT = list(";/[]\"{}()=+\\_-><@`,?!.'") + [" ", "  ", "\n", "\t"]


def _answer(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(1, 3))]
    text = " ".join(words)
    for _ in range(rng.randint(0, 2)):  # punctuation in random places, sometimes with spaces around it
        i = rng.randint(0, len(text))
        text = text[:i] + rng.choice(_PUNCT) + text[i:]
    return text


def _question(rng: random.Random) -> tuple[str, list[str]]:
    pool = [_answer(rng) for _ in range(rng.randint(1, 4))]
    mode = rng.random()
    if mode < 0.25:  # unanimous humans
        answers = [pool[0]] * 10
    elif mode < 0.5:  # the same answer spelled differently (normalises to one string)
        base = pool[0]
        answers = [rng.choice([base, base.upper(), base + ".", " " + base + "\n", base.replace(" ", "  ")])
                   for _ in range(10)]
    else:
        answers = [rng.choice(pool) for _ in range(10)]
    pred = rng.choice([*answers, *pool, _answer(rng), answers[0].lower(), normalize_answer(answers[0])])
    return pred, answers


def test_vqa_accuracy_equals_the_official_evaluator_on_random_and_adversarial_answers():
    rng = random.Random(0)
    items = [_question(rng) for _ in range(3000)]
    items += [("two", ["2"] * 10), ("2", ["two"] * 10), ("two", ["2"] * 9 + ["3"]), ("yes", ["Yes."] * 10),
              ("yes", ["yes"] * 9 + ["Yes."]), ("Yes.", ["yes"] * 9 + ["no"]), ("a dog", ["dog"] * 10),
              ("dog", ["a dog"] * 5 + ["the dog"] * 5), ("dont", ["don't"] * 10), ("dont", ["don't"] * 7 + ["no"] * 3),
              ("1,000", ["1000"] * 4 + ["1,000"] * 6), ("3.5", ["3.5"] * 10), ("3.", ["3"] * 3 + ["4"] * 7),
              ("  yes\n", ["yes"] * 10), ("yes", ["yes\t"] * 10), ("left", ["(left)"] * 2 + ["right"] * 8)]
    want, overall = official(items)
    got = [vqa_accuracy(p, a) for p, a in items]
    diffs = [(items[i], got[i], want[i]) for i in range(len(items)) if got[i] != want[i]]
    assert not diffs, diffs[:5]
    assert round(accuracy_result(got)["accuracy"], 2) == pytest.approx(overall, abs=0.005)
    # the sample reaches both branches and partial scores
    assert {0.0, 1.0} < set(got) and any(0 < g < 1 for g in got)
    assert sum(len(set(a)) == 1 for _, a in items) > 500 and sum(len(set(a)) > 1 for _, a in items) > 1500


def test_unanimous_humans_leave_the_prediction_unnormalised_like_the_2021_evaluator():
    # a013f00 (2021): normalisation only when the humans disagree, and then of both sides
    assert vqa_accuracy("two", ["2"] * 10) == 0.0
    assert vqa_accuracy("two", ["2"] * 9 + ["3"]) == 1.0
    assert vqa_accuracy("a dog", ["dog"] * 10) == 0.0
    assert vqa_accuracy("dog", ["a dog"] * 5 + ["the dog"] * 5) == 1.0  # both sides lose their article
    assert vqa_accuracy(" yes\n", ["yes"] * 10) == 1.0  # whitespace is always cleaned


def test_digits_are_ascii_only_as_in_the_python2_evaluator():
    # fullwidth digits are not \d in Python 2's str patterns: the comma is not a thousands separator
    assert process_punctuation("\uff11,\uff10") == "\uff11 \uff10"
    assert process_punctuation("1,0") == "10"


def test_lowercasing_is_python2_simple_case_mapping():
    # the final-sigma rule and U+0130's two-character lowercase are Python 3 only
    assert normalize_answer("\u039f\u0394\u039f\u03a3") == "\u03bf\u03b4\u03bf\u03c3"
    assert normalize_answer("\u0130STANBUL") == "istanbul"


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
