"""E-KAR Chinese (analogical reasoning), the Hugging Face dataset jiangjiechen/ekar_chinese.

Upstream splits: train 1155, validation 165, test 335. The paper's analogical percentages are
k/335 and its code reads `test.json`, so the evaluated split is test (answer keys were released
upstream in 2023; an older blind copy without `answerKey` is rejected with that reason).
Records: `id`, `question` ("茶:茶壶:茶杯"), `choices` {`label`: [A..D], `text`: [...]},
`answerKey`, `explanation`, `relation`. Files are JSON lines (a JSON array is accepted too).
The data is not staged here: without the files `load` raises TaskDataMissing and the result
cell is null with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from codestage.errors import DataError
from codestage.eval.tasks._io import field, iter_json_records, string_list
from codestage.eval.tasks._prompts import option_lines
from codestage.eval.tasks.base import ChoiceItem, MultipleChoiceTask, TaskDataMissing

FOLDERS = ("ekar_chinese", "ekar")


def read_ekar(path: Path) -> list[ChoiceItem]:
    items = []
    for line, obj in iter_json_records(path):
        loc = f"{path}:{line}"
        question = field(obj, "question", str, loc)
        choices = field(obj, "choices", dict, loc)
        labels = string_list(choices, "label", f"{loc}: choices", min_len=2)
        texts = string_list(choices, "text", f"{loc}: choices", min_len=2)
        if len(labels) != len(texts):
            raise DataError(f"{loc}: field 'choices' has {len(labels)} labels but {len(texts)} texts")
        key = obj.get("answerKey") if isinstance(obj, dict) else None
        if not key:
            raise DataError(
                f"{loc}: field 'answerKey' missing or empty (a blind test copy? answer keys are in "
                "jiangjiechen/ekar_chinese since the commit 'releasing answers on the test set')"
            )
        if key not in labels:
            raise DataError(f"{loc}: field 'answerKey' is {key!r}, not one of {', '.join(labels)}")
        items.append(
            ChoiceItem(
                doc_id=len(items),
                question=question.strip(),
                choices=tuple(t.strip() for t in texts),
                gold=(labels.index(key),),
                meta={"id": obj.get("id"), "line": line},
            )
        )
    if not items:
        raise DataError(f"{path}: no items")
    return items


class EkarZh(MultipleChoiceTask):
    name: ClassVar[str] = "ekar_zh"
    domain: ClassVar[str] = "analogical"
    language: ClassVar[str] = "zh"
    description: ClassVar[str] = "E-KAR Chinese analogical reasoning, test split (the paper's 335)"
    folder: ClassVar[str] = "ekar_chinese"
    split: ClassVar[str] = "test (test.json)"
    paper_n: ClassVar[int | None] = 335
    target_delimiter: ClassVar[str] = ""

    @property
    def root(self) -> Path:
        base = super().root.parent
        for name in FOLDERS:
            if (base / name).is_dir():
                return base / name
        return base / FOLDERS[0]

    def _file(self, split: str) -> Path | None:
        for suffix in (".json", ".jsonl"):
            if (self.root / f"{split}{suffix}").is_file():
                return self.root / f"{split}{suffix}"
        return None

    def files(self) -> list[Path]:
        return [p for p in (self._file("test"), self._file("train")) if p is not None]

    def load(self) -> list[ChoiceItem]:
        path = self._file("test")
        if path is None:
            raise TaskDataMissing(
                f"ekar_zh: E-KAR Chinese is not present ({self.root}/test.json not found); put the files of "
                "the Hugging Face dataset jiangjiechen/ekar_chinese in <data_dir>/ekar_chinese/"
            )
        return read_ekar(path)

    def fewshot_pool(self) -> list[ChoiceItem] | None:
        path = self._file("train")
        return read_ekar(path) if path is not None else None

    def paper_pair(self, item: ChoiceItem, choice: int) -> tuple[str, str]:
        # The original code: prompt "根据推理关系:{question}\n可以得到类比推理关系为：", scored span
        # {choice}. Here the candidate itself is the scored span (its perplexity decides).
        return f"根据推理关系:{item.question}\n可以得到类比推理关系为：", item.choices[choice]

    def lmeval_query(self, item: ChoiceItem) -> str:
        return f"找出与“{item.question}”逻辑关系最为相似的一组词。\n{option_lines(item.choices)}\n答案："
