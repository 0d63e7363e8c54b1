"""Does a teacher know what the VQA questions ask? Per question type, its answer choice against the answer prior.

CLIP-TD's VQA confidence weights read the teacher's probabilities over "question answer" prompts (td/tasks/vqa.py:
the ground-truth answer and up to `td.vqa_distractors` other training answers, of the question's own type or of
the whole vocabulary, `td.vqa_candidates`). A teacher that does not beat the answer prior on a question type has
nothing to teach there. Two measures per question type, both scored with the official VQA accuracy on the eval
split:
- `candidates`: the candidate set CLIP-TD gives each question, chosen by the protocol's own policy
  (`--candidates`, `--distractors`; fitted on the training split). teacher = the argmax of its candidate
  probabilities (`td.weighting.choice_probs`); prior = the candidate the type's training answers name most often.
  `cands` is the type's mean number of distinct candidates (chance = 1 / cands).
- `open`: every answer the training split gives for that question type. teacher = the argmax over them; prior =
  the type's most frequent training answer (the protocol's `prior` method).

`--prompts caption` asks the same questions in the captions' own words instead ("a circle on the left" for "Where
is the circle? left"; existence questions keep the question form): a teacher that answers in caption form but not
in question form knows the attribute, and only the prompt hides it.

  .venv/bin/python experiments/teacher_vs_prior.py --teacher run:runs/demo/teacher --world runs/demo/world
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

import torch

import clipdistill  # noqa: F401  (before open_clip / torchvision)
from clipdistill.data.tasks import open_task
from clipdistill.td.heads import build_answer_vocab
from clipdistill.td.metrics import normalize_answer, vqa_accuracy
from clipdistill.td.task import TDConfig
from clipdistill.td.tasks import task_kind
from clipdistill.td.tasks.vqa import CandidateMode, question_type
from clipdistill.td.weighting import choice_probs
from clipdistill.world.text import POS_PHRASE

# the world's question templates (world/vqa.py) -> the captions' phrasing of one answer (world/text.py)
_CAPTION_FORMS = [
    (re.compile(r"Where is the (\w+)\?"), lambda m, a: f"a {m[1]} {POS_PHRASE.get(a, a)}"),
    (re.compile(r"What shape is the (\w+) object\?"), lambda m, a: f"a {m[1]} {a}"),
    (re.compile(r"What color is the (\w+)\?"), lambda m, a: f"a {a} {m[1]}"),
    (re.compile(r"Is the (\w+) large or small\?"), lambda m, a: f"a {a} {m[1]}"),
    (re.compile(r"How many shapes are there\?"), lambda m, a: f"a picture with {a} shapes"),
]


def prompt(question: str, answer: str, form: str) -> str:
    """The text the teacher scores for one candidate answer: CLIP-TD's "question answer", or the caption form."""
    if form == "caption":
        for pattern, make in _CAPTION_FORMS:
            if m := pattern.fullmatch(question):
                return make(m, answer)
    return f"{question} {answer}"


def _most_frequent(counts: Counter, overall: Counter, among: list[str]) -> str:
    """The candidate the type's training answers name most; ties by overall frequency, then alphabetically (never
    by position: the ground truth is always the first candidate)."""
    return max(sorted(among), key=lambda a: (counts[a], overall[a]))


