"""E-KAR Chinese (analogical reasoning), the Hugging Face dataset jiangjiechen/ekar_chinese.

Upstream splits: train 1155, validation 165, test 335. The paper's analogical percentages are
k/335, the test split (its code reads `test.json`). The first release's test files are blind
(`answerKey` ""); the answers came later, in `test.json`. So the files present decide the split:
  - `test.json` whose records carry answer keys: the test split, the paper's 335;
  - otherwise `validation.json`: the validation split (165), named as such in every result.
Blind data is never scored: files named `*blind*` (`test_blind.json`, `test_easy_blind.json`) are
not read, and a `test.json` whose every answer key is empty is a blind copy, noted and skipped.
A file with some answer keys empty and others set is an error naming the first empty line.
Exemplars for k-shot prompts come from `train.json`.

Records: `id`, `question` ("茶:茶壶:茶杯"), `choices` {`label`: [A..D], `text`: [...]},
`answerKey`, `explanation`, `relation`. Files are JSON lines (a JSON array is accepted too).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from codestage.errors import DataError
from codestage.eval.tasks._io import field, iter_json_records, string_list
from codestage.eval.tasks._prompts import option_lines
from codestage.eval.tasks.base import ChoiceItem, MultipleChoiceTask, Split, TaskDataMissing

FOLDERS = ("ekar_chinese", "ekar")


class BlindFile(DataError):
    """Every record's answer key is empty: a blind copy that can be read but never scored."""


def read_ekar(path: Path) -> list[ChoiceItem]:
    """Every record in file order; BlindFile when no record has an answer key."""
    items, unkeyed = [], []
    for line, obj in iter_json_records(path):
        loc = f"{path}:{line}"
        question = field(obj, "question", str, loc)
        choices = field(obj, "choices", dict, loc)
        labels = string_list(choices, "label", f"{loc}: choices", min_len=2)
        texts = string_list(choices, "text", f"{loc}: choices", min_len=2)
        if len(labels) != len(texts):
            raise DataError(f"{loc}: field 'choices' has {len(labels)} labels but {len(texts)} texts")
        key = field(obj, "answerKey", str, loc) if obj.get("answerKey") is not None else ""
        if not key:
            unkeyed.append(line)
        elif key not in labels:
            raise DataError(f"{loc}: field 'answerKey' is {key!r}, not one of {', '.join(labels)}")
        items.append(
            ChoiceItem(
                doc_id=len(items),
                question=question.strip(),
                choices=tuple(t.strip() for t in texts),
                gold=(labels.index(key),) if key else (),
                meta={"id": obj.get("id"), "line": line},
            )
        )
    if not items:
        raise DataError(f"{path}: no items")
    if len(unkeyed) == len(items):
        raise BlindFile(f"{path}: every record's 'answerKey' is empty (a blind copy of the split, cannot be scored)")
    if unkeyed:
        raise DataError(f"{path}:{unkeyed[0]}: field 'answerKey' missing or empty ({len(unkeyed)} of {len(items)} records)")
    return items


class EkarZh(MultipleChoiceTask):
    name: ClassVar[str] = "ekar_zh"
    domain: ClassVar[str] = "analogical"
    language: ClassVar[str] = "zh"
    description: ClassVar[str] = "E-KAR Chinese analogical reasoning: test with its answers (the paper's 335), else validation"
    folder: ClassVar[str] = "ekar_chinese"
    paper_split: ClassVar[str | None] = "test"
    paper_n: ClassVar[int | None] = 335
    target_delimiter: ClassVar[str] = ""

    def __init__(self, data_dir: Path | None = None) -> None:
        super().__init__(data_dir)
        self.notes: list[str] = []

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
        evaluated = [self.root / self.split.source] if self.split else [self._file("test"), self._file("validation")]
        return [p for p in (*evaluated, self._file("train")) if p is not None]

    def read(self) -> tuple[Split, list[ChoiceItem]]:
        self.notes = []
        test = self._file("test")
        if test is not None:
            try:
                return Split("test", test.name), read_ekar(test)
            except BlindFile:
                self.notes.append(f"{test.name}: every answer key is empty (a blind copy): not scored")
        blind = sorted(p.name for p in self.root.glob("*blind*") if p.is_file())
        if blind:
            self.notes.append(f"{', '.join(blind)}: blind (no answer keys), not scored")
        validation = self._file("validation")
        if validation is None:
            raise TaskDataMissing(
                f"ekar_zh: no E-KAR split with answers in {self.root} (validation.json not found"
                f"{', test.json is blind' if test is not None else ''}); put the files of the Hugging Face dataset "
                "jiangjiechen/ekar_chinese there (test.json with its answers gives the paper's test split)"
            )
        self.notes.append(f"test answers not present: validation evaluated (the paper's analogical numbers are on "
                          f"test, n={self.paper_n})")
        return Split("validation", validation.name), read_ekar(validation)

    def fewshot_pool(self) -> list[ChoiceItem] | None:
        path = self._file("train")
        return read_ekar(path) if path is not None else None

    def paper_pair(self, item: ChoiceItem, choice: int) -> tuple[str, str]:
        # The original code: prompt "根据推理关系:{question}\n可以得到类比推理关系为：", scored span
        # {choice}. Here the candidate itself is the scored span (its perplexity decides).
        return f"根据推理关系:{item.question}\n可以得到类比推理关系为：", item.choices[choice]

    def lmeval_query(self, item: ChoiceItem) -> str:
        return f"找出与“{item.question}”逻辑关系最为相似的一组词。\n{option_lines(item.choices)}\n答案："
