"""Text-only baselines on world task records (no images rendered): bag-of-words logistic regression."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from clipdistill.data.tasks import vcr_text
from clipdistill.world.scene import sample_scene
from clipdistill.world.snli_ve import make_snli_ve
from clipdistill.world.vcr import MOVIES, SOURCE_STYLE, make_vcr
from clipdistill.world.vqa import make_vqa


def _fit(train_text, train_y):
    vec = CountVectorizer(token_pattern=r"[^ ]+", binary=True)
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(vec.fit_transform(train_text), train_y)
    return clf, vec


def vqa_text_only(n_images: int, seed: int = 0) -> tuple[float, float]:
    """(text-only accuracy, accuracy of the per-question-type majority answer) on a held-out half."""
    rng = random.Random(seed)
    s = make_vqa([sample_scene(rng) for _ in range(n_images)], rng, subtype="train2014", first_image_id=1)
    qs = {q["question_id"]: q["question"] for q in s.questions["questions"]}
    anns = s.annotations["annotations"]
    half = len(anns) // 2
    text = [qs[a["question_id"]] for a in anns]
    y = [a["multiple_choice_answer"] for a in anns]
    clf, vec = _fit(text[:half], y[:half])
    acc = float(np.mean(clf.predict(vec.transform(text[half:])) == np.array(y[half:])))
    by_type: dict[str, Counter] = defaultdict(Counter)
    for a in anns[:half]:
        by_type[a["question_type"]][a["multiple_choice_answer"]] += 1
    prior = float(np.mean([by_type[a["question_type"]].most_common(1)[0][0] == a["multiple_choice_answer"]
                           for a in anns[half:]]))
    return acc, prior


def snli_ve_text_only(n_images: int, seed: int = 0) -> float:
    rng = random.Random(seed)
    rows, _ = make_snli_ve([sample_scene(rng) for _ in range(n_images)], rng, first_image_id=1)
    rng.shuffle(rows)
    half = len(rows) // 2
    text, y = [r["sentence2"] for r in rows], [r["gold_label"] for r in rows]
    clf, vec = _fit(text[:half], y[:half])
    return float(np.mean(clf.predict(vec.transform(text[half:])) == np.array(y[half:])))


def vcr_text_only(n: int, seed: int = 0) -> tuple[float, float]:
    """(Q->A, QA->R) accuracy of a candidate scorer on bag-of-words of query + candidate."""
    rng = random.Random(seed)
    movies = [rng.choice([m for ms in MOVIES.values() for m in ms]) for _ in range(n)]
    scenes = [sample_scene(rng, style=SOURCE_STYLE[m.split("_")[0]], min_objects=4, max_objects=4) for m in movies]
    rows, _ = make_vcr(scenes, movies, rng, split="train")
    accs = []
    for choices_key, label_key in (("answer_choices", "answer_label"), ("rationale_choices", "rationale_label")):
        def pairs(r, choices_key=choices_key):
            q = vcr_text(r["question"], r["objects"])
            if choices_key == "rationale_choices":
                q += " " + vcr_text(r["answer_choices"][r["answer_label"]], r["objects"])
            return [f"{q} || {vcr_text(c, r['objects'])}" for c in r[choices_key]]

        half = len(rows) // 2
        text = [t for r in rows[:half] for t in pairs(r)]
        y = [int(i == r[label_key]) for r in rows[:half] for i in range(len(r[choices_key]))]
        clf, vec = _fit(text, y)
        right = [int(np.argmax(clf.decision_function(vec.transform(pairs(r)))) == r[label_key]) for r in rows[half:]]
        accs.append(float(np.mean(right)))
    return accs[0], accs[1]
