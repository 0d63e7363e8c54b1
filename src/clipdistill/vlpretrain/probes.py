"""Probes of a pretrained student on held-out pairs: masked-word accuracy per attribute type (each attribute
word of a caption masked alone, every WordPiece of it; right when all are) next to that type's majority share
(the most common masked word's share among the held-out slots: what always answering it scores), the same
accuracy with every caption given another held-out pair's image (the text-only control: what the caption alone
earns this model), the words it answers most, and with training captions the training prior (the type's most
common training word and what always answering it scores on the held-out slots: the best a model ignoring the
image and the caption's other words can expect); and ITM accuracy on the held-out pairs with their own caption,
a one-attribute swap and another held-out caption."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable

import torch

from clipdistill.data import Sample
from clipdistill.data.attributes import AttributeVocab
from clipdistill.vlpretrain.model import ViltPretrainer
from clipdistill.vlpretrain.task import tokenize
from clipdistill.vlpretrain.text import span_positions


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def cloze_items(tokenizer, vocab: AttributeVocab, captions: list[str], max_len: int) -> list[tuple]:
    """(sample index, type, masked word, masked ids, target positions, target ids) for every attribute word of
    every caption that survives truncation."""
    items = []
    for si, cap in enumerate(captions):
        enc = tokenize(tokenizer, [cap], max_len)
        ids, offsets, special = enc.ids[0], enc.offsets[0], enc.special[0]
        for m in vocab.mentions(cap):
            ws, we = m.word_span
            pos = span_positions(offsets, special, m.word_span)
            if not pos:
                continue  # cut off by max_len
            masked = ids.clone()
            masked[pos] = tokenizer.mask_token_id
            items.append((si, m.kind, cap[ws:we].lower(), masked.tolist(), pos, ids[pos]))
    return items


TOP_PREDICTIONS = 5  # the answers listed per type: what a type under its majority answers instead


@torch.no_grad()
def run_probes(model: ViltPretrainer, tokenizer, vocab: AttributeVocab, samples: list[Sample],
               transform: Callable, max_len: int, batch_size: int, device: torch.device, seed: int = 0,
               prior_captions: list[str] | None = None) -> dict:
    """`prior_captions`: the training captions, for each type's training prior (none: not reported)."""
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):  # ViLT draws its patch order: fixed here, training RNG untouched
            torch.manual_seed(seed)
            images = torch.stack([transform(s.image) for s in samples])
            captions = [s.text for s in samples]
            return {"mlm": _mlm(model, tokenizer, vocab, images, captions, max_len, batch_size, device, seed,
                                prior_captions),
                    "itm": _itm(model, tokenizer, vocab, images, captions, max_len, batch_size, device, seed),
                    "samples": len(samples)}
    finally:
        model.train(was_training)


def other_images(n: int, seed: int) -> list[int]:
    """For each of `n` held-out pairs, another pair's image (a random cycle: none keeps its own)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    out = [0] * n
    for i, j in enumerate(order):
        out[j] = order[(i + 1) % n]
    return out


def training_prior(vocab: AttributeVocab, captions: list[str]) -> dict[str, str]:
    """Each type's most common masked word (a phrase's last word) in `captions` (ties: the first in order)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for cap in captions:
        for m in vocab.mentions(cap):
            ws, we = m.word_span
            counts[m.kind][cap[ws:we].lower()] += 1
    return {kind: c.most_common(1)[0][0] for kind, c in counts.items()}


def _predict(model, tokenizer, chunk, images, device) -> torch.Tensor:
    width = max(len(it[3]) for it in chunk)
    ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for r, it in enumerate(chunk):
        ids[r, :len(it[3])] = torch.tensor(it[3])
        attention[r, :len(it[3])] = 1
    hidden, _ = model(ids.to(device), attention.to(device), images.to(device))
    return model.mlm(hidden[:, :width]).argmax(-1).cpu()  # ViLT's hidden states: text tokens first


