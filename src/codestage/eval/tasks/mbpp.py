"""MBPP code generation: the sanitized set (427, the paper's n) and the full test split (11-510).

Files: `mbpp.jsonl` (all 974 problems; fields text, code, task_id, test_setup_code, test_list,
challenge_test_list) and the sanitized set, either as the staged `sanitized-mbpp-427.jsonl`
(text, code, task_id, test_list, test_setup_code) or upstream `sanitized-mbpp.json` (a JSON array
naming the task `prompt` and its imports `test_imports`). Exemplars come from the prompt split
(task ids 1-10), never the item itself.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import ClassVar

from codestage.errors import DataError
from codestage.eval.tasks._io import field, iter_json_records, string_list
from codestage.eval.tasks.base import GenerationItem, GenerationTask, Protocol, Split

PROMPT_IDS = range(1, 11)
TEST_IDS = range(11, 511)
SANITIZED_FILES = ("sanitized-mbpp-427.jsonl", "sanitized-mbpp.json")
# Modules the sanitized tests call by name (upstream lists them in `test_imports`).
_TEST_MODULES = ("math", "re", "collections", "heapq", "itertools", "functools", "operator", "string", "cmath", "sys")
_MODULE_USE = re.compile(r"\b(" + "|".join(_TEST_MODULES) + r")\.")
_ENTRY = re.compile(r"assert\s+(?:not\s+)?\(?\s*(?:set\(|math\.isclose\(|abs\()?\s*([A-Za-z_]\w*)\s*\(")


def read_mbpp(path: Path) -> list[GenerationItem]:
    """Every problem in the file, in file order, with its task id in `meta`."""
    items = []
    for line, obj in iter_json_records(path):
        loc = f"{path}:{line}"
        text_key = "text" if isinstance(obj, dict) and "text" in obj else "prompt"
        text = field(obj, text_key, str, loc)
        code = field(obj, "code", str, loc)
        task_id = field(obj, "task_id", int, loc)
        tests = string_list(obj, "test_list", loc)
        if "test_setup_code" in obj:
            setup = field(obj, "test_setup_code", str, loc)
        else:
            setup = "\n".join(string_list(obj, "test_imports", loc, min_len=0)) if "test_imports" in obj else ""
        m = _ENTRY.search(tests[0])
        items.append(
            GenerationItem(
                doc_id=len(items),
                prompt=text.strip(),
                reference=code,
                tests=tuple(tests),
                test_setup=setup,
                entry_point=m.group(1) if m else None,
                meta={"task_id": task_id, "line": line},
            )
        )
    if not items:
        raise DataError(f"{path}: no items")
    return items


class _Mbpp(GenerationTask):
    domain: ClassVar[str] = "code_generation"
    language: ClassVar[str] = "en+code"
    folder: ClassVar[str] = "mbpp"

    def _full(self) -> list[GenerationItem]:
        self.need(self.root / "mbpp.jsonl")
        return read_mbpp(self.root / "mbpp.jsonl")

    def fewshot_pool(self) -> list[GenerationItem] | None:
        source = self.root / "mbpp.jsonl"
        if not source.is_file():
            return None
        return [it for it in read_mbpp(source) if it.meta["task_id"] in PROMPT_IDS]

    def prompt(self, item: GenerationItem, protocol: Protocol) -> str:
        if protocol == "paper":
            return f"{item.prompt}\n Code:\n"  # the paper's Table 1 template
        tests = "\n".join(item.tests)
        return (
            f"You are an expert Python programmer, and here is your task: {item.prompt} "
            f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n"
        )

    def target(self, item: GenerationItem, protocol: Protocol) -> str:
        return item.reference if protocol == "paper" else f"{item.reference}\n[DONE]"

    def stop(self, protocol: Protocol) -> list[str]:
        if protocol == "paper":
            return ["\n\n\n", "\nassert ", "\nif __name__", "\nprint(", "\n```"]
        return ["[DONE]"]


class Mbpp(_Mbpp):
    name: ClassVar[str] = "mbpp"
    description: ClassVar[str] = "MBPP full, standard test split (task ids 11-510)"

    def files(self) -> list[Path]:
        return [self.root / "mbpp.jsonl"]

    def read(self) -> tuple[Split, list[GenerationItem]]:
        items = [it for it in self._full() if it.meta["task_id"] in TEST_IDS]
        return Split("test", "mbpp.jsonl, task ids 11-510"), [GenerationItem(i, it.prompt, it.reference, it.tests, it.test_setup, it.entry_point, it.meta) for i, it in enumerate(items)]


def restore_test_imports(items: list[GenerationItem]) -> tuple[list[GenerationItem], dict[str, list[int]]]:
    """Reformatted copies of sanitized MBPP (the staged `sanitized-mbpp-427.jsonl`) dropped the
    upstream `test_imports`, so e.g. `assert math.isclose(...)` fails even for the reference. Add
    `import M` for each standard module a test calls as `M.` and nothing imports; return the items
    and {module: [task ids]} so the repair is reported, never silent."""
    restored: dict[str, list[int]] = {}
    out = []
    for it in items:
        code = "\n".join(it.tests)
        missing = sorted({m for m in _MODULE_USE.findall(code)
                          if not re.search(rf"\bimport\s+{m}\b|\bfrom\s+{m}\s+import", it.test_setup + "\n" + code)})
        for m in missing:
            restored.setdefault(m, []).append(it.meta["task_id"])
        setup = "\n".join([*(f"import {m}" for m in missing), it.test_setup]).strip("\n")
        out.append(dataclasses.replace(it, test_setup=setup) if missing else it)
    return out, restored


class MbppSanitized(_Mbpp):
    name: ClassVar[str] = "mbpp_sanitized"
    description: ClassVar[str] = "Sanitized MBPP, all 427 problems (the paper's set)"
    paper_split: ClassVar[str | None] = "all sanitized"
    paper_n: ClassVar[int | None] = 427

    def _path(self) -> Path:
        for name in SANITIZED_FILES:
            if (self.root / name).is_file():
                return self.root / name
        return self.root / SANITIZED_FILES[0]

    def files(self) -> list[Path]:
        return [self._path(), self.root / "mbpp.jsonl"]

    def read(self) -> tuple[Split, list[GenerationItem]]:
        path = self._path()
        self.need(path)
        items = read_mbpp(path)
        self.notes: list[str] = []
        if path.suffix == ".jsonl":  # the reformatted copy without `test_imports`
            items, restored = restore_test_imports(items)
            self.notes = [f"test imports restored (lost in this copy of the file): import {m} for task ids "
                          f"{', '.join(map(str, ids))}" for m, ids in restored.items()]
        return Split("all sanitized", path.name), items
