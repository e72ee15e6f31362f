"""JEC-QA knowledge-driven questions (AGIEval packaging): the paper's legal set, 1000 items.

520 items have several correct options. Scoring policy: an item is correct iff the set of
predicted options equals the gold set. Every protocol here predicts exactly one option, so only
single-answer items can be answered correctly; chance is 479 x 1/4 / 1000 = 11.98%. (lm-eval's
`multiple_target` rule, "prediction in gold", would give 66.2% chance here.) One upstream item
(line 212) has an empty label list: it is kept and can never be correct.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from codestage.eval.tasks._agieval import read_agieval
from codestage.eval.tasks._prompts import option_lines
from codestage.eval.tasks.base import ChoiceItem, MultipleChoiceTask, Split


class JecQaKd(MultipleChoiceTask):
    name: ClassVar[str] = "jecqa_kd"
    domain: ClassVar[str] = "legal"
    language: ClassVar[str] = "zh"
    description: ClassVar[str] = "JEC-QA knowledge-driven questions (AGIEval packaging; exact-set scoring)"
    folder: ClassVar[str] = "jecqa"
    paper_split: ClassVar[str | None] = "test"
    paper_n: ClassVar[int | None] = 1000
    target_delimiter: ClassVar[str] = ""

    def files(self) -> list[Path]:
        return [self.root / "jec-qa-kd.jsonl"]

    def read(self) -> tuple[Split, list[ChoiceItem]]:
        self.need(self.root / "jec-qa-kd.jsonl")
        return Split("test", "jec-qa-kd.jsonl (AGIEval)"), read_agieval(self.root / "jec-qa-kd.jsonl", multi_answer=True)

    def paper_pair(self, item: ChoiceItem, choice: int) -> tuple[str, str]:
        # The original code's JEC-QA template: "该答案：{choice}，可以回答以下问题：{statement}"
        return f"该答案：{item.choices[choice]}，可以回答以下问题：", item.question

    def lmeval_query(self, item: ChoiceItem) -> str:
        return f"问题：{item.question}\n选项：\n{option_lines(item.choices)}\n答案："
