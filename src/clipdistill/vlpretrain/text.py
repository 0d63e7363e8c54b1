"""Caption text for VL pretraining: in-batch mined negatives, a WordPiece vocabulary built from captions, BERT
whole-word masking (80/10/10) and attribute-word masking. Attribute phrases and their one-attribute swaps (ITM
hard negatives) are in `data.attributes`."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from clipdistill.data.attributes import AttributeVocab
from clipdistill.errors import UserError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def most_similar(captions: Sequence[str], i: int) -> int | None:
    """The in-batch caption sharing the most words with caption `i` (Jaccard), other than `i` and its exact
    copies (ties: the first); None when every caption equals it."""
    mine, best, best_score = words(captions[i]), None, -1.0
    for j, c in enumerate(captions):
        if j == i or c == captions[i]:
            continue
        other = words(c)
        score = len(mine & other) / max(1, len(mine | other))
        if score > best_score:
            best, best_score = j, score
    return best


def train_wordpiece_vocab(captions: Iterable[str], vocab_size: int) -> list[str]:
    """A WordPiece vocabulary learnt from `captions`: BERT's normaliser (lower case) and pre-tokeniser split the
    words; the alphabet (first letters, and "##" letters inside words) starts the vocabulary, then the most
    frequent adjacent pair is merged until `vocab_size` (BPE counting, as the `tokenizers` WordPieceTrainer
    does). Ties go to the smallest pair, so the same captions always give the same vocabulary and ids: the
    `tokenizers` trainer breaks ties by hash order, which differs from process to process."""
    from tokenizers import normalizers, pre_tokenizers

    norm, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for c in captions:
        counts.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(c)))
    words = sorted(counts)
    syms = [[w[0], *("##" + ch for ch in w[1:])] for w in words]
    alphabet = sorted({t for s in syms for t in s})
    if vocab_size < len(SPECIAL_TOKENS) + len(alphabet):
        raise UserError(f"tokenizer.vocab_size={vocab_size} cannot hold the captions' {len(alphabet)} characters "
                        f"(with and without ##) and {len(SPECIAL_TOKENS)} special tokens: raise it")
    vocab = [*SPECIAL_TOKENS, *alphabet]
    known = set(vocab)
    pairs: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[int]] = defaultdict(set)

    def count(i: int, sign: int) -> None:
        for p in zip(syms[i], syms[i][1:], strict=False):
            pairs[p] += sign * counts[words[i]]
            if sign > 0:
                where[p].add(i)
            elif pairs[p] <= 0:
                del pairs[p]

    for i in range(len(words)):
        count(i, 1)
    while len(vocab) < vocab_size and pairs:
        a, b = min(pairs, key=lambda p: (-pairs[p], p))
        new = a + b[2:]  # b is never a word's first piece: it carries "##"
        if new not in known:
            vocab.append(new)
            known.add(new)
        for i in sorted(where.pop((a, b))):
            s = syms[i]
            if not any(x == a and y == b for x, y in zip(s, s[1:], strict=False)):
                continue  # an earlier merge in this word took the pair away
            count(i, -1)
            merged, k = [], 0
            while k < len(s):
                if k + 1 < len(s) and s[k] == a and s[k + 1] == b:
                    merged.append(new)
                    k += 2
                else:
                    merged.append(s[k])
                    k += 1
            syms[i] = merged
            count(i, 1)
        pairs.pop((a, b), None)
    return vocab


def build_wordpiece(captions: Iterable[str], vocab_size: int, out_dir: Path):
    """A BERT WordPiece tokenizer (lower-cased, `tokenizers` WordPiece model) on a vocabulary learnt from
    `captions` (`train_wordpiece_vocab`), saved as a `BertTokenizerFast` folder."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    vocab = train_wordpiece_vocab(captions, vocab_size)
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.txt").write_text("".join(f"{w}\n" for w in vocab), encoding="utf-8")
    fast = BertTokenizerFast(tokenizer_object=tok, do_lower_case=True, unk_token="[UNK]", sep_token="[SEP]",
                             pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]")
    fast.save_pretrained(str(out_dir))
    return load_tokenizer(out_dir)


def load_tokenizer(path: Path):
    from transformers import BertTokenizerFast

    path = Path(path)
    if not ((path / "tokenizer.json").is_file() or (path / "vocab.txt").is_file()):
        raise UserError(f"{path}: not a BERT WordPiece tokenizer folder (no tokenizer.json or vocab.txt)")
    tok = BertTokenizerFast.from_pretrained(str(path), local_files_only=True)
    if tok.mask_token_id is None or tok.pad_token_id is None:
        raise UserError(f"{path}: the tokenizer has no [MASK] or [PAD] token; masked language modelling needs both")
    return tok


