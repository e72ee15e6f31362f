"""Option labels as the upstream files write them: "(A)text", "A．text", "A text", or no label.

AGIEval's LogiQA/JEC-QA options carry their letter inside the string, in several styles, and a few
items list them out of order ("(A)", "(C)", "(B)", "(D)"). The gold label names a letter, so we
strip the label and map the gold letter to the position of the option that carries it.
"""

from __future__ import annotations

import re

LETTERS = "ABCDEFGH"
_PAREN = re.compile(r"^\s*[\(（]\s*([A-H])\s*[\)）]\s*")
_PUNCT = re.compile(r"^\s*([A-H])\s*[．.、:：?？。]\s*")
_SPACE = re.compile(r"^\s*([A-H])\s+")


def _label(option: str, position: int) -> tuple[str | None, str]:
    m = _PAREN.match(option) or _PUNCT.match(option)
    if m:
        return m.group(1), option[m.end():]
    m = _SPACE.match(option)
    if m and m.group(1) == LETTERS[position]:
        return m.group(1), option[m.end():]
    return None, option


def split_options(options: list[str]) -> tuple[list[str], list[str]]:
    """(texts without labels, letter per option). Letters fall back to positions when the
    parsed labels are not a permutation of A.. (unlabelled or damaged options)."""
    parsed = [_label(o, i) for i, o in enumerate(options)]
    letters = [p[0] for p in parsed]
    expected = set(LETTERS[: len(options)])
    if set(letters) == expected and len(set(letters)) == len(options):
        return [p[1].strip() for p in parsed], [l for l in letters if l is not None]
    texts = []
    for i, option in enumerate(options):
        m = _PAREN.match(option) or _PUNCT.match(option)
        texts.append(option[m.end():].strip() if m and m.group(1) == LETTERS[i] else option.strip())
    return texts, list(LETTERS[: len(options)])
