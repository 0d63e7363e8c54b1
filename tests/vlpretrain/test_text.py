"""Hard negatives (one attribute swapped), in-batch mining, the built WordPiece vocabulary and whole-word
masking (equal to transformers' collator, every piece of a chosen word masked)."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import DataCollatorForLanguageModeling

from clipdistill.data.attributes import AttributeVocab
from clipdistill.errors import UserError
from clipdistill.vlpretrain.task import itm_pairs, tokenize
from clipdistill.vlpretrain.text import (
    attribute_mask,
    build_wordpiece,
    most_similar,
    span_positions,
    whole_word_mask,
    word_ids,
    words,
)
from clipdistill.world.scene import sample_scene
from clipdistill.world.text import WORLD_ATTRIBUTES, caption


def world_captions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [caption(sample_scene(rng, style=rng.choice(["flat", "sketch"])), rng) for _ in range(n)]


def outside(text: str, mentions) -> list[str]:
    """The caption's text between its attribute phrases."""
    parts, at = [], 0
    for m in mentions:
        parts.append(text[at:m.start])
        at = m.end
    return [*parts, text[at:]]


def test_swap_changes_exactly_one_attribute_over_many_world_captions():
    vocab = AttributeVocab(WORLD_ATTRIBUTES)
    g = torch.Generator().manual_seed(0)
    kinds_swapped = set()
    for cap in world_captions(3000):
        before = vocab.mentions(cap)
        assert before, cap  # every world caption names at least a colour and a shape
        neg = vocab.swap(cap, g)
        after = vocab.mentions(neg)
        assert neg != cap
        assert [m.kind for m in after] == [m.kind for m in before], (cap, neg)
        changed = [(a.phrase, b.phrase) for a, b in zip(before, after, strict=True) if a.phrase != b.phrase]
        assert len(changed) == 1, (cap, neg)
        assert outside(neg, after) == outside(cap, before), (cap, neg)  # nothing else in the text moved
        kinds_swapped.add(next(b.kind for a, b in zip(before, after, strict=True) if a.phrase != b.phrase))
    assert kinds_swapped == set(WORLD_ATTRIBUTES)


def test_position_swaps_keep_the_preposition_right():
    vocab = AttributeVocab(WORLD_ATTRIBUTES)
    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        neg = vocab.swap("a red circle on the left", g)
        assert "at the left" not in neg and "on the top" not in neg and "on the bottom" not in neg


def test_no_attribute_no_swap_and_fallback_counted():
    vocab = AttributeVocab(WORLD_ATTRIBUTES)
    assert vocab.swap("a photo of nothing much") is None
    torch.manual_seed(0)
    texts, labels, fallbacks = itm_pairs(["a photo of nothing much", "another photo"] * 8, "swap", 0.5, vocab)
    negatives = int((labels == 0).sum())
    assert negatives > 0 and fallbacks == negatives  # every negative came from the batch instead
    assert all(t != c for t, c, lab in zip(texts, ["a photo of nothing much", "another photo"] * 8, labels.tolist(),
                                             strict=True) if lab == 0)


def test_star_is_not_found_inside_start():
    vocab = AttributeVocab(WORLD_ATTRIBUTES)
    assert [m.phrase for m in vocab.mentions("start a RED star")] == ["red", "star"]


def test_bad_attribute_vocab_is_refused():
    with pytest.raises(UserError, match="at least 2"):
        AttributeVocab({"colour": ["red"]})
    with pytest.raises(UserError, match="both"):
        AttributeVocab({"a": ["red", "blue"], "b": ["red", "green"]})


def test_in_batch_mining_takes_the_closest_different_caption():
    caps = ["a red circle on the left", "a red circle on the left", "a red circle at the top", "a blue star"]
    assert most_similar(caps, 0) == 2  # the exact copy at 1 is skipped
    assert most_similar(["same", "same"], 0) is None


@pytest.fixture(scope="module")
def small_vocab_tokenizer(tmp_path_factory):
    """Few merges: world words split into several WordPieces."""
    return build_wordpiece(world_captions(500), 60, tmp_path_factory.mktemp("tok"))


