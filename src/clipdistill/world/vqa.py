"""VQA v2-format question/answer sets on world scenes.

Every question type is built so that the question text alone only predicts the answer prior of its type:
colours and shapes are drawn independently, positions and sizes uniformly, and "is there a ...?" is 50/50
with the absent combination drawn from the same marginal as the present ones.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from clipdistill.world.scene import COLORS, POSITIONS, SHAPES, SIZES, Scene, sample_object

ANSWER_VOCAB = {"color": list(COLORS), "shape": list(SHAPES), "count": ["1", "2", "3"], "yesno": ["yes", "no"],
                "where": list(POSITIONS), "size": list(SIZES)}


@dataclass
class VQASet:
    """One split in VQA v2 layout: the two JSON documents plus the images to render (file name -> scene)."""

    questions: dict
    annotations: dict
    images: dict[str, Scene] = field(default_factory=dict)


def image_name(subtype: str, image_id: int) -> str:
    return f"COCO_{subtype}_{image_id:012d}.png"


def _question(scene: Scene, rng: random.Random, kind: str) -> tuple[str, str, str, str] | None:
    """(question, question_type, answer_type, answer) or None if the scene cannot ask this kind."""
    o = rng.choice(scene.objects)
    if kind == "color":
        return f"What color is the {o.shape}?", "what color is the", "other", o.color
    if kind == "shape":
        if sum(p.color == o.color for p in scene.objects) > 1:
            return None
        return f"What shape is the {o.color} object?", "what shape is the", "other", o.shape
    if kind == "count":
        return "How many shapes are there?", "how many", "number", str(len(scene.objects))
    if kind == "yesno":
        present = {(p.color, p.shape) for p in scene.objects}
        if rng.random() < 0.5:
            return f"Is there a {o.color} {o.shape}?", "is there a", "yes/no", "yes"
        absent = sample_object(rng, banned=frozenset(present))
        return f"Is there a {absent.color} {absent.shape}?", "is there a", "yes/no", "no"
    if kind == "where":
        return f"Where is the {o.shape}?", "where is the", "other", o.pos
    return f"Is the {o.shape} large or small?", "is the", "other", o.size


def _human_answers(answer: str, vocab: list[str], rng: random.Random) -> list[dict]:
    """Ten annotator answers: mostly the truth, sometimes another answer of the same type (label noise)."""
    out = []
    for i in range(10):
        a = answer if rng.random() < 0.9 else rng.choice(vocab)
        out.append({"answer": a, "answer_confidence": "yes" if a == answer else "maybe", "answer_id": i + 1})
    return out


def make_vqa(scenes: list[Scene], rng: random.Random, *, subtype: str, first_image_id: int,
             per_image: int = 3) -> VQASet:
    qs, anns, images = [], [], {}
    for i, scene in enumerate(scenes):
        image_id = first_image_id + i
        images[image_name(subtype, image_id)] = scene
        kinds = list(ANSWER_VOCAB)
        rng.shuffle(kinds)
        n = 0
        for kind in kinds:
            made = _question(scene, rng, kind)
            if made is None:
                continue
            question, qtype, atype, answer = made
            qid = image_id * 1000 + n  # VQA v2 convention: question ids extend the image id
            answers = _human_answers(answer, ANSWER_VOCAB[kind], rng)
            majority = Counter(a["answer"] for a in answers).most_common(1)[0][0]
            qs.append({"image_id": image_id, "question": question, "question_id": qid})
            anns.append({"question_id": qid, "image_id": image_id, "question_type": qtype, "answer_type": atype,
                         "multiple_choice_answer": majority, "answers": answers, "style": scene.style})
            n += 1
            if n == per_image:
                break
    info = {"description": "clipdistill embedded world (a stand-in for VQA v2)", "version": "2.0"}
    common = {"info": info, "license": {"name": "CC0"}, "data_subtype": subtype}
    return VQASet({**common, "task_type": "Open-Ended", "data_type": "mscoco", "questions": qs},
                  {**common, "data_type": "mscoco", "annotations": anns}, images)
