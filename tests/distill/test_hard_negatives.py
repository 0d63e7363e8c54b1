"""`data.hard_negatives: swap` with the negclip loss: each caption's one-attribute swap, drawn from (key, epoch,
seed) alone; the task encodes captions and negatives in one text forward and hands the loss exactly the features
of each; a run on the world trains with them and counts captions that name no attribute."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clipdistill.data import LoaderBatch, SkipCounter, View
from clipdistill.data.attributes import AttributeVocab
from clipdistill.distill.batch import DistillBatch
from clipdistill.distill.config import DistillConfig
from clipdistill.distill.joins import DataJoins
from clipdistill.distill.run import run_distill
from clipdistill.distill.task import DistillTask
from clipdistill.losses import LossInput, LossInputs, build_loss
from clipdistill.world.text import WORLD_ATTRIBUTES
from clipdistill.zoo import load_model

ARCH = "open_clip:cd-student-xs-32"
CAPTIONS = ["a photo of a small red circle on the left", "there is a large blue square at the top in a sketch",
            "a photo of nothing in particular", "a drawing showing a green triangle and a yellow star"]
VOCAB = AttributeVocab(WORLD_ATTRIBUTES)


class _Source:
    skips = SkipCounter()

    def fingerprint(self) -> str:
        return "f"


def joins(seed: int = 0) -> DataJoins:
    cfg = DistillConfig(data={"source": "world:unused", "hard_negatives": "swap"}, loss={"negclip": {}},
                        train={"seed": seed})
    return DataJoins(cfg, _Source())


def loaded(student=None) -> LoaderBatch:
    n = len(CAPTIONS)
    text = student.tokenizer(CAPTIONS) if student else torch.zeros(n, 4, dtype=torch.long)
    return LoaderBatch([f"k{i}" for i in range(n)], CAPTIONS, torch.arange(n),
                       (View(torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)), text),),
                       SkipCounter(), n)


def test_each_negative_swaps_one_attribute_and_is_drawn_from_key_epoch_seed():
    j = joins()
    before = j.skips["no_hard_negative"]
    negatives = j.batch(loaded(), epoch=0).negatives
    assert negatives[2] is None and j.skips["no_hard_negative"] == before + 1  # names no attribute: counted
    for caption, negative in zip(CAPTIONS, negatives, strict=True):
        if negative is None:
            continue
        pos, neg = VOCAB.mentions(caption), VOCAB.mentions(negative)
        assert [m.kind for m in pos] == [m.kind for m in neg]
        changed = [(a.phrase, b.phrase) for a, b in zip(pos, neg, strict=True) if a.phrase != b.phrase]
        assert len(changed) == 1, (caption, negative)
        # everything outside the swapped phrase is the caption's own text
        assert negative.replace(changed[0][1], changed[0][0], 1) == caption
    # the same (key, epoch, seed) gives the same negative whatever the batch (a resume, another rank's split)
    assert j.hard_negative("k0", CAPTIONS[0], 0) == negatives[0]
    draws = {j.hard_negative("k1", CAPTIONS[1], e) for e in range(8)}
    assert len(draws) > 1  # a new epoch draws again
    assert {joins(seed=1).hard_negative("k1", CAPTIONS[1], e) for e in range(8)} != draws


def test_task_encodes_captions_and_negatives_in_one_forward():
    torch.manual_seed(0)
    student = load_model(ARCH).eval()  # no dropout: the two computations below must see the same model
    loss = build_loss({"negclip": {}}, student.embed_dim, None, provided={LossInput.HARD_NEGATIVES})
    batch = joins().batch(loaded(student), epoch=0)
    calls, encode = [], student.encode_text
    student.encode_text = lambda ids, normalize=False: calls.append(ids.shape[0]) or encode(ids, normalize)
    got = DistillTask(student, loss).training_step(batch)
    # captions and their negatives in one forward; the caption naming no attribute has none to encode
    assert calls == [2 * len(CAPTIONS) - 1] and batch.negatives[2] is None
    # the same loss from separately encoded captions and negatives (the missing negative: the empty caption, masked)
    negatives = student.tokenizer([n or "" for n in batch.negatives])
    inputs = LossInputs(student.encode_image(batch.student.image), encode(batch.student.text), student.logit_scale,
                        negative_text_features=encode(negatives),
                        negative_mask=torch.tensor([n is not None for n in batch.negatives]))
    torch.testing.assert_close(got["negclip"], loss(inputs)["negclip"], rtol=1e-5, atol=1e-5)


def test_a_batch_without_any_negative_trains_as_clip():
    """No caption names an attribute: nothing extra is encoded and the loss is the CLIP loss."""
    from dataclasses import replace

    torch.manual_seed(0)
    student = load_model(ARCH).eval()
    batch = replace(joins().batch(loaded(student), epoch=0), negatives=[None] * len(CAPTIONS))
    calls, encode = [], student.encode_text
    student.encode_text = lambda ids, normalize=False: calls.append(ids.shape[0]) or encode(ids, normalize)
    got = DistillTask(student, build_loss({"negclip": {}}, student.embed_dim, None,
                                          provided={LossInput.HARD_NEGATIVES})).training_step(batch)
    clip = DistillTask(student, build_loss({"clip": {}}, student.embed_dim, None)).training_step(batch)
    assert calls == [len(CAPTIONS), len(CAPTIONS)]
    torch.testing.assert_close(got["negclip"], clip["clip"])


def test_negclip_without_negatives_in_the_batch_is_a_clear_error():
    from clipdistill.errors import UserError

    student = load_model(ARCH)
    task = DistillTask(student, build_loss({"negclip": {}}, student.embed_dim, None))
    with pytest.raises(UserError, match="data.hard_negatives=swap"):
        task.training_step(DistillBatch.from_loader(loaded(student)))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from clipdistill.world.build import build_world

    root = tmp_path_factory.mktemp("world") / "tiny"
    build_world(root, "tiny", seed=0)
    return root


def test_negclip_run_on_the_world(world, tmp_path):
    cfg = DistillConfig(student={"model": ARCH}, data={"source": f"world:{world}", "batch_size": 16,
                                                       "hard_negatives": "swap"},
                        loss={"negclip": {}}, train={"epochs": 1, "steps": 3, "device": "cpu", "progress": False,
                                                     "tensorboard": False, "log_every": 1})
    run = run_distill(cfg, tmp_path / "run")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    values = [r["negclip"] for r in rows if "negclip" in r]
    assert len(values) == 3 and all(v > 0 for v in values)
    manifest = json.loads((run / "manifest.json").read_text())
    # every world caption names an attribute, so none goes without a negative
    assert manifest["skipped_reads"].get("no_hard_negative", 0) == 0


def test_negclip_run_killed_then_resumed_equals_uninterrupted(world, tmp_path, monkeypatch):
    """The negatives are drawn from (key, epoch, seed) alone, so a resumed run sees the ones it would have."""
    cfg = DistillConfig(student={"model": ARCH}, data={"source": f"world:{world}", "batch_size": 16,
                                                       "hard_negatives": "swap"},
                        loss={"negclip": {}}, train={"epochs": 2, "steps": 6, "save_every": 2, "device": "cpu",
                                                     "progress": False, "tensorboard": False, "log_every": 1})
    ref = run_distill(cfg, tmp_path / "ref")
    real, calls = DistillTask.training_step, []

    def dies_in_step_3(self, batch):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(DistillTask, "training_step", dies_in_step_3)
    with pytest.raises(KeyboardInterrupt):
        run_distill(cfg, tmp_path / "run")
    monkeypatch.setattr(DistillTask, "training_step", real)
    run = run_distill(cfg, tmp_path / "run", resume="latest")
    assert (run / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()
