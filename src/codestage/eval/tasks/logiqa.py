"""LogiQA (AGIEval packaging), English and Chinese: the standard logical-reasoning companion set.

The paper's logic number is C-Eval `logic` (22 items); LogiQA's 651 test items give the same
domain a sample large enough for tight intervals.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from codestage.eval.tasks._agieval import read_agieval
from codestage.eval.tasks._prompts import option_lines
from codestage.eval.tasks.base import ChoiceItem, MultipleChoiceTask, Split


class _LogiQA(MultipleChoiceTask):
    domain: ClassVar[str] = "logic"
    folder: ClassVar[str] = "logiqa"
    filename: ClassVar[str]

    def files(self) -> list[Path]:
        return [self.root / self.filename]

    def read(self) -> tuple[Split, list[ChoiceItem]]:
        self.need(self.root / self.filename)
        return Split("test", f"{self.filename} (AGIEval)"), read_agieval(self.root / self.filename, multi_answer=False)


class LogiQAEn(_LogiQA):
    name: ClassVar[str] = "logiqa_en"
    language: ClassVar[str] = "en"
    description: ClassVar[str] = "LogiQA test questions (English, AGIEval packaging)"
    filename: ClassVar[str] = "logiqa-en.jsonl"

    def paper_pair(self, item: ChoiceItem, choice: int) -> tuple[str, str]:
        # The paper's template (Table 1) with the passage as unscored context before it, as
        # ScienceQA's hint is: the question after the candidate is the scored evidence.
        head = f"{item.passage}\n" if item.passage else ""
        return f"{head}The answer: {item.choices[choice]}, can answer the following question: ", item.question

    def lmeval_query(self, item: ChoiceItem) -> str:
        return f"Passage: {item.passage or ''}\nQuestion: {item.question}\nChoices:\n{option_lines(item.choices)}\nAnswer:"


class LogiQAZh(_LogiQA):
    name: ClassVar[str] = "logiqa_zh"
    language: ClassVar[str] = "zh"
    description: ClassVar[str] = "LogiQA test questions (Chinese, AGIEval packaging)"
    filename: ClassVar[str] = "logiqa-zh.jsonl"
    target_delimiter: ClassVar[str] = ""

    def paper_pair(self, item: ChoiceItem, choice: int) -> tuple[str, str]:
        head = f"{item.passage}\n" if item.passage else ""
        return f"{head}该答案：{item.choices[choice]}，可以回答以下问题：", item.question

    def lmeval_query(self, item: ChoiceItem) -> str:
        return f"文章：{item.passage or ''}\n问题：{item.question}\n选项：\n{option_lines(item.choices)}\n答案："
