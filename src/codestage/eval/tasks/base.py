"""What a task is: upstream data in, items out, and the prompts each scoring protocol needs.

A task reads its upstream files unchanged (a user's full copy or the bundled slice) and turns
them into items. Multiple-choice items are scored by log-likelihood of (context, continuation)
pairs; generation items by greedy decoding plus a metric. Keeping prompts here and scoring in
`eval/scoring.py` (and the modules it fronts) means a new task is one small module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Sequence

from codestage.domains import DOMAINS

Protocol = Literal["paper", "lm-eval"]


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


@dataclass(frozen=True)
class Split:
    """The upstream split a task evaluates, decided when its data is read (E-KAR's depends on which
    files carry answers), so every number can say which split and how many items it came from.

    `name` is upstream's split name ("test", "validation", "dev"), `subset` a rule applied on top of
    it ("text-only"), `source` the file(s) the items come from.
    """

    name: str
    source: str
    subset: str = ""

    @property
    def label(self) -> str:
        return f"{self.name}, {self.subset}" if self.subset else self.name


def split_note(split: Split, n: int, total: int, paper_split: str | None, paper_n: int | None) -> str:
    """One line naming the evaluated split and n beside the paper's, e.g.
    "validation, n=100 of 165; the paper's test n=335" or "dev, n=604 (the paper's set)"."""
    text = f"{split.label}, n={n}" + (f" of {total}" if n != total else "")
    if paper_split is None:
        return text + " (not in the paper)"
    if split.name == paper_split and total == paper_n:
        return text + " (the paper's set)"
    return text + f"; the paper's {paper_split}" + (f" n={paper_n}" if paper_n is not None else " (its n is not stated)")


class Task(ABC):
    """Base class: subclasses set the class attributes and implement `read` and `files`.

    `folder` is the task's sub-folder of a data root laid out like the upstream releases
    (`bundled("eval")` or a user's full copy such as ../shared/data/eval). `paper_split` and
    `paper_n` are the split the paper scored and its item count (None: not in the paper / not
    stated); `split` is the split actually read, set by `load`. `domain` is one of
    codestage.domains.DOMAINS.
    """

    name: ClassVar[str]
    domain: ClassVar[str]
    kind: ClassVar[Literal["multiple_choice", "generation"]]
    metric: ClassVar[Literal["accuracy", "bleu"]]
    language: ClassVar[str]
    description: ClassVar[str]
    folder: ClassVar[str] = ""
    paper_split: ClassVar[str | None] = None
    paper_n: ClassVar[int | None] = None

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        domain = cls.__dict__.get("domain")
        if domain is not None and domain not in DOMAINS:
            raise TypeError(f"{cls.__name__}.domain: {domain!r} is not a domain ({', '.join(DOMAINS)})")

    def __init__(self, data_dir: Path | None = None) -> None:
        self.data_dir = data_dir
        self.split: Split | None = None

    @property
    def root(self) -> Path:
        from codestage.resources import bundled

        base = Path(self.data_dir) if self.data_dir is not None else bundled("eval")
        return base / self.folder

    def need(self, *paths: Path) -> None:
        """Raise TaskDataMissing (the cell becomes null with this reason) unless every path exists."""
        absent = [str(p) for p in paths if not p.is_file()]
        if absent:
            raise TaskDataMissing(f"{self.name}: {', '.join(absent)} not found")

    def load(self) -> list[Item]:
        """All evaluation items in upstream document order (doc_id = index); afterwards `self.split`
        names the split they came from."""
        self.split, items = self.read()
        return items

    @abstractmethod
    def read(self) -> tuple[Split, list[Item]]:
        """(the split chosen from the data present, its items in upstream order)."""

    def load_items(self, *, lenient: bool = False) -> list[Item]:
        """The evaluated items: `load` with duplicate records refused (naming both lines), or with
        `lenient`, exact duplicates scored once and counted in `notes` (`eval/identity.py`)."""
        from codestage.eval.identity import drop_duplicates

        items, notes = drop_duplicates(self.load(), self.files()[0], lenient=lenient)
        self.notes = [*getattr(self, "notes", []), *notes]
        return items

    @abstractmethod
    def files(self) -> list[Path]:
        """The upstream files `load` reads (hashed into results for traceability)."""

    def fewshot_pool(self) -> list[Item] | None:
        """Exemplars for k-shot prompts, in upstream order; None means the task has no separate
        exemplar split and exemplars are drawn from its evaluation items (never the item itself)."""
        return None

    def chance(self, items: Sequence[Item]) -> float | None:
        """Expected accuracy of a uniform random single choice under the task's scoring policy."""
        return None


class MultipleChoiceTask(Task):
    """A task scored by comparing the log-likelihood of (context, continuation) pairs per choice.

    `paper_pair` is the paper's prompt (the candidate sits in the context, the shared evidence
    after it is scored); `lmeval_query` + `lmeval_choices` are the lm-evaluation-harness
    `multiple_choice` form (question as context, each choice text as the continuation).
    """

    kind: ClassVar[Literal["multiple_choice", "generation"]] = "multiple_choice"
    metric: ClassVar[Literal["accuracy", "bleu"]] = "accuracy"
    target_delimiter: ClassVar[str] = " "

    @abstractmethod
    def paper_pair(self, item: ChoiceItem, choice: int) -> tuple[str, str]:
        """(context containing the candidate, scored span) for one choice under the paper protocol."""

    @abstractmethod
    def lmeval_query(self, item: ChoiceItem) -> str:
        """The lm-eval `doc_to_text`: everything before the choice."""

    def lmeval_choices(self, item: ChoiceItem) -> list[str]:
        """The lm-eval `doc_to_choice`: the continuation text per choice (delimiter excluded)."""
        return list(item.choices)

    def chance(self, items: Sequence[Item]) -> float | None:
        """Mean over items of P(one uniformly random choice is the whole gold set)."""
        if not items:
            return None
        hits = [1.0 / len(it.choices) if len(it.gold) == 1 else 0.0 for it in items if isinstance(it, ChoiceItem)]
        return sum(hits) / len(hits)


class GenerationTask(Task):
    """A task scored on greedy generations: BLEU against the reference, tests executed for pass@k."""

    kind: ClassVar[Literal["multiple_choice", "generation"]] = "generation"
    metric: ClassVar[Literal["accuracy", "bleu"]] = "bleu"

    @abstractmethod
    def prompt(self, item: GenerationItem, protocol: Protocol) -> str:
        """The text the model continues."""

    @abstractmethod
    def target(self, item: GenerationItem, protocol: Protocol) -> str:
        """What an exemplar's answer looks like after its prompt (reference plus any end marker)."""

    @abstractmethod
    def stop(self, protocol: Protocol) -> list[str]:
        """Stop sequences: generation is cut at the first one (and at EOS)."""