def word_ids(offsets: torch.Tensor, special: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Word index per token ([B, L], -1 for special tokens and padding) as transformers 5.25's
    `DataCollatorForLanguageModeling._calc_word_ids_and_prob_mask` finds words: a token starts a new word when
    a gap separates it from the previous token or that token is special (so "left," is one word). Returns
    (word ids, first piece of each word)."""
    starts, ends = offsets[..., 0], offsets[..., 1]
    prev_ends = torch.roll(ends, 1, dims=1)
    prev_ends[:, 0] = -1
    prev_special = torch.roll(special, 1, dims=1)
    prev_special[:, 0] = False
    new_word = ~special & ((starts != prev_ends) | prev_special)
    ids = torch.cumsum(new_word.long(), dim=1)
    ids[special] = -1
    return ids, new_word


def whole_word_mask(ids: torch.Tensor, offsets: torch.Tensor, special: torch.Tensor, rate: float, mask_id: int,
                    vocab_size: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-word masked language modelling. Words are chosen as transformers 5.25's
    `DataCollatorForLanguageModeling(whole_word_mask=True)` chooses them: each word with probability `rate`
    (drawn on its first piece), every piece of a chosen word a target. The targets then get BERT's 80/10/10
    (80% [MASK], 10% a random id of the vocabulary, 10% kept), as the `DataCollatorForWholeWordMask` of
    transformers 4.x that ViLT trained with did; 5.25 puts [MASK] on every whole-word target. `special` marks
    special tokens and padding. Returns (masked ids, labels with -100 where nothing is predicted)."""
    wid, first = word_ids(offsets, special)
    drawn = torch.bernoulli(torch.full(ids.shape, rate).masked_fill(~first, 0.0), generator=generator).bool()
    # a token is a target when any token of its word was drawn (word ids made unique across the batch)
    glob = wid + torch.arange(ids.shape[0])[:, None] * (int(wid.max()) + 1)
    chosen = torch.isin(glob, glob[drawn]) & (wid >= 0)
    labels = ids.masked_fill(~chosen, -100)
    out = ids.clone()
    replaced = torch.bernoulli(torch.full(ids.shape, 0.8), generator=generator).bool() & chosen
    out[replaced] = mask_id
    rand = torch.bernoulli(torch.full(ids.shape, 0.5), generator=generator).bool() & chosen & ~replaced
    random_words = torch.randint(vocab_size, ids.shape, dtype=torch.long, generator=generator)
    out[rand] = random_words[rand]
    return out, labels


def span_positions(offsets: torch.Tensor, special: torch.Tensor, span: tuple[int, int]) -> list[int]:
    """The token positions of one tokenized caption that lie inside the character `span` (special tokens and
    empty pieces left out): the WordPieces of one word."""
    ws, we = span
    starts, ends = offsets[:, 0], offsets[:, 1]
    inside = ~special & (starts >= ws) & (ends <= we) & (ends > starts)
    return inside.nonzero().flatten().tolist()


def attribute_mask(masked: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor, offsets: torch.Tensor,
                   special: torch.Tensor, captions: Sequence[str], vocab: AttributeVocab, share: float,
                   mask_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked ids and labels with, in each caption naming an attribute and drawn with probability `share`, one
    of its attribute words (drawn uniformly; the phrase's last word, every piece) also a target, replaced by
    [MASK] as the probes mask it; a word whole-word masking already chose keeps its 80/10/10. Ours, after the
    attribute prediction of ERNIE-ViL's scene-graph prediction, on `attributes` phrases instead of a parsed
    scene graph. Draws come from the global torch stream."""
    masked, labels = masked.clone(), labels.clone()
    drawn = torch.bernoulli(torch.full((len(captions),), share)).bool().tolist()
    for b, cap in enumerate(captions):
        if not drawn[b]:
            continue
        spans = [pos for m in vocab.mentions(cap) if (pos := span_positions(offsets[b], special[b], m.word_span))]
        if not spans:
            continue  # names no attribute, or every one was cut off by max_len
        pos = spans[int(torch.randint(len(spans), (1,)))]
        if (labels[b, pos] != -100).any():
            continue  # already a whole-word target: it keeps its 80/10/10
        labels[b, pos] = ids[b, pos]
        masked[b, pos] = mask_id
    return masked, labels
