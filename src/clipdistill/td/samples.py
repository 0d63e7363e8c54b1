"""`td_samples.json` + `td_samples/*.png`: what CLIP-TD distilled on a few training examples, for the report.

For each example: the student's view of the image, the patch tokens and text tokens the selection rule picked, and
the teacher's instance weight, computed as `TDTask.training_step` computes them (same forward, same teacher
signals, same selection and weighting) with the trained student.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from clipdistill.manifest import atomic_write_text
from clipdistill.td.selection import select_tokens
from clipdistill.td.weighting import instance_weights

FILE = "td_samples.json"
VIEW = 128  # px of the saved view: large enough to see the patch grid drawn on it


def _token_text(token_id: int, student=None) -> str:
    hf = getattr(student, "hf_tokenizer", None)  # an hf: ViLT student's own tokenizer (WordPiece)
    if hf is not None:
        return hf.convert_ids_to_tokens(token_id)
    import open_clip

    tok = open_clip.tokenizer._tokenizer  # the tokenizer the student's Collator uses (open_clip.tokenize)
    if token_id == tok.sot_token_id:
        return "<sot>"
    if token_id == tok.eot_token_id:
        return "<eot>"
    return tok.decode([token_id]).strip() or "\u2423"


@torch.no_grad()
def save_td_samples(task, collate, items: list, run_dir: Path, n: int = 4) -> Path | None:
    """Write the samples of the first `n` training items; None (nothing written) when the method distils nothing."""
    if task.teacher is None or not items:
        return None
    import torchvision.transforms as T

    items = items[:n]
    device = next(task.student.parameters()).device
    batch = collate(items).to(device)
    td = task.td
    out = task._forward(batch, need_attention=td.selection == "student_attention")
    # one row per instance, as training_step distils (VCR: the ground-truth candidate's sequence)
    out, ids = task.task_kind.distilled(out, batch), task.task_kind.distilled_ids(batch)
    judged = task._teacher_signals(batch)
    teacher = judged.signals
    w = instance_weights(judged.probs, batch.teacher.labels, td.weights)
    sel_v, sel_t = select_tokens(td.selection, image_valid=torch.ones(out.image_tokens.shape[:2], dtype=torch.bool,
                                                                      device=device),
                                 text_valid=out.text_mask & teacher.mask, image_fraction=td.image_fraction,
                                 text_fraction=td.text_fraction, teacher=teacher, cls_attention=out.cls_attention)
    grid = task.student.grid
    size = grid * math.ceil(VIEW / grid)
    view = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)])
    folder = run_dir / "td_samples"
    folder.mkdir(parents=True, exist_ok=True)
    samples: list[dict[str, Any]] = []
    for i, it in enumerate(items):
        ex = getattr(it, "example", it)
        name = f"{i:02d}.png"
        view(ex.load_image().convert("RGB")).save(folder / name)
        real = out.text_mask[i].nonzero().flatten().tolist()
        samples.append({
            "key": ex.key, "image": f"td_samples/{name}", "task": task.kind,
            "patches": sel_v[i].nonzero().flatten().tolist(),
            "tokens": [_token_text(int(ids[i, j]), task.student) for j in real],
            "selected": [bool(sel_t[i, j]) for j in real],
            "weight": float(w.weight[i]), "teacher_prob": float(w.confidence[i]),
            "teacher_correct": bool(w.teacher_correct[i]),
        })
    path = run_dir / FILE
    atomic_write_text(path, json.dumps({"grid": grid, "selection": td.selection, "image_fraction": td.image_fraction,
                                        "text_fraction": td.text_fraction, "samples": samples}, indent=2))
    return path
