"""CoSQA dev (CodeXGLUE packaging): does this Python code answer this web query? 604 items.

A two-way choice per item: "correct" (label 1) or "wrong" (label 0). Under the paper protocol
the code is the scored evidence after "<query>? Answered code is correct:" vs "...wrong:", as the
original code did; under lm-eval the answer word " yes" / " no" is scored after query and code.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from codestage.errors import DataError
from codestage.eval.tasks._io import field, iter_json_array
from codestage.eval.tasks.base import ChoiceItem, MultipleChoiceTask, Split

CHOICES = ("correct", "wrong")


class CoSQA(MultipleChoiceTask):
    name: ClassVar[str] = "cosqa"
    domain: ClassVar[str] = "code_reasoning"
    language: ClassVar[str] = "en+code"
    description: ClassVar[str] = "CoSQA dev: is the code a correct answer to the query (two-way choice)"
    folder: ClassVar[str] = "cosqa"
    paper_split: ClassVar[str | None] = "dev"
    paper_n: ClassVar[int | None] = 604

    def files(self) -> list[Path]:
        return [self.root / "cosqa-dev.json"]

    def read(self) -> tuple[Split, list[ChoiceItem]]:
        path = self.root / "cosqa-dev.json"
        self.need(path)
        items = []
        for line, obj in iter_json_array(path):
            loc = f"{path}:{line}"
            query = field(obj, "doc", str, loc)
            code = field(obj, "code", str, loc)
            label = field(obj, "label", int, loc)
            if label not in (0, 1):
                raise DataError(f"{loc}: field 'label' should be 0 or 1, got {label!r}")
            items.append(
                ChoiceItem(
                    doc_id=len(items),
                    question=query.strip(),
                    choices=CHOICES,
                    gold=(0,) if label == 1 else (1,),
                    passage=code,
                    meta={"idx": obj.get("idx"), "line": line},
                )
            )
        if not items:
            raise DataError(f"{path}: no items")
        return Split("dev", path.name), items

    def paper_pair(self, item: ChoiceItem, choice: int) -> tuple[str, str]:
        return f"{item.question}? Answered code is {CHOICES[choice]}:", item.passage or ""

    def lmeval_query(self, item: ChoiceItem) -> str:
        return f"Query: {item.question}\nCode:\n{item.passage}\nDoes the code answer the query?\nAnswer:"

    def lmeval_choices(self, item: ChoiceItem) -> list[str]:
        return ["yes", "no"]
