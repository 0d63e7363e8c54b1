"""Helpers for td tests: the tiny embedded world (real VQA v2 / SNLI-VE / VCR file formats) and a stand-in
training loop."""

from __future__ import annotations

from pathlib import Path

import torch

TINY_STUDENT = {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "heads": 2, "context_length": 16}
TASKS = {"vqa": "tasks/vqa", "snli_ve": "tasks/snli_ve", "vcr": "tasks/vcr"}  # kind -> folder in the world


def build_tiny_world(root: Path) -> Path:
    """`clipdistill world --size tiny` (a few seconds): ~60-135 examples per task split."""
    from clipdistill.world.build import build_world

    build_world(root, "tiny", seed=0)
    return root


def open_examples(world: Path, kind: str, split: str = "train") -> list:
    from clipdistill.data.tasks import open_task

    return open_task(kind, world / TASKS[kind], split).examples


def stand_in_fit(task, loader_factory, train_cfg, run_dir):
    """Test-only stand-in for `clipdistill.train.fit` (same call shape) that keeps td tests fast: Adam over
    `task.trainable()` for train_cfg["epochs"] epochs, no checkpoints or logs."""
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


def build_tiny_vilt(folder: Path, world: Path, seed: int = 0) -> Path:
    """A random transformers ViLT (hidden 32, 2 layers, 32 px images, 8 px patches) saved with `save_pretrained`,
    with a BertTokenizerFast over a tiny WordPiece vocabulary: half the words of the world's task texts whole, the
    rest split into letter pieces (so WordPiece and CLIP's BPE disagree on token boundaries)."""
    import re

    from transformers import BertTokenizerFast, ViltConfig, ViltImageProcessor, ViltModel

    words: set[str] = set()
    for kind in TASKS:
        for ex in open_examples(world, kind):
            words.update(re.findall(r"\w+", ex.text.lower()))
    whole = sorted(words)[::2]
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *whole, *letters, *(f"##{c}" for c in letters),
             *".,?!'-:;()"]
    vocab = list(dict.fromkeys(vocab))
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    cfg = ViltConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, image_size=32, patch_size=8, max_position_embeddings=40)
    torch.manual_seed(seed)
    ViltModel(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    ViltImageProcessor(size={"shortest_edge": 32}, size_divisor=8).save_pretrained(str(folder))
    return folder