def _mlm(model, tokenizer, vocab, images, captions, max_len, batch_size, device, seed, prior_captions) -> dict:
    items = cloze_items(tokenizer, vocab, captions, max_len)
    swap = other_images(len(captions), seed)
    right: dict[str, int] = Counter()
    right_other: dict[str, int] = Counter()
    targets: dict[str, Counter] = defaultdict(Counter)
    answers: dict[str, Counter] = defaultdict(Counter)
    for chunk in _batches(items, batch_size):
        pred = _predict(model, tokenizer, chunk, images[[it[0] for it in chunk]], device)
        pred_other = _predict(model, tokenizer, chunk, images[[swap[it[0]] for it in chunk]], device)
        for r, (_, kind, word, _, pos, want) in enumerate(chunk):
            right[kind] += bool(torch.equal(pred[r, pos], want))
            right_other[kind] += bool(torch.equal(pred_other[r, pos], want))
            targets[kind][word] += 1
            answers[kind][tokenizer.decode(pred[r, pos]).replace(" ", "")] += 1
    prior = training_prior(vocab, prior_captions) if prior_captions is not None else {}
    out = {}
    for kind in vocab.attributes:
        n = sum(targets[kind].values())
        if not n:
            out[kind] = {"accuracy": None, "accuracy_other_image": None, "majority_share": None,
                         "majority_word": None, "n": 0, "answers": []}
            continue
        word, top = targets[kind].most_common(1)[0]
        out[kind] = {"accuracy": right[kind] / n, "accuracy_other_image": right_other[kind] / n,
                     "majority_share": top / n, "majority_word": word, "n": n,
                     "answers": [[w, c / n] for w, c in answers[kind].most_common(TOP_PREDICTIONS)]}
        if prior_captions is not None:
            out[kind]["prior_word"] = prior.get(kind)
            out[kind]["prior_share"] = targets[kind][prior[kind]] / n if kind in prior else None
    return out


def _itm(model, tokenizer, vocab, images, captions, max_len, batch_size, device, seed) -> dict:
    """Each held-out image with its caption (label 1), a one-attribute swap of it (0, where the caption names an
    attribute) and another held-out image's different caption (0)."""
    g = torch.Generator().manual_seed(seed)
    rows: list[tuple[int, str, int, str]] = []  # (image, text, label, kind)
    for i, cap in enumerate(captions):
        rows.append((i, cap, 1, "positive"))
        swapped = vocab.swap(cap, g)
        if swapped is not None:
            rows.append((i, swapped, 0, "swap_negative"))
        others = [j for j, c in enumerate(captions) if c != cap]
        if others:
            rows.append((i, captions[others[int(torch.randint(len(others), (1,), generator=g))]], 0, "random_negative"))
    hits: Counter = Counter()
    counts: Counter = Counter()
    for chunk in _batches(rows, batch_size):
        enc = tokenize(tokenizer, [r[1] for r in chunk], max_len).to(device)
        _, pooled = model(enc.ids, enc.attention, images[[r[0] for r in chunk]].to(device))
        pred = model.itm(pooled).argmax(-1).cpu().tolist()
        for (_, _, label, kind), p in zip(chunk, pred, strict=True):
            counts[kind] += 1
            hits[kind] += p == label
    negatives = counts["swap_negative"] + counts["random_negative"]
    pos = counts["positive"]
    # balanced accuracy over positives and each negative kind: 0.5 is chance whatever the mix
    kinds = ("positive", "swap_negative", "random_negative")
    out = {k: {"accuracy": hits[k] / counts[k], "n": counts[k]} for k in kinds if counts[k]}
    if pos and counts["swap_negative"]:
        out["accuracy_vs_swap"] = (hits["positive"] / pos + hits["swap_negative"] / counts["swap_negative"]) / 2
    if pos and counts["random_negative"]:
        out["accuracy_vs_random"] = (hits["positive"] / pos + hits["random_negative"] / counts["random_negative"]) / 2
    out["pairs"] = pos + negatives
    return out
