"""Attribute phrases of captions by type (the world's: `world.text.WORLD_ATTRIBUTES`): found by character span,
and swapped one at a time to make a hard negative caption (`vlpretrain`'s ITM, `distill`'s negclip loss)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from clipdistill.errors import UserError


@dataclass(frozen=True)
class Mention:
    """One attribute phrase found in a caption: its type, phrase and character span."""

    kind: str
    phrase: str
    start: int
    end: int

    @property
    def word_span(self) -> tuple[int, int]:
        """Character span of the phrase's last word: what a cloze probe masks ("on the [MASK]")."""
        last = self.phrase.split()[-1]
        return self.end - len(last), self.end


class AttributeVocab:
    """Attribute phrases by type; finds them in captions (whole words, case-insensitive) and swaps one."""

    def __init__(self, attributes: dict[str, Sequence[str]]):
        self.attributes = {k: [p.lower() for p in v] for k, v in attributes.items()}
        bad = {k: v for k, v in self.attributes.items() if len(set(v)) < 2}
        if bad:
            raise UserError(f"each type needs at least 2 different phrases to swap: {bad}")
        owner: dict[str, str] = {}
        for kind, phrases in self.attributes.items():
            for p in phrases:
                if owner.setdefault(p, kind) != kind:
                    raise UserError(f"{p!r} is listed under both {owner[p]!r} and {kind!r}")
        self.kind_of = owner
        # longest first so "on the left" wins over a shorter phrase inside it
        alts = "|".join(re.escape(p) for p in sorted(owner, key=len, reverse=True))
        self._pattern = re.compile(rf"(?<!\w)(?:{alts})(?!\w)", re.IGNORECASE)

    def mentions(self, text: str) -> list[Mention]:
        return [Mention(self.kind_of[m.group(0).lower()], m.group(0).lower(), m.start(), m.end())
                for m in self._pattern.finditer(text)]

    def swap(self, text: str, generator: torch.Generator | None = None) -> str | None:
        """`text` with one attribute phrase (drawn uniformly) replaced by another of its type (drawn uniformly);
        None when the caption names no attribute."""
        found = self.mentions(text)
        if not found:
            return None
        m = found[int(torch.randint(len(found), (1,), generator=generator))]
        others = [p for p in self.attributes[m.kind] if p != m.phrase]
        new = others[int(torch.randint(len(others), (1,), generator=generator))]
        return text[:m.start] + new + text[m.end:]


def checked_attributes(attributes: dict[str, list[str]]) -> dict[str, list[str]]:
    """A config validator's check: the phrases make an `AttributeVocab` (ValueError, which pydantic reports under
    the field's name)."""
    try:
        AttributeVocab(attributes)
    except UserError as e:
        raise ValueError(str(e)) from None
    return attributes
