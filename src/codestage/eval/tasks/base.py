"""What a task is: upstream data in, items out, and the prompts each scoring protocol needs.

A task reads its upstream files unchanged (a user's full copy or the bundled slice) and turns
them into items. Multiple-choice items are scored by log-likelihood of (context, continuation)
pairs; generation items by greedy decoding plus a metric. Keeping prompts here and scoring in
`eval/scoring.py` means a new task is one small module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

Protocol = Literal["paper", "lm-eval"]
DOMAINS = ("logic", "legal", "scientific", "analogical", "code_reasoning", "code_generation")


@dataclass(frozen=True)
class ChoiceItem:
    """A multiple-choice item. `gold` holds every correct index (JEC-QA has multi-answer items)."""

    doc_id: int
    question: str
    choices: tuple[str, ...]
    gold: tuple[int, ...]
    passage: str | None = None
    meta: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class GenerationItem:
    """A code-generation item: a prompt, a reference solution and executable tests."""

    doc_id: int
    prompt: str
    reference: str
    tests: tuple[str, ...]
    test_setup: str = ""
    entry_point: str | None = None
    meta: dict = field(default_factory=dict, compare=False)


Item = ChoiceItem | GenerationItem


class TaskDataMissing(Exception):
    """The task's upstream files are not present; the report shows the cell as missing, with why."""


class Task(ABC):
    """Base class: subclasses set the class attributes and implement `load` and `files`."""

    name: ClassVar[str]
    domain: ClassVar[str]
    kind: ClassVar[Literal["multiple_choice", "generation"]]
    metric: ClassVar[Literal["accuracy", "bleu"]]
    language: ClassVar[str]
    description: ClassVar[str]

    def __init__(self, data_dir: Path | None = None) -> None:
        self.data_dir = data_dir

    @abstractmethod
    def load(self) -> list[Item]:
        """All evaluation items in upstream document order (doc_id = index)."""

    @abstractmethod
    def files(self) -> list[Path]:
        """The upstream files `load` reads (hashed into results for traceability)."""