def test_built_tokenizer_splits_words_and_has_the_special_tokens(small_vocab_tokenizer):
    tok = small_vocab_tokenizer
    assert [tok.convert_ids_to_tokens(i) for i in tok("a hexagon")["input_ids"]][0] == "[CLS]"
    assert tok.pad_token_id == 0 and tok.mask_token_id is not None
    assert len(tok.tokenize("hexagon")) > 1


def test_whole_word_masking_masks_every_piece_of_a_chosen_word(small_vocab_tokenizer):
    tok = small_vocab_tokenizer
    enc = tokenize(tok, world_captions(400, seed=3), 40)
    g = torch.Generator().manual_seed(0)
    masked, labels = whole_word_mask(enc.ids, enc.offsets, enc.special, 0.2, tok.mask_token_id, len(tok), g)
    wid, _ = word_ids(enc.offsets, enc.special)
    multi_piece_words_masked = 0
    for b in range(wid.shape[0]):
        for w in wid[b].unique().tolist():
            if w < 0:
                continue
            at = wid[b] == w
            targeted = labels[b][at] != -100
            assert targeted.all() or not targeted.any(), tok.convert_ids_to_tokens(enc.ids[b][at].tolist())
            multi_piece_words_masked += bool(targeted.all() and at.sum() > 1)
    assert multi_piece_words_masked > 50
    assert (labels[enc.special] == -100).all()  # [CLS], [SEP] and padding are never targets
    targets = labels != -100
    share = targets.sum() / (~enc.special).sum()
    assert 0.15 < share < 0.3  # 20% of words; words have 1-3 pieces
    mask_share = (masked[targets] == tok.mask_token_id).float().mean()
    assert 0.75 < mask_share < 0.85
    assert torch.equal(labels[targets], enc.ids[targets])


def test_attribute_masking_adds_one_whole_attribute_word_per_drawn_caption(small_vocab_tokenizer):
    """share 1: each caption naming an attribute gets exactly one more target, every piece of one attribute word
    (the phrase's last word, as the probes mask it), replaced by [MASK]; ViLT's own targets stay; a caption
    naming none is unchanged. share 0 changes nothing."""
    tok, vocab = small_vocab_tokenizer, AttributeVocab(WORLD_ATTRIBUTES)
    captions = [*world_captions(60, seed=5), "a picture", "an image of nothing much"]
    enc = tokenize(tok, captions, 40)
    base, base_labels = whole_word_mask(enc.ids, enc.offsets, enc.special, 0.15, tok.mask_token_id, len(tok),
                                        torch.Generator().manual_seed(1))
    same = attribute_mask(base, base_labels, enc.ids, enc.offsets, enc.special, captions, vocab, 0.0,
                          tok.mask_token_id)
    assert torch.equal(same[0], base) and torch.equal(same[1], base_labels)
    torch.manual_seed(0)
    masked, labels = attribute_mask(base, base_labels, enc.ids, enc.offsets, enc.special, captions, vocab, 1.0,
                                    tok.mask_token_id)
    old = base_labels != -100
    assert torch.equal(labels[old], base_labels[old]) and torch.equal(masked[old], base[old])
    new = (labels != -100) & ~old
    for b, cap in enumerate(captions):
        spans = [span_positions(enc.offsets[b], enc.special[b], m.word_span) for m in vocab.mentions(cap)]
        added = new[b].nonzero().flatten().tolist()
        if not spans:
            assert not added, cap
            continue
        # the one word drawn may have been a ViLT target already (then nothing is added)
        assert not added or any(set(added) <= set(s) for s in spans), (cap, added)
        hit = [s for s in spans if all(labels[b, p] != -100 for p in s)]
        assert hit, cap
        assert all(masked[b, p] == tok.mask_token_id for p in added)
        assert torch.equal(labels[b, added], enc.ids[b, added])
    assert new.any(dim=1).sum() > 40  # most captions gained a target


