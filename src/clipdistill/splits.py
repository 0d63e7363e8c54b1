"""Low-shot and domain-shift split manifests for the CLIP-TD tasks (VQA v2, SNLI-VE, VCR).

Our reconstruction of the protocol in docs/reconstruction.md#td-splits (the paper's exact splits are unknown):
- low-shot: nested subsets of the training ids (1% ⊂ 5% ⊂ 10% ⊂ 25% ⊂ 100%) per seed, stratified by the
  answer / label so every fraction keeps the label distribution;
- domain shift: train / test by the values of one field (VCR `movie` or image `source`, a question type,
  a rendering `style`), either the values given or a seeded random share of them held out;
- VQA-CP-style re-split: per question type, each answer goes mostly to train or mostly to test, so the
  answer prior per question type differs between the two (the real VQA-CP v2 uses a greedy assignment
  over concept groups; ours is a simpler, seeded variant).
A split file records the task and a hash of the source annotations; `load_split` refuses to apply it
to other data (ManifestMismatch naming the field).
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from clipdistill.errors import DataError, ManifestMismatch, UserError
from clipdistill.manifest import atomic_write_text, check_manifest

FRACTIONS = (0.01, 0.05, 0.10, 0.25, 1.0)
SEEDS = (0, 1, 2)
SPLIT_FORMAT = 1


def stratified_order(keys: Sequence[str], strata: Sequence[str], seed: int) -> list[str]:
    """All keys in an order whose every prefix holds each stratum in proportion (within one item).

    Item j (0-based, after a seeded shuffle) of a stratum of size n gets the rank (j + u) / n with one
    random offset u per stratum; sorting by rank interleaves the strata evenly, and prefixes of one order
    are what makes the low-shot subsets nested.
    """
    if len(keys) != len(strata):
        raise ValueError("keys and strata differ in length")
    rng = random.Random(seed)
    groups: dict[str, list[str]] = defaultdict(list)
    for k, s in zip(keys, strata, strict=True):
        groups[s].append(k)
    ranked = []
    for s in sorted(groups):
        members = sorted(groups[s])
        rng.shuffle(members)
        u = rng.random()
        ranked.extend(((j + u) / len(members), rng.random(), k) for j, k in enumerate(members))
    return [k for _, _, k in sorted(ranked)]


def subset_size(n: int, fraction: float) -> int:
    """At least one item for any positive fraction; everything for 1.0."""
    if not 0 < fraction <= 1:
        raise UserError(f"fraction {fraction} must be in (0, 1]")
    return n if fraction == 1 else max(1, round(fraction * n))


def low_shot(keys: Sequence[str], strata: Sequence[str], fractions: Iterable[float] = FRACTIONS,
             seeds: Iterable[int] = SEEDS) -> dict[str, dict[str, list[str]]]:
    """{"seed0": {"0.01": [ids], ...}, ...}: nested, stratified subsets (ids sorted within a subset)."""
    out = {}
    for seed in seeds:
        order = stratified_order(keys, strata, seed)
        out[f"seed{seed}"] = {f"{f:g}": sorted(order[: subset_size(len(order), f)]) for f in sorted(fractions)}
    return out


def shift_split(values: dict[str, Any], *, test_values: Sequence[str] | None = None, test_share: float = 0.2,
                seed: int = 0) -> dict[str, Any]:
    """Train/test ids by the value of one field (`values`: id -> value); a value never falls on both sides."""
    distinct = sorted({str(v) for v in values.values()})
    if len(distinct) < 2:
        raise DataError(f"a domain-shift split needs at least two values of the field; found {distinct}")
    if test_values:
        unknown = sorted(set(test_values) - set(distinct))
        if unknown:
            raise UserError(f"test values {unknown} do not occur; the field has: {', '.join(distinct)}")
        held = sorted(set(test_values))
    else:
        rng = random.Random(seed)
        n = min(len(distinct) - 1, max(1, math.ceil(test_share * len(distinct))))
        held = sorted(rng.sample(distinct, n))
    test = sorted(k for k, v in values.items() if str(v) in held)
    train = sorted(k for k, v in values.items() if str(v) not in held)
    return {"train_values": [v for v in distinct if v not in held], "test_values": held, "train": train, "test": test}


def vqa_cp_assign(items: Iterable[tuple[str, str, str]], *, seed: int = 0, skew: float = 0.8) -> dict[str, str]:
    """(id, question_type, answer) -> {id: "train" | "test"}: per question type, answers alternate (in a
    seeded order) between going `skew` of their items to train and `skew` to test."""
    if not 0.5 < skew <= 1:
        raise UserError(f"skew {skew} must be in (0.5, 1]")
    rng = random.Random(seed)
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for key, qtype, answer in items:
        groups[(qtype, answer)].append(key)
    out: dict[str, str] = {}
    for qtype in sorted({q for q, _ in groups}):
        answers = sorted(a for q, a in groups if q == qtype)
        rng.shuffle(answers)
        for i, answer in enumerate(answers):
            members = sorted(groups[(qtype, answer)])
            rng.shuffle(members)
            n_train = round((skew if i % 2 == 0 else 1 - skew) * len(members))
            out.update({k: "train" for k in members[:n_train]})
            out.update({k: "test" for k in members[n_train:]})
    return out


def write_split(path: str | Path, *, kind: str, task: str, source: dict[str, Any], params: dict[str, Any],
                ids: dict[str, Any]) -> dict[str, Any]:
    doc = {"format": SPLIT_FORMAT, "kind": kind, "task": task, "source": source, "params": params, "ids": ids}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=True))
    return doc


def load_split(path: str | Path, *, task: str, source_sha256: str) -> dict[str, Any]:
    """Read a split file made for this task and these annotations (else ManifestMismatch naming the field)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"split file not found: {path} (make one with `clipdistill splits`)")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not a split file ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != SPLIT_FORMAT:
        raise ManifestMismatch(f"{path}: format {doc.get('format') if isinstance(doc, dict) else None!r}, "
                               f"expected {SPLIT_FORMAT}")
    check_manifest(doc, {"task": task, "source.sha256": source_sha256}, str(path))
    return doc


