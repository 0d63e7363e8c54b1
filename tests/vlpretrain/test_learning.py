"""The objectives learn a task whose answer is in the image: solid-colour images, "a <colour> image" captions.
ITM against one-colour swaps sits at ln 2 for a while, then solves it (the plateau the world runs stay on)."""

from __future__ import annotations

import torch

from clipdistill.data import LoaderBatch, SkipCounter, View
from clipdistill.data.attributes import AttributeVocab
from clipdistill.vlpretrain.config import ObjectivesConfig, StudentArch
from clipdistill.vlpretrain.model import ViltPretrainer, vilt_config
from clipdistill.vlpretrain.task import VLPretrainTask
from clipdistill.vlpretrain.text import build_wordpiece

COLOURS = {"red": (1.0, -1.0, -1.0), "blue": (-1.0, -1.0, 1.0), "green": (-1.0, 1.0, -1.0)}


def test_itm_with_swap_negatives_learns_a_colour_matching_toy(tmp_path):
    torch.manual_seed(0)
    names = list(COLOURS)
    tok = build_wordpiece([f"a {c} image" for c in names], 64, tmp_path / "tok")
    arch = StudentArch(hidden_size=32, num_layers=1, num_heads=2, image_size=16, patch_size=8, dropout=0.0)
    model = ViltPretrainer(vilt_config(arch, tok))
    objectives = ObjectivesConfig.model_validate({"itm": {"negatives": "swap"}, "mlm": {"weight": 0}})
    task = VLPretrainTask(model, tok, objectives, AttributeVocab({"colour": names}), 40)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(260):
        idx = torch.randint(3, (32,)).tolist()
        pixels = torch.stack([torch.tensor(COLOURS[names[i]])[:, None, None].expand(3, 16, 16) for i in idx])
        captions = [f"a {names[i]} image" for i in idx]
        # the loader's batch as vlpretrain reads it: one view, whose token ids the task does not use
        batch = LoaderBatch(keys=[str(j) for j in range(32)], captions=captions, index=torch.arange(32),
                            views=(View(pixels, torch.zeros(32, 1, dtype=torch.long)),), skips=SkipCounter(), items=32)
        out = task.training_step(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["itm"].item())
    assert min(losses[:60]) > 0.6  # the plateau at ln 2
    assert max(losses[-20:]) < 0.05
