"""Helpers for td tests: tiny hand-made task sets (coloured squares) and a stand-in training loop."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from PIL import Image

COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}


def write_tasksets(root: Path, n: int = 24, seed: int = 0) -> dict[str, dict[str, Path]]:
    """{kind: {"train": path, "val": path}} for vqa, snli_ve and vcr over n coloured-square images."""
    rng = random.Random(seed)
    names = list(COLORS)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict]] = {"vqa": [], "snli_ve": [], "vcr": []}
    for i in range(n):
        c = names[i % len(names)]
        Image.new("RGB", (32, 32), COLORS[c]).save(root / "img" / f"{i}.png")
        img = f"img/{i}.png"
        rows["vqa"].append({"key": f"q{i}", "image": img, "text": "what color is the square?",
                            "answers": [c] * 8 + [rng.choice(names)] * 2})
        other = rng.choice([x for x in names if x != c])
        label = i % 3
        hyp = {0: f"a {c} square", 1: "a square on a table", 2: f"a {other} square"}[label]
        rows["snli_ve"].append({"key": f"v{i}", "image": img, "text": hyp, "label": label})
        choices = names.copy()
        rng.shuffle(choices)
        rows["vcr"].append({"key": f"r{i}", "image": img, "text": "what color is it?", "choices": choices,
                            "label": choices.index(c), "rationales": [f"because it looks {x}" for x in choices],
                            "rationale_label": choices.index(c)})
    out = {}
    for kind, items in rows.items():
        cut = int(0.75 * n)
        out[kind] = {}
        for split, part in (("train", items[:cut]), ("val", items[cut:])):
            path = root / f"{kind}_{split}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in part))
            out[kind][split] = path
    return out


def stand_in_fit(task, loader_factory, train_cfg, run_dir):
    """Test-only stand-in for `clipdistill.train.fit` (same call shape), used only while the shared loop is
    not in this checkout: Adam over `task.trainable()` for train_cfg["epochs"] epochs."""
    params = [p for m in task.trainable().values() for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=train_cfg["lr"])
    for m in task.trainable().values():
        m.train()
    for epoch in range(train_cfg["epochs"]):
        for batch in loader_factory(epoch):
            loss = task.training_step(batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    return run_dir
