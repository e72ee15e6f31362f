"""ScienceQA, text-only test subset: problems.json (id -> problem) + pid_splits.json.

A text model cannot see images, so the evaluated subset is the test split's problems whose
`image` is null, in pid_splits order. Exemplars come from the text-only train split. When
problems.json is partial (the copy staged here holds problems 1-1773), test ids it lacks are
counted in the task notes, never silently dropped.

Only `question`, `choices`, `answer`, `hint` and `image` are read: the staged copy's `lecture`
and `solution` texts were rewritten (see its SOURCE.md), so no prompt may depend on them. Every
other field of upstream's problems.json is ignored, so the full upstream file works unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from codestage.errors import DataError
from codestage.eval.tasks._io import field, iter_json_object, read_json, string_list
from codestage.eval.tasks._prompts import option_lines
from codestage.eval.tasks.base import ChoiceItem, MultipleChoiceTask, Split


def _problem(pid: str, obj: object, loc: str) -> ChoiceItem | None:
    """The item for one problem, or None when it has an image (reads the five trusted fields only)."""
    if not isinstance(obj, dict):
        raise DataError(f"{loc}: problem {pid} should be a JSON object")
    image = field(obj, "image", (str, type(None)), loc)
    question = field(obj, "question", str, loc)
    choices = string_list(obj, "choices", loc, min_len=2)
    answer = field(obj, "answer", int, loc)
    hint = field(obj, "hint", str, loc) if obj.get("hint") is not None else ""
    if not 0 <= answer < len(choices):
        raise DataError(f"{loc}: field 'answer' of problem {pid} is {answer}, outside its {len(choices)} choices")
    if image:
        return None
    return ChoiceItem(
        doc_id=0,
        question=question.strip(),
        choices=tuple(c.strip() for c in choices),
        gold=(answer,),
        passage=None,
        meta={"pid": pid, "line": int(loc.rsplit(":", 1)[1]), "hint": hint.strip()},
    )


class ScienceQA(MultipleChoiceTask):
    name: ClassVar[str] = "scienceqa"
    domain: ClassVar[str] = "scientific"
    language: ClassVar[str] = "en"
    description: ClassVar[str] = "ScienceQA test split, text-only problems (image is null)"
    folder: ClassVar[str] = "scienceqa"
    paper_split: ClassVar[str | None] = "test"

    def __init__(self, data_dir: Path | None = None) -> None:
        super().__init__(data_dir)
        self.notes: list[str] = []
        self._problems: dict[str, tuple[int, object]] | None = None

    def files(self) -> list[Path]:
        return [self.root / "problems.json", self.root / "pid_splits.json"]

    def _read(self) -> tuple[dict[str, tuple[int, object]], dict]:
        self.need(*self.files())
        if self._problems is None:
            self._problems = {pid: (line, obj) for line, pid, obj in iter_json_object(self.root / "problems.json")}
        splits = read_json(self.root / "pid_splits.json")
        if not isinstance(splits, dict):
            raise DataError(f"{self.root / 'pid_splits.json'}:1: expected an object of split name -> problem ids")
        return self._problems, splits

    def _split(self, name: str) -> tuple[list[ChoiceItem], int, int]:
        """(text-only items, ids absent from problems.json, items with an image) for one split."""
        problems, splits = self._read()
        ids = splits.get(name)
        if not isinstance(ids, list):
            raise DataError(f"{self.root / 'pid_splits.json'}:1: field '{name}' missing or not a list of problem ids")
        items, absent, with_image = [], 0, 0
        for pid in ids:
            if str(pid) not in problems:
                absent += 1
                continue
            line, obj = problems[str(pid)]
            item = _problem(str(pid), obj, f"{self.root / 'problems.json'}:{line}")
            if item is None:
                with_image += 1
                continue
            items.append(ChoiceItem(len(items), item.question, item.choices, item.gold, None, item.meta))
        return items, absent, with_image

    def read(self) -> tuple[Split, list[ChoiceItem]]:
        items, absent, with_image = self._split("test")
        self.notes = [f"test split: {len(items)} text-only problems evaluated, {with_image} with an image excluded"]
        if absent:
            self.notes.append(f"{absent} test ids are not in problems.json (a partial copy): not evaluated")
        if not items:
            raise DataError(f"{self.root / 'problems.json'}: no text-only test problems found")
        return Split("test", "pid_splits.json 'test' ids in problems.json, image null", "text-only"), items

    def fewshot_pool(self) -> list[ChoiceItem] | None:
        items, _, _ = self._split("train")
        return items or None

    def paper_pair(self, item: ChoiceItem, choice: int) -> tuple[str, str]:
        # The original code's template, typo and full-width colons included, was
        # "Lecture:{lecture}\n anwser：{choice} can answer the following question：{question}".
        # `lecture` is not read (see the module docstring); the problem's hint (its context) takes
        # the unscored background's place, as in the lm-eval prompt.
        hint = item.meta.get("hint", "")
        head = f"Context:{hint}\n " if hint else ""
        return f"{head}anwser：{item.choices[choice]} can answer the following question：", item.question

    def lmeval_query(self, item: ChoiceItem) -> str:
        hint = item.meta.get("hint", "")
        context = f"Context: {hint}\n" if hint else ""
        return f"{context}Question: {item.question}\nChoices:\n{option_lines(item.choices)}\nAnswer:"
