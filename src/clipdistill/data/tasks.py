"""Readers for the real task formats (VQA v2, SNLI-VE, VCR) -> `clipdistill.data.examples.TaskExample`.

Each reader keeps the dataset's own id as the example key (VQA `question_id`, SNLI-VE `pairID`, VCR
`annot_id`), skips bad records and counts them per reason (DataError when nothing is left), and also
returns per-example metadata (question type, movie, image source, style...) that `clipdistill.splits`
uses for domain-shift splits. The same readers read the embedded world's files and the real datasets.
The keys are the released files' own (VQA v2 / VQA-CP v2 question and annotation files, SNLI-VE's jsonl in
the spellings of its 2018 and 2020 generators, VCR's jsonl). A file none of whose records has the keys its
format needs is a DataError naming the keys it found; otherwise a bad record is a counted skip.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipdistill.data.examples import VE_LABELS, TaskExample, TaskKind
from clipdistill.data.sources import SkipCounter
from clipdistill.errors import DataError
from clipdistill.manifest import sha256_file, sha256_json

TASKS: tuple[TaskKind, ...] = ("vqa", "snli_ve", "vcr")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass
class TaskData:
    kind: TaskKind
    examples: list[TaskExample]
    meta: dict[str, dict[str, Any]]  # key -> scalar fields of the record (+ derived ones, e.g. VCR "source")
    files: list[Path]  # the annotation files read
    skips: SkipCounter = field(default_factory=SkipCounter)

    def source_sha256(self) -> str:
        """Hash of the annotation files' contents (by file name, not folder: moving the data keeps it)."""
        return sha256_json({p.name: sha256_file(p) for p in self.files})

    def __add__(self, other: TaskData) -> TaskData:
        if other.kind != self.kind:
            raise DataError(f"cannot pool {self.kind} and {other.kind} data")
        return TaskData(self.kind, self.examples + other.examples, {**self.meta, **other.meta},
                        self.files + other.files, SkipCounter(self.skips + other.skips))


class _BadRecord(Exception):
    """A record to skip; the message is the skip reason."""


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None


def _jsonl(path: Path, skips: SkipCounter):
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    with open(path) as f:
        for line in f:
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    skips["not_json"] += 1


def _scalars(record: dict) -> dict[str, Any]:
    return {k: v for k, v in record.items() if isinstance(v, (str, int, float, bool))}


def _check_layout(records: list, path: Path, what: str, need: list[str], any_of: tuple[str, ...] = ()) -> None:
    """A file none of whose records has the keys its format needs (another format, or the other file of a
    pair) is a clear error naming the keys it does have, rather than every record skipped one by one."""

    def lacks(r: dict) -> list[str]:
        return [k for k in need if k not in r] + ([" | ".join(any_of)] if any_of and not any(k in r for k in any_of)
                                                  else [])

    dicts = [r for r in records if isinstance(r, dict)]
    if not records or any(not lacks(r) for r in dicts):
        return  # empty file: `_finish` says so; otherwise the bad records are counted skips
    if not dicts:
        raise DataError(f"{path}: not a {what} file: its records are JSON {type(records[0]).__name__}s, not objects")
    keys = ", ".join(sorted(map(str, dicts[0]))) or "(none)"
    raise DataError(f"{path}: not a {what} file: no record has {', '.join(lacks({}))}; "
                    f"the first lacks {', '.join(lacks(dicts[0]))} (its keys: {keys})")


def _finish(kind: TaskKind, examples: list[TaskExample], meta: dict, files: list[Path], skips: SkipCounter) -> TaskData:
    if not examples:
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(skips.items())) or "the file holds no records"
        raise DataError(f"{kind}: no usable examples in {', '.join(map(str, files))} (skipped: {reasons})")
    return TaskData(kind, examples, meta, files, skips)


def _add(out: list[TaskExample], meta: dict, skips: SkipCounter, ex: TaskExample, m: dict) -> None:
    if ex.key in meta:
        skips["duplicate_key"] += 1
        return
    out.append(ex)
    meta[ex.key] = m


