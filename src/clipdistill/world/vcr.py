"""VCR-format multiple-choice items (Q->A and QA->R) on world scenes.

Each "movie" belongs to one source, as in VCR: `lsmdc_*` movies are drawn in the flat style and
`movieclips_*` movies in the sketch style, so the `img_fn` prefix is the source / rendering domain.
Object references are integer lists inside token lists, indexing the `objects` list (detector classes).
Candidate sets are drawn first and the correct candidate is then picked uniformly and written into the
scene, so the text of question + choices says nothing about which choice is right.
"""

from __future__ import annotations

import random

from clipdistill.world.scene import (
    CENTRES,
    COLOR_WEIGHTS,
    COLORS,
    IMAGE_SIZE,
    POSITIONS,
    RADIUS,
    Scene,
    with_object,
)

MOVIES = {
    "lsmdc": ["lsmdc_0001_Red_Circle_Story", "lsmdc_0002_The_Blue_Square", "lsmdc_0003_Night_Of_Stars"],
    "movieclips": ["movieclips_Ring_Of_Sand", "movieclips_Hexagon_Heights", "movieclips_Cross_Roads"],
}
SOURCE_STYLE = {"lsmdc": "flat", "movieclips": "sketch"}
_POS_TOKENS = {"left": ["on", "the", "left"], "right": ["on", "the", "right"], "top": ["at", "the", "top"],
               "bottom": ["at", "the", "bottom"]}


def _colour_set(rng: random.Random) -> list[str]:
    """Four distinct colours drawn from the long-tailed marginal (the candidate set)."""
    names, out = list(COLORS), []
    while len(out) < 4:
        c = rng.choices(names, COLOR_WEIGHTS)[0]
        if c not in out:
            out.append(c)
    return out


def _item(scene: Scene, rng: random.Random) -> tuple[Scene, list, list[list], int, list[list], int]:
    """(scene possibly recoloured, question, answers, answer_label, rationales, rationale_label)."""
    k = rng.randrange(len(scene.objects))
    qtype = rng.choice(["what", "where", "which"])
    if qtype == "what":  # colour of [k]; rationale: where [k] is
        colours = _colour_set(rng)
        label = rng.randrange(4)
        scene = with_object(scene, k, color=colours[label])
        question = ["What", "color", "is", [k], "?"]
        answers = [[[k], "is", c, "."] for c in colours]
        rationales = [[[k], "is", *_POS_TOKENS[p], "of", "the", "picture", "."] for p in POSITIONS]
        return scene, question, answers, label, rationales, POSITIONS.index(scene.objects[k].pos)
    if qtype == "where":  # position of [k]; rationale: its colour
        colours = _colour_set(rng)
        r_label = rng.randrange(4)
        scene = with_object(scene, k, color=colours[r_label])
        question = ["Where", "is", [k], "?"]
        answers = [[[k], "is", *_POS_TOKENS[p], "."] for p in POSITIONS]
        rationales = [["Because", "the", c, "one", "is", [k], "."] for c in colours]
        return scene, question, answers, POSITIONS.index(scene.objects[k].pos), rationales, r_label
    # which object has colour c: needs colours unique in the scene; rationale: where that object is
    colour = scene.objects[k].color
    if sum(o.color == colour for o in scene.objects) > 1:
        return _item(scene, rng)
    question = ["Which", "shape", "is", colour, "?"]
    answers = [[[i], "is", "."] for i in range(len(scene.objects))]
    rationales = [[[k], "is", *_POS_TOKENS[p], "."] for p in POSITIONS]
    return scene, question, answers, k, rationales, POSITIONS.index(scene.objects[k].pos)


def metadata(scene: Scene) -> dict:
    """The `metadata_fn` document: boxes [x1, y1, x2, y2, score] per object, as VCR's detector wrote them."""
    boxes = []
    for o in scene.objects:
        (cx, cy), r = CENTRES[o.pos], RADIUS[o.size] + 3
        boxes.append([cx - r, cy - r, cx + r, cy + r, 1.0])
    return {"boxes": boxes, "names": [o.shape for o in scene.objects], "segms": [], "width": IMAGE_SIZE,
            "height": IMAGE_SIZE}


def make_vcr(scenes: list[Scene], movies: list[str], rng: random.Random, *,
             split: str) -> tuple[list[dict], dict[str, Scene]]:
    """One question per image (`movies[i]` is the movie of scene i); scenes have 4 objects, as VCR has 4
    candidates. Returns (jsonl rows, img_fn -> scene)."""
    rows, images = [], {}
    for i, (base, movie) in enumerate(zip(scenes, movies, strict=True)):
        scene, question, answers, label, rationales, r_label = _item(base, rng)
        stem = f"{movie}/{movie.split('_', 1)[1]}_{i:05d}@0"
        images[f"{stem}.png"] = scene
        rows.append({
            "movie": movie.split("_", 1)[1],
            "objects": [o.shape for o in scene.objects], "interesting_scores": [], "answer_likelihood": "likely",
            "img_fn": f"{stem}.png", "metadata_fn": f"{stem}.json", "answer_orig": "", "question_orig": "",
            "rationale_orig": "", "question": question, "answer_match_iter": [], "answer_sources": [],
            "answer_choices": answers, "answer_label": label, "rationale_choices": rationales,
            "rationale_label": r_label, "img_id": f"{split}-{i}", "question_number": 0,
            "annot_id": f"{split}-{i}", "match_fold": f"{split}-{i % 4}",
        })
    return rows, images