def stratum(kind: str, ex: Any, meta: dict[str, Any]) -> str:
    """What low-shot subsets are stratified by: the VQA majority answer, the SNLI-VE / VCR label."""
    if kind == "vqa":
        return str(meta.get("multiple_choice_answer") or max(set(ex.answers), key=ex.answers.count))
    return str(ex.label)


DEFAULT_SHIFT_FIELDS = {"vqa": ("question_type",), "snli_ve": ("style",), "vcr": ("source", "movie", "qtype")}


def make_splits(data: Any, out: str | Path, *, task: str, fractions: Sequence[float] = FRACTIONS,
                seeds: Sequence[int] = SEEDS, shift_fields: Sequence[str] | None = None,
                test_values: Sequence[str] | None = None, vqa_cp: bool = False, seed: int = 0) -> list[Path]:
    """Write lowshot.json, shift_<field>.json (and vqa_cp.json) for a `clipdistill.data.tasks.TaskData`."""
    out = Path(out)
    source = {"sha256": data.source_sha256(), "files": [p.name for p in data.files], "examples": len(data.examples)}
    keys = [ex.key for ex in data.examples]
    strata = [stratum(task, ex, data.meta[ex.key]) for ex in data.examples]
    written = [out / "lowshot.json"]
    write_split(written[0], kind="lowshot", task=task, source=source,
                params={"fractions": sorted(fractions), "seeds": list(seeds), "stratified_by": "answer/label"},
                ids=low_shot(keys, strata, fractions, seeds))
    fields = DEFAULT_SHIFT_FIELDS[task] if shift_fields is None else shift_fields
    for name in fields:
        values = {k: data.meta[k].get(name) for k in keys}
        missing = sum(v is None for v in values.values())
        if missing:
            if shift_fields is None:  # a default field the data does not have (real SNLI-VE has no style)
                continue
            raise DataError(f"{missing} of {len(keys)} {task} examples have no field {name!r}; "
                            f"fields present: {', '.join(sorted(data.meta[keys[0]]))}")
        if shift_fields is None and len(set(values.values())) < 2:
            continue  # a default field with one value here (the world's SNLI-VE train split is all `flat`)
        split = shift_split(values, test_values=test_values, seed=seed)
        written.append(out / f"shift_{name}.json")
        write_split(written[-1], kind="shift", task=task, source=source, params={"field": name, "seed": seed},
                    ids=split)
    if vqa_cp:
        if task != "vqa":
            raise UserError("--vqa-cp re-splits VQA only")
        side = vqa_cp_assign(((k, data.meta[k].get("question_type", ""), strata[i]) for i, k in enumerate(keys)),
                             seed=seed)
        written.append(out / "vqa_cp.json")
        write_split(written[-1], kind="vqa_cp", task=task, source=source, params={"seed": seed, "skew": 0.8},
                    ids={part: sorted(k for k, v in side.items() if v == part) for part in ("train", "test")})
    return written


def select(examples: Sequence[Any], ids: Iterable[str]) -> list[Any]:
    """The examples whose key is in `ids`, in the examples' order; refuses ids that are not there."""
    wanted = set(ids)
    out = [ex for ex in examples if ex.key in wanted]
    if len(out) != len(wanted):
        raise ManifestMismatch(f"{len(wanted) - len(out)} split ids are not in the data (made for other data?)")
    return out