def _image_ids(image_dir: Path) -> dict[int, list[Path]]:
    """COCO file names end in the zero-padded image id (`COCO_train2014_000000000009.jpg`); index them once,
    from the folder itself and its sub-folders (VQA-CP mixes `train2014/` and `val2014/` images)."""
    if not image_dir.is_dir():
        raise DataError(f"image folder not found: {image_dir}")
    index: dict[int, list[Path]] = {}
    for folder in [image_dir, *sorted(e.path for e in os.scandir(image_dir) if e.is_dir())]:
        for entry in os.scandir(folder):
            m = re.search(r"(\d+)\.(?:jpe?g|png)$", entry.name, re.IGNORECASE)
            if m and entry.is_file():
                index.setdefault(int(m.group(1)), []).append(Path(entry.path))
    return index


def _coco_image(index: dict[int, list[Path]], image_id: Any, coco_split: Any) -> Path:
    found = index.get(int(image_id), [])
    if len(found) > 1 and isinstance(coco_split, str):  # VQA-CP: `coco_split` says train2014 or val2014
        found = [p for p in found if coco_split in (p.parent.name, *p.stem.split("_"))]
    if not found:
        raise _BadRecord("missing_image")
    if len(found) > 1:
        raise _BadRecord("ambiguous_image")
    return found[0]


def _records(doc: Any, key: str, path: Path) -> list:
    """VQA v2 wraps lists in {"questions": [...]}; VQA-CP files are the bare list."""
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict) and isinstance(doc.get(key), list):
        return doc[key]
    found = f"an object with keys {', '.join(sorted(map(str, doc))) or '(none)'}" if isinstance(doc, dict) \
        else f"a JSON {type(doc).__name__}"
    raise DataError(f"{path}: expected a {{'{key}': [...]}} document (VQA v2) or a list (VQA-CP); found {found}")


def load_vqa(questions_json: str | Path, annotations_json: str | Path, image_dir: str | Path) -> TaskData:
    """VQA v2 (`v2_OpenEnded_mscoco_*_questions.json` + `v2_mscoco_*_annotations.json`) or VQA-CP v2
    (`vqacp_v2_*_questions.json` + `_annotations.json`, bare lists with `coco_split`). Images: one folder of
    COCO images, or a folder with `train2014/`, `val2014/` sub-folders."""
    qpath, apath, skips = Path(questions_json), Path(annotations_json), SkipCounter()
    q_records = _records(_load_json(qpath), "questions", qpath)
    _check_layout(q_records, qpath, "VQA questions", ["question_id", "question", "image_id"])
    questions = {}
    for q in q_records:
        if isinstance(q, dict) and isinstance(q.get("question"), str) and "question_id" in q:
            questions[q["question_id"]] = q
        else:
            skips["bad_question_record"] += 1
    a_records = _records(_load_json(apath), "annotations", apath)
    _check_layout(a_records, apath, "VQA annotations", ["question_id", "answers"])
    images = _image_ids(Path(image_dir))
    out: list[TaskExample] = []
    meta: dict[str, dict] = {}
    for a in a_records:
        try:
            if not isinstance(a, dict) or "question_id" not in a:
                raise _BadRecord("bad_annotation_record")
            q = questions.get(a["question_id"])
            if q is None:
                raise _BadRecord("annotation_without_question")
            answers = [str(x["answer"]) for x in a.get("answers") or [] if isinstance(x, dict) and "answer" in x]
            if not answers:
                raise _BadRecord("no_answers")
            image = _coco_image(images, a.get("image_id", q.get("image_id", -1)),
                                a.get("coco_split", q.get("coco_split")))
        except (_BadRecord, TypeError, ValueError) as e:
            skips[str(e) if isinstance(e, _BadRecord) else "bad_annotation_record"] += 1
            continue
        ex = TaskExample(key=str(a["question_id"]), image=image, text=q["question"], answers=answers)
        _add(out, meta, skips, ex, _scalars(a))
    return _finish("vqa", out, meta, [qpath, apath], skips)