def test_whole_word_choice_equals_transformers_collator(small_vocab_tokenizer):
    """Same generator state, same words: transformers 5.25 `DataCollatorForLanguageModeling(whole_word_mask=True)`
    (which then masks every target; ours goes on to BERT's 80/10/10)."""
    tok = small_vocab_tokenizer
    enc = tokenize(tok, world_captions(64, seed=5), 40)
    with pytest.warns(UserWarning, match="Random token replacement"):
        collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.2, whole_word_mask=True)
    collator.generator = torch.Generator().manual_seed(7)
    theirs_ids, theirs_labels = collator.torch_mask_tokens(enc.ids.clone(), special_tokens_mask=enc.special.long(),
                                                           offset_mapping=enc.offsets)
    ours_ids, ours_labels = whole_word_mask(enc.ids, enc.offsets, enc.special, 0.2, tok.mask_token_id,
                                            len(tok), torch.Generator().manual_seed(7))
    assert (ours_labels != -100).sum() > 100
    assert torch.equal(ours_labels, theirs_labels)
    assert torch.equal(theirs_ids == tok.mask_token_id, theirs_labels != -100)


def test_built_vocabulary_is_the_same_in_every_process(tmp_path):
    """The same captions give the same vocabulary and ids whatever the process's hash seed (the `tokenizers`
    trainer breaks merge ties by hash order and did not)."""
    import os
    import subprocess
    import sys

    caps = tmp_path / "caps.txt"
    caps.write_text("\n".join(world_captions(300)))
    code = ("import sys; from clipdistill.vlpretrain.text import train_wordpiece_vocab; "
            "print(' '.join(train_wordpiece_vocab(open(sys.argv[1]).read().splitlines(), 90)))")
    outs = {subprocess.run([sys.executable, "-c", code, str(caps)], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "3")}
    assert len(outs) == 1
    assert len(next(iter(outs)).split()) == 90


def test_image_transform_is_torchvision_resize_centre_crop_then_the_processor():
    """Non-square images: shorter edge to S, centre crop, as the hf:DIR student (td/hf_student.py) reads them."""
    import numpy as np
    from PIL import Image
    from torchvision import transforms as T

    from clipdistill.vlpretrain.model import ImageTransform

    rng = np.random.default_rng(0)
    for w, h in ((64, 64), (90, 50), (41, 77)):
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        ref = T.Compose([T.Resize(32, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(32), T.ToTensor(),
                         T.Normalize((0.5,) * 3, (0.5,) * 3)])(im)
        got = ImageTransform(32, 8)(im)
        assert got.shape == (3, 32, 32)
        assert torch.allclose(got, ref, atol=1e-6)


@pytest.mark.parametrize("mode", ["swap", "in_batch", "random"])
def test_itm_pairs_half_positive_and_negatives_are_other_captions(mode):
    vocab = AttributeVocab(WORLD_ATTRIBUTES)
    caps = world_captions(400, seed=9)
    torch.manual_seed(0)
    texts, labels, fallbacks = itm_pairs(caps, mode, 0.5, vocab)
    assert 0.4 < labels.float().mean() < 0.6
    assert fallbacks == 0
    for cap, text, label in zip(caps, texts, labels.tolist(), strict=True):
        assert (text == cap) == bool(label)
        if mode != "swap" and not label:
            assert text in caps
    if mode == "in_batch":
        negs = [(c, t) for c, t, lab in zip(caps, texts, labels.tolist(), strict=True) if not lab]
        assert all(len(words(c) & words(t)) >= 3 for c, t in negs)  # close captions, not arbitrary ones


def test_config_refuses_a_phrase_in_two_types_before_the_run():
    from clipdistill.config import build_config
    from clipdistill.errors import ConfigError
    from clipdistill.vlpretrain.config import VLPretrainConfig

    with pytest.raises(ConfigError, match=r"attributes: 'red' is listed under both 'colour' and 'tone'"):
        build_config(VLPretrainConfig, {"data": {"source": "world:w"},
                                        "attributes": {"colour": ["red", "blue"], "tone": ["red", "dark"]}}, source="t")
