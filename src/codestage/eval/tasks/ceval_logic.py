"""C-Eval `logic` (the paper's logical-reasoning set): logic_val.csv, 22 items; exemplars from logic_dev.csv."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from codestage.errors import DataError
from codestage.eval.tasks._io import iter_csv
from codestage.eval.tasks._prompts import option_lines
from codestage.eval.tasks.base import ChoiceItem, MultipleChoiceTask, Split

_COLUMNS = ("id", "question", "A", "B", "C", "D", "answer")


def read_ceval(path: Path) -> list[ChoiceItem]:
    """One item per CSV row; `answer` must be one of A-D."""
    items = []
    for line, row in iter_csv(path, _COLUMNS):
        answer = row["answer"].strip()
        if answer not in ("A", "B", "C", "D"):
            raise DataError(f"{path}:{line}: field 'answer' should be one of A, B, C, D, got {answer!r}")
        choices = tuple(row[c].strip() for c in "ABCD")
        items.append(
            ChoiceItem(
                doc_id=len(items),
                question=row["question"].strip(),
                choices=choices,
                gold=("ABCD".index(answer),),
                meta={"id": row["id"], "line": line},
            )
        )
    if not items:
        raise DataError(f"{path}: no items")
    return items


class CevalLogic(MultipleChoiceTask):
    name: ClassVar[str] = "ceval_logic"
    domain: ClassVar[str] = "logic"
    language: ClassVar[str] = "zh"
    description: ClassVar[str] = "C-Eval logic subject, validation split (the paper's logic set)"
    folder: ClassVar[str] = "ceval_logic"
    paper_split: ClassVar[str | None] = "validation"
    paper_n: ClassVar[int | None] = 22
    target_delimiter: ClassVar[str] = ""

    def files(self) -> list[Path]:
        return [self.root / "logic_val.csv", self.root / "logic_dev.csv"]

    def read(self) -> tuple[Split, list[ChoiceItem]]:
        # C-Eval's test split (logic_test.csv) has no answer column: validation is the labelled split.
        self.need(self.root / "logic_val.csv")
        return Split("validation", "logic_val.csv"), read_ceval(self.root / "logic_val.csv")

    def fewshot_pool(self) -> list[ChoiceItem] | None:
        dev = self.root / "logic_dev.csv"
        return read_ceval(dev) if dev.is_file() else None

    def paper_pair(self, item: ChoiceItem, choice: int) -> tuple[str, str]:
        # The original code's logic template: "该答案：{choice}，可以回答如下问题：{problem}。"
        return f"该答案：{item.choices[choice]}，可以回答如下问题：", f"{item.question}。"

    def lmeval_query(self, item: ChoiceItem) -> str:
        return f"{item.question}\n{option_lines(item.choices)}\n答案："