def _image_stems(image_dir: Path) -> dict[str, Path]:
    if not image_dir.is_dir():
        raise DataError(f"image folder not found: {image_dir}")
    return {Path(e.name).stem: Path(e.path) for e in os.scandir(image_dir)
            if e.name.lower().endswith(_IMAGE_SUFFIXES)}


# The image-id key as each release spells it: `Flickr30K_ID` ("3416050480", the 2020 generator),
# `Flikr30kID` ("3416050480.jpg", the 2018 generator, its parser and the files it made), `Flickr30kID`
# (the README's spelling, used by re-releases such as e-SNLI-VE; "3416050480.jpg").
SNLI_VE_IMAGE_KEYS = ("Flickr30K_ID", "Flikr30kID", "Flickr30kID")


def load_snli_ve(jsonl: str | Path, image_dir: str | Path) -> TaskData:
    """Image premise (`Flickr30K_ID` or another spelling, see SNLI_VE_IMAGE_KEYS) + hypothesis (`sentence2`)
    -> `gold_label`; `sentence1` (the text premise of SNLI) is kept in the metadata only, since in SNLI-VE
    the image replaces it."""
    path, skips = Path(jsonl), SkipCounter()
    records = list(_jsonl(path, skips))
    _check_layout(records, path, "SNLI-VE", ["pairID", "sentence2", "gold_label"], SNLI_VE_IMAGE_KEYS)
    images = _image_stems(Path(image_dir))
    out: list[TaskExample] = []
    meta: dict[str, dict] = {}
    for r in records:
        try:
            if not isinstance(r, dict) or not all(isinstance(r.get(k), str) for k in ("pairID", "sentence2")):
                raise _BadRecord("bad_record")
            if r.get("gold_label") not in VE_LABELS:
                raise _BadRecord("unknown_label")  # SNLI marks no-consensus pairs with "-"
            image_key = next((k for k in SNLI_VE_IMAGE_KEYS if k in r), None)
            if image_key is None or not isinstance(r[image_key], (str, int)) or isinstance(r[image_key], bool):
                raise _BadRecord("bad_record")
            image = images.get(str(r[image_key]).strip().removesuffix(".jpg"))
            if image is None:
                raise _BadRecord("missing_image")
        except _BadRecord as e:
            skips[str(e)] += 1
            continue
        ex = TaskExample(key=r["pairID"], image=image, text=r["sentence2"], label=VE_LABELS.index(r["gold_label"]))
        _add(out, meta, skips, ex, _scalars(r))
    return _finish("snli_ve", out, meta, [path], skips)


_NO_SPACE_BEFORE = re.compile(r" ([.,?!;:'])")


def vcr_text(tokens: list, objects: list[str]) -> str:
    """VCR tokens -> text; an object reference `[2]` becomes `<class>2` (its index in `objects`, e.g.
    "person2"), several references `[0, 2]` become "person0 and chair2"."""
    words = []
    for t in tokens:
        if isinstance(t, list):
            if not t or not all(isinstance(i, int) and 0 <= i < len(objects) for i in t):
                raise _BadRecord("bad_object_ref")
            names = [f"{objects[i]}{i}" for i in t]
            words.append(names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1])
        elif isinstance(t, str):
            words.append(t)
        else:
            raise _BadRecord("bad_record")
    return _NO_SPACE_BEFORE.sub(r"\1", " ".join(words))


def _safe_relative(rel: Any) -> str:
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or ".." in Path(rel).parts:
        raise _BadRecord("unsafe_path")
    return rel


