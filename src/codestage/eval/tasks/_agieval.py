"""AGIEval's JSON-lines packaging (LogiQA, JEC-QA): passage, question, options, label."""

from __future__ import annotations

from pathlib import Path

from codestage.errors import DataError
from codestage.eval.tasks._io import field, iter_jsonl, string_list
from codestage.eval.tasks._options import split_options
from codestage.eval.tasks.base import ChoiceItem


def read_agieval(path: Path, *, multi_answer: bool) -> list[ChoiceItem]:
    """Items in file order. `label` is a letter, or (JEC-QA) a list of letters; gold letters map to
    the option that carries that letter. An empty label list is kept (no gold: never correct)."""
    items = []
    for line, obj in iter_jsonl(path):
        loc = f"{path}:{line}"
        question = field(obj, "question", str, loc)
        passage = field(obj, "passage", (str, type(None)), loc) if "passage" in obj else None
        options = string_list(obj, "options", loc, min_len=2)
        texts, letters = split_options(options)
        label = field(obj, "label", (str, list) if multi_answer else str, loc)
        labels = label if isinstance(label, list) else [label]
        gold = []
        for lab in labels:
            if not isinstance(lab, str) or lab.strip() not in letters:
                raise DataError(f"{loc}: field 'label' has {lab!r}, not one of the option letters {', '.join(letters)}")
            gold.append(letters.index(lab.strip()))
        if not gold and not multi_answer:
            raise DataError(f"{loc}: field 'label' is empty")
        items.append(
            ChoiceItem(
                doc_id=len(items),
                question=question.strip(),
                choices=tuple(texts),
                gold=tuple(sorted(set(gold))),
                passage=passage.strip() if passage else None,
                meta={"line": line},
            )
        )
    if not items:
        raise DataError(f"{path}: no items")
    return items
