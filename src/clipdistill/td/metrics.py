"""Task metrics: VQA accuracy exactly as the official VQA evaluation computes it, SNLI-VE and VCR accuracy.

`vqa_accuracy` ports the current official `vqaEval.py` (GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation,
master at a013f00 "Fixed processing answers bug", 2021-03-11), quirks included, so numbers compare with the
ones that script computes:
- prediction and human answers are whitespace-cleaned (newline/tab -> space, strip);
- only when the human answers disagree (more than one distinct cleaned answer) are BOTH the human answers
  and the prediction normalised (punctuation, then number words -> digits, articles dropped, contractions
  restored); with unanimous humans the strings are compared as they are ("yes" vs "Yes." scores 0);
- the score is the mean over the 10 leave-one-out subsets of min(#matches among the other 9 / 3, 1).
  The official code leaves out each answer dict by equality; the released answers carry distinct
  `answer_id`s, so that is leaving out by position, as here.
The official script prints round(100 * mean, 2); `accuracy_result` reports the unrounded mean.
Python 2 text semantics are kept where they differ in practice: \\d is ASCII only, lowercasing is
per character; other Unicode-database differences between Python 2.7 and 3 are not emulated.
Before 2021 the official code always normalised the prediction and only punctuation-normalised disagreeing
human answers; that version is not offered.
`normalize_answer` (both steps) is what we use to build the answer vocabulary and soft targets.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from clipdistill.errors import UserError

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = {"a", "an", "the"}
PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
# The official patterns, verbatim: "(?!<=" is a (mistyped) lookahead, so it strips any '.' not before a digit.
# re.ASCII: the official code is Python 2, where a str pattern's \d without re.UNICODE is [0-9] only.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII)
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)", re.ASCII)
# The official code passes re.UNICODE (== 32) as `count` to `sub`; kept so long answers match it exactly.
_OFFICIAL_PERIOD_COUNT = int(re.UNICODE)


def process_punctuation(text: str) -> str:
    out = text
    for p in PUNCT:
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, _OFFICIAL_PERIOD_COUNT)


def _py2_lower(text: str) -> str:
    """Python 2's unicode.lower(), which the official code ran: per-character simple case mapping, so no
    final-sigma rule ("ΟΔΟΣ" -> "οδοσ") and U+0130 -> "i" (Python 3 gives "i" + a combining dot)."""
    if text.isascii():
        return text.lower()
    return "".join("i" if c == "\u0130" else c.lower() for c in text)


def process_digit_article(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in _py2_lower(text).split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def _clean_ws(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(text: str) -> str:
    """Full official normalisation (what the prediction gets); used for the answer vocabulary."""
    return process_digit_article(process_punctuation(_clean_ws(text)))


def vqa_accuracy(prediction: str, gt_answers: Sequence[str]) -> float:
    """Official VQA accuracy of one prediction against the human answers (usually 10), in [0, 1]."""
    if not gt_answers:
        raise ValueError("VQA accuracy needs at least one human answer")
    pred = _clean_ws(prediction)
    gts = [_clean_ws(a) for a in gt_answers]
    if len(set(gts)) > 1:
        gts = [normalize_answer(a) for a in gts]
        pred = normalize_answer(pred)
    accs = []
    for i in range(len(gts)):
        others = gts[:i] + gts[i + 1 :]
        accs.append(min(1.0, sum(a == pred for a in others) / 3.0))
    return sum(accs) / len(accs)


def vqa_soft_score(count: int, n_answers: int = 10) -> float:
    """Soft target for an answer given by `count` of `n_answers` humans: the leave-one-out average of
    min(matches / 3, 1), i.e. the accuracy a model would get by predicting it (used as the BCE target)."""
    if count <= 0:
        return 0.0
    # leaving out one of the `count` matching answers leaves count-1 matches, otherwise count
    with_it = (n_answers - count) * min(1.0, count / 3.0)
    without_it = count * min(1.0, (count - 1) / 3.0)
    return (with_it + without_it) / n_answers


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Plain accuracy (SNLI-VE 3-way, VCR Q->A or QA->R)."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    if not labels:
        raise ValueError("accuracy of an empty set")
    return sum(int(p) == int(y) for p, y in zip(predictions, labels, strict=True)) / len(labels)


def vcr_joint_accuracy(
    qa_pred: Sequence[int], qa_label: Sequence[int], qar_pred: Sequence[int], qar_label: Sequence[int]
) -> dict[str, float]:
    """VCR Q->A, QA->R and Q->AR, where Q->AR counts an item only when both of its predictions are right
    (the joint indicator, not the product of the two accuracies)."""
    n = len(qa_label)
    if not (len(qa_pred) == n == len(qar_pred) == len(qar_label)) or n == 0:
        raise ValueError("VCR metrics need equally long, non-empty Q->A and QA->R predictions and labels")
    rows = zip(qa_pred, qa_label, qar_pred, qar_label, strict=True)
    both = sum(int(a) == int(b) and int(c) == int(d) for a, b, c, d in rows)
    return {
        "q_a": accuracy(qa_pred, qa_label),
        "qa_r": accuracy(qar_pred, qar_label),
        "q_ar": both / n,
    }


def accuracy_result(scores: Sequence[float]) -> dict[str, float]:
    """{"accuracy": percent, "n"} from per-item scores in [0, 1] (VQA soft scores or SNLI-VE hits)."""
    if not scores:
        raise UserError("evaluation set is empty")
    return {"accuracy": 100 * sum(scores) / len(scores), "n": len(scores)}


def vcr_result(vcr: dict[str, dict[str, tuple[int, int]]]) -> dict[str, float]:
    """Q->A / QA->R / Q->AR percentages from {"q_a": {key: (pred, label)}, "qa_r": {...}}, over the keys with both."""
    keys = sorted(set(vcr["q_a"]) & set(vcr["qa_r"]))
    if not keys:
        raise UserError("VCR evaluation needs items with both answers and rationales")
    m = vcr_joint_accuracy([vcr["q_a"][k][0] for k in keys], [vcr["q_a"][k][1] for k in keys],
                           [vcr["qa_r"][k][0] for k in keys], [vcr["qa_r"][k][1] for k in keys])
    return {**{k: 100 * v for k, v in m.items()}, "n": len(keys)}