def load_vcr(jsonl: str | Path, image_dir: str | Path) -> TaskData:
    """Q->A and QA->R from VCR's jsonl (`annot_id`, `img_fn`, `objects`, `question`, `answer_choices`,
    `answer_label`, `rationale_choices`, `rationale_label`; tokens are words or lists of `objects` indices).
    Without `rationale_choices` an item is Q->A only; records without `answer_label` (VCR's unlabelled test
    set) are counted `missing_label`."""
    path, image_dir, skips = Path(jsonl), Path(image_dir), SkipCounter()
    if not image_dir.is_dir():
        raise DataError(f"image folder not found: {image_dir}")
    records = list(_jsonl(path, skips))
    _check_layout(records, path, "VCR", ["annot_id", "img_fn", "objects", "question", "answer_choices"])
    out: list[TaskExample] = []
    meta: dict[str, dict] = {}
    for r in records:
        try:
            if not isinstance(r, dict) or not isinstance(r.get("objects"), list) or "annot_id" not in r:
                raise _BadRecord("bad_record")
            objects = [str(o) for o in r["objects"]]
            question = vcr_text(r.get("question") or [], objects)
            choices = [vcr_text(c, objects) for c in r.get("answer_choices") or []]
            rationales = [vcr_text(c, objects) for c in r.get("rationale_choices") or []]
            label, r_label = r.get("answer_label"), r.get("rationale_label", -1)
            if not question or len(choices) < 2:
                raise _BadRecord("bad_record")
            if "answer_label" not in r:
                raise _BadRecord("missing_label")
            if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(choices):
                raise _BadRecord("label_out_of_range")
            if rationales and (not isinstance(r_label, int) or not 0 <= r_label < len(rationales)):
                raise _BadRecord("label_out_of_range")
            image = image_dir / _safe_relative(r.get("img_fn"))
            if not image.is_file():
                raise _BadRecord("missing_image")
        except _BadRecord as e:
            skips[str(e)] += 1
            continue
        ex = TaskExample(key=str(r["annot_id"]), image=image, text=question, label=label, choices=choices,
                         rationales=rationales, rationale_label=r_label if rationales else -1)
        # derived fields for domain-shift splits: image source (img_fn prefix) and keyword question type
        extra = {"source": r["img_fn"].split("_", 1)[0], "qtype": question.split()[0].lower()}
        _add(out, meta, skips, ex, {**_scalars(r), **extra})
    return _finish("vcr", out, meta, [path], skips)


# File names tried in a task folder, first the world's / our short ones, then the official ones.
_VQA_NAMES = {"questions": ["{s}_questions.json", "v2_OpenEnded_mscoco_{s}2014_questions.json",
                            "vqacp_v2_{s}_questions.json"],
              "annotations": ["{s}_annotations.json", "v2_mscoco_{s}2014_annotations.json",
                              "vqacp_v2_{s}_annotations.json"]}
_DEFAULT_IMAGES = {"vqa": "images", "snli_ve": "images", "vcr": "vcr1images"}


def task_image_dir(kind: str, folder: str | Path, images: str | Path | None = None) -> Path:
    """Where a task's images are: `images` if given, else the folder's default sub-folder for the kind."""
    return Path(images) if images else Path(folder) / _DEFAULT_IMAGES[kind]


def _find(folder: Path, patterns: list[str], split: str) -> Path:
    tried = [folder / p.format(s=split) for p in patterns]
    for p in tried:
        if p.is_file():
            return p
    raise DataError(f"no {split!r} file in {folder}; tried: {', '.join(p.name for p in tried)}")


def open_task(kind: str, folder: str | Path, split: str, images: str | Path | None = None) -> TaskData:
    """One split of a task from its folder, by the world's or the official file names:
    vqa `{split}_questions.json` + `{split}_annotations.json` (or the v2 / VQA-CP names), images `images/`;
    snli_ve `snli_ve_{split}.jsonl`, images `images/`; vcr `{split}.jsonl`, images `vcr1images/`."""
    if kind not in TASKS:
        raise DataError(f"unknown task {kind!r}; choose one of {', '.join(TASKS)}")
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"task folder not found: {folder}")
    image_dir = task_image_dir(kind, folder, images)
    if kind == "vqa":
        return load_vqa(_find(folder, _VQA_NAMES["questions"], split), _find(folder, _VQA_NAMES["annotations"], split),
                        image_dir)
    if kind == "snli_ve":
        return load_snli_ve(_find(folder, ["snli_ve_{s}.jsonl", "{s}.jsonl"], split), image_dir)
    return load_vcr(_find(folder, ["{s}.jsonl"], split), image_dir)
