"""CLIP-TD with the teacher's image signals read from a feature store (`embed --tokens --data images:DIR`)."""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from td_helpers import TASKS, TINY_STUDENT, open_examples, stand_in_fit

from clipdistill.errors import DataError, ManifestMismatch, UserError
from clipdistill.features.embed import EmbedOptions, embed_features
from clipdistill.td.cached import CachedImageTeacher
from clipdistill.td.heads import build_answer_vocab
from clipdistill.td.runner import FinetuneConfig, run_finetune
from clipdistill.td.student import VLStudent, VLStudentConfig
from clipdistill.td.task import CandidateMemo, Collator, TDConfig, TDTask
from clipdistill.zoo import load_model

ARCH = "cd-student-xs-32"


@pytest.fixture(scope="module")
def saved_teacher(tmp_path_factory):
    """A teacher SPEC with fixed weights (a random-init SPEC would differ between embed and fine-tune)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in load_model(f"open_clip:{ARCH}").inner.state_dict().items()}, str(path))
    return f"open_clip:{ARCH}@{path}"


@pytest.fixture(scope="module")
def store(world, saved_teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("feats") / "vqa_images"
    embed_features(EmbedOptions(teacher=saved_teacher, data=f"images:{world / TASKS['vqa'] / 'images'}",
                                tokens=True, shard_size=40, device="cpu"), out)
    return out


def test_stored_image_signals_match_the_online_teacher(world, saved_teacher, store):
    teacher = load_model(saved_teacher)
    exs = open_examples(world, "vqa")[:6]
    cached = CachedImageTeacher(store, teacher, world / TASKS["vqa"] / "images")
    pooled, patches = cached.signals([ex.image for ex in exs])
    images = torch.stack([teacher.eval_transform(ex.load_image()) for ex in exs])
    with torch.no_grad():
        ref_pooled, ref_patches = teacher.encode_image_tokens(images)
    assert patches.shape == ref_patches.shape and patches.shape[1] > 1
    assert torch.allclose(pooled, F.normalize(ref_pooled, dim=-1), atol=2e-3)  # float16 rounding
    assert torch.allclose(patches, F.normalize(ref_patches, dim=-1), atol=2e-3)

    # the CLIP-TD objective on one batch: the same terms whether the image half is read or computed
    vocab = build_answer_vocab([e.answers for e in open_examples(world, "vqa")], 10)
    torch.manual_seed(0)
    td = TDConfig(method="clip_td", pooled_weight=0.5, weights={"beta": 1.0})  # beta 1: a random teacher's
    task = TDTask("vqa", VLStudent(VLStudentConfig(**TINY_STUDENT)), td, teacher, vocab)  # wrong items count too
    online = task.training_step(Collator("vqa", task.student, teacher, vocab)(exs))
    read = task.training_step(Collator("vqa", task.student, teacher, vocab, cached=cached)(exs))
    assert Collator("vqa", task.student, teacher, vocab, cached=cached)(exs).teacher.image is None
    assert online["distill_image"].item() > 0 and online["weight_mean"].item() > 0
    for term in ("distill_image", "distill_text", "distill_pooled", "weight_mean", "task"):
        assert read[term].item() == pytest.approx(online[term].item(), rel=0.02, abs=1e-3), term


def test_finetune_with_a_store_never_runs_the_image_tower(world, saved_teacher, store, tmp_path, monkeypatch):
    from clipdistill.zoo.openclip_backend import OpenClipModel

    def refuse(*a, **k):
        raise AssertionError("the teacher's image tower ran although its features are stored")

    monkeypatch.setattr(OpenClipModel, "encode_image_tokens", refuse)
    task = {"name": "vqa", "kind": "vqa", "folder": TASKS["vqa"], "teacher_features": str(store)}
    cfg = FinetuneConfig(task=task, world=str(world), student=TINY_STUDENT, teacher={"models": [saved_teacher]},
                         td={"method": "clip_td"}, fraction=0.5, batch_size=16)
    metrics = run_finetune(cfg, tmp_path / "run", trainer=stand_in_fit, train_config={"epochs": 1, "lr": 1e-3},
                           log=lambda s: None)
    assert 0 <= metrics["val"]["accuracy"] <= 100


def test_store_of_other_images_weights_or_without_tokens_is_refused(world, saved_teacher, store, tmp_path):
    teacher = load_model(saved_teacher)
    other_dir = world / TASKS["snli_ve"] / "images"  # keys are relative paths: SNLI-VE's images are not in it
    snli = open_examples(world, "snli_ve")
    with pytest.raises(DataError, match="not in feature store"):
        CachedImageTeacher(store, teacher, other_dir).check_covers([ex.image for ex in snli])
    plain = tmp_path / "no_tokens"  # a store without --tokens has no patch tokens to read
    embed_features(EmbedOptions(teacher=saved_teacher, data=f"images:{world / TASKS['vqa'] / 'images'}",
                                device="cpu"), plain)
    with pytest.raises(UserError, match="re-embed with --tokens"):
        CachedImageTeacher(plain, teacher, world / TASKS["vqa"] / "images")
    torch.manual_seed(1)
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in load_model(f"open_clip:{ARCH}").inner.state_dict().items()}, str(path))
    retrained = load_model(f"open_clip:{ARCH}@{path}")
    retrained.spec = saved_teacher  # same SPEC string, other weights behind it
    with pytest.raises(ManifestMismatch, match="weights"):
        CachedImageTeacher(store, retrained, world / TASKS["vqa"] / "images")


def test_candidate_memo_encodes_each_text_once_and_evicts_least_recent(teacher):
    calls = []

    class Counting:
        def encode_text(self, ids):
            calls.append(len(ids))
            return teacher.encode_text(ids)

    memo = CandidateMemo(Counting(), capacity=3)
    ids = teacher.tokenizer(["what colour red", "what colour blue", "what colour red", "how many 2"])
    with torch.no_grad():
        reference = teacher.encode_text(ids)
    assert torch.allclose(memo(ids), reference, atol=1e-5) and calls == [3]  # the repeated text encoded once
    assert torch.allclose(memo(ids[[3, 0]]), reference[[3, 0]], atol=1e-5) and calls == [3]  # all memoised
    memo(teacher.tokenizer(["a new one"]))  # 4 texts > capacity 3: the least recently used ("blue") goes
    assert calls == [3, 1] and len(memo.memo) == 3
    memo(ids[[1]])
    assert calls == [3, 1, 1]
