"""Text-token alignment between a student and a CLIP teacher that tokenize differently (ViLT: BERT WordPiece, CLIP:
BPE), by words: each student token takes the mean of the teacher tokens that cover the same words of the text.

Character spans come from each tokenizer: a fast transformers tokenizer's `offset_mapping`, and for open_clip's
`SimpleTokenizer` the spans of its regex pieces (one piece gives one or more BPE tokens), found in order in the
lowercased text. Words are `\\w+` runs and single punctuation marks; a student token covers the words it overlaps
(a WordPiece `##s` continues its word), and is matched to every teacher token that overlaps those words. Special
tokens (CLS / SEP / SOT / EOT) and padding stay unaligned, so they are never distilled. When a text's teacher spans
cannot be recovered (a tokenizer without offsets, cleaning that changed the characters, a reduction strategy) the
row falls back to the pooled text: every real student token is distilled towards the teacher's pooled text feature
(counted, and noted in the run's manifest).
"""

from __future__ import annotations

import re

import torch

from clipdistill.zoo.base import cap_texts

Span = tuple[int, int] | None
WORD = re.compile(r"\w+|[^\w\s]")


def open_clip_spans(tok, text: str, length: int) -> list[Span] | None:
    """Per teacher position (SOT, BPE tokens, EOT, padding) its character span, as `tok(text, length)` lays the ids
    out; None when the pieces cannot be located in the text or the count disagrees with the tokenizer's."""
    if getattr(tok, "reduction_fn", None) is not None or not hasattr(tok, "bpe"):
        return None
    cleaned = tok.clean_fn(text)
    lower, pos, spans = text.lower(), 0, [None]
    for piece in tok.pat.findall(cleaned):
        at = lower.find(piece, pos)
        if at < 0:
            return None
        n = len(tok.bpe("".join(tok.byte_encoder[b] for b in piece.encode("utf-8"))).split(" "))
        spans += [(at, at + len(piece))] * n
        pos = at + len(piece)
    if len(spans) - 1 != len(tok.encode(text)):
        return None
    spans.append(None)  # EOT
    if len(spans) > length:  # the tokenizer truncates and puts EOT last
        spans = spans[: length - 1] + [None]
    return spans + [None] * (length - len(spans))


def teacher_spans(teacher, texts: list[str], length: int) -> list[list[Span] | None] | None:
    """Spans of the teacher's tokens for each text (None per text that cannot be aligned); None when the teacher's
    tokenizer gives no spans at all."""
    # the prefix the teacher's (capped) tokenizer saw: spans of the kept tokens are the same, and BPE stays bounded
    texts = cap_texts(list(texts), getattr(teacher, "context_length", length))
    fast = getattr(teacher, "_tok", None)  # hf: CLIPModel teachers keep their transformers tokenizer here
    if fast is not None and getattr(fast, "is_fast", False):
        enc = fast(list(texts), padding="max_length", truncation=True, max_length=length, return_offsets_mapping=True)
        out = []
        for ids, offs in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
            special = fast.get_special_tokens_mask(ids, already_has_special_tokens=True)
            out.append([None if sp or s == e else (s, e) for (s, e), sp in zip(offs, special, strict=True)])
        return out
    tok = teacher.tokenizer
    if hasattr(tok, "bpe") and hasattr(tok, "pat"):
        return [open_clip_spans(tok, t, length) for t in texts]
    return None


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def alignment_matrix(text: str, student: list[Span], teacher: list[Span]) -> torch.Tensor:
    """[Ls, Lt]: row j averages the teacher tokens covering the words student token j overlaps (zero rows: none)."""
    words = [(m.start(), m.end()) for m in WORD.finditer(text)]
    a = torch.zeros(len(student), len(teacher))
    for j, span in enumerate(student):
        if span is None:
            continue
        covered = [w for w in words if _overlaps(w, span)]
        if not covered:
            continue
        region = (min(w[0] for w in covered), max(w[1] for w in covered))
        cols = [t for t, ts in enumerate(teacher) if ts is not None and _overlaps(ts, region)]
        if cols:
            a[j, cols] = 1.0 / len(cols)
    return a


def align_batch(texts: list[str], student: list[list[Span]], teacher: list[list[Span] | None] | None,
                teacher_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A [B, Ls, Lt], pooled [B] bool: rows that fall back to the pooled teacher text)."""
    ls = len(student[0]) if student else 0
    a = torch.zeros(len(texts), ls, teacher_length)
    pooled = torch.zeros(len(texts), dtype=torch.bool)
    for i, text in enumerate(texts):
        spans = None if teacher is None else teacher[i]
        if spans is None:
            pooled[i] = True
            continue
        a[i] = alignment_matrix(text, student[i], spans)
        if not a[i].any():
            pooled[i] = True
    return a, pooled