@torch.no_grad()
def measure(teacher, world: Path, split: str, distractors: int, batch_size: int,
            candidates: CandidateMode = "question_type", prompts: str = "question") -> dict[str, dict[str, float]]:
    folder = world / "tasks" / "vqa"
    train, data = open_task("vqa", folder, "train"), open_task("vqa", folder, split)
    vocab = build_answer_vocab([ex.answers for ex in train.examples], 3129)
    td = TDConfig(vqa_candidates=candidates, vqa_distractors=distractors)
    policy = task_kind("vqa").candidate_policy(train.examples, train.meta, vocab, td)  # as the runner fits it
    by_type: dict[str, Counter] = defaultdict(Counter)
    for ex in train.examples:
        by_type[question_type(ex, train.meta)].update(normalize_answer(a) for a in ex.answers)
    overall = sum(by_type.values(), Counter())
    memo: dict[str, torch.Tensor] = {}

    def texts(prompts: list[str]) -> torch.Tensor:  # the teacher's text features, once per prompt
        new = [p for p in dict.fromkeys(prompts) if p not in memo]
        for i in range(0, len(new), 256):
            chunk = new[i : i + 256]
            memo.update(zip(chunk, teacher.encode_text(teacher.tokenizer(chunk)), strict=True))
        return torch.stack([memo[p] for p in prompts])

    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    scale = teacher.logit_scale
    for i in range(0, len(data.examples), batch_size):
        batch = data.examples[i : i + batch_size]
        images = torch.stack([teacher.eval_transform(ex.load_image()) for ex in batch])
        pooled, _ = teacher.encode_image_tokens(images)  # the image feature CLIP-TD's teacher signals use
        for ex, img in zip(batch, pooled, strict=True):
            qtype = question_type(ex, data.meta)
            counts = by_type.get(qtype, overall)
            cands = policy.choose(ex, data.meta)  # distinct: the collator's padding is masked out of the softmax
            p = choice_probs(img[None], texts([prompt(ex.text, a, prompts) for a in cands])[None], scale)[0]
            row = scores[qtype]
            row["cands"].append(len(cands))
            row["teacher_candidates"].append(vqa_accuracy(cands[int(p.argmax())], ex.answers))
            row["prior_candidates"].append(vqa_accuracy(_most_frequent(counts, overall, cands), ex.answers))
            open_set = sorted(counts) if qtype in by_type else sorted(overall)
            p = choice_probs(img[None], texts([prompt(ex.text, a, prompts) for a in open_set])[None], scale)[0]
            row["teacher_open"].append(vqa_accuracy(open_set[int(p.argmax())], ex.answers))
            row["prior_open"].append(vqa_accuracy(counts.most_common(1)[0][0], ex.answers))
    return {q: {"n": len(r["teacher_open"]), **{k: sum(v) / len(v) for k, v in r.items()}}
            for q, r in sorted(scores.items())}


def to_markdown(table: dict[str, dict[str, float]], candidates: str, distractors: int) -> str:
    lines = ["| question type | n | cands | candidates: teacher | prior | teacher - prior | open: teacher | prior | "
             "teacher - prior | teacher beats prior (open) |", "|" + " --- |" * 10]
    for q, r in table.items():
        lines.append(f"| {q} | {r['n']} | {r['cands']:.1f} | {r['teacher_candidates']:.1f} | "
                     f"{r['prior_candidates']:.1f} | {r['teacher_candidates'] - r['prior_candidates']:+.1f} | "
                     f"{r['teacher_open']:.1f} | {r['prior_open']:.1f} | {r['teacher_open'] - r['prior_open']:+.1f} | "
                     f"{'yes' if r['teacher_open'] > r['prior_open'] else 'no'} |")
    lines.append(f"\nVQA accuracy (%) on the split; candidate sets: td.vqa_candidates={candidates}, the GT + up to "
                 f"{distractors} distractors (cands: mean distinct candidates, chance = 1 / cands)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True, help="zoo SPEC, e.g. run:runs/demo/teacher")
    ap.add_argument("--world", required=True, type=Path, help="an embedded world (`clipdistill world`)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--distractors", type=int, default=7, help="td.vqa_distractors of the protocol")
    ap.add_argument("--candidates", choices=["question_type", "frequent"], default="question_type",
                    help="td.vqa_candidates of the protocol")
    ap.add_argument("--prompts", choices=["question", "caption"], default="question",
                    help="question: CLIP-TD's \"question answer\" prompts; caption: the captions' own phrasing")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args(argv)
    from clipdistill.zoo import load_model

    teacher = load_model(args.teacher).eval()
    table = measure(teacher, args.world, args.split, args.distractors, args.batch_size, args.candidates, args.prompts)
    for row in table.values():
        for k in ("teacher_candidates", "prior_candidates", "teacher_open", "prior_open"):
            row[k] *= 100
    sys.stdout.write(to_markdown(table, args.candidates, args.distractors))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
