"""What flows between the stages, typed, each with one JSON form (`to_json` / `from_json` / `read`).

    TaskResult     one task's score on one model: metric, value, n, 95% interval, and what made it
    EvalResults    a model's evaluation: eval/<RUN>/results.json (`codestage eval`, the study's eval step)
    HeldoutLoss    a model's loss on held-out documents: eval/<RUN>/heldout.json holds one per source
    RunResults     one run of a study as results.json states it: stage, a cell per domain, held-out loss
    StudyResults   the study's results.json: {"runs": {RUN: RunResults}, "config", "paper"}
    Comparison     `codestage compare`: per task A - B with its paired 95% interval and p-value

The JSON form is the documented file format, fields in the order the files have always had. A
field is written when it was given, even as null, and left out when it was not (a missing task has
no `chance`, an evaluated code task has `"chance": null`), so files round-trip unchanged; unknown
fields are kept, so a file written by a newer version reads and writes back whole.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Mapping, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from codestage.errors import DataError

R = TypeVar("R", bound="Record")


class Record(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_json(self) -> dict[str, Any]:
        """The plain-data form written to files (fields given, under their file names)."""
        return self.model_dump(by_alias=True, exclude_unset=True)

    @classmethod
    def from_json(cls: type[R], data: Mapping[str, Any], *, origin: str = "") -> R:
        """Read the plain-data form; a malformed one is a DataError naming `origin` and the field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            raise DataError(f"{origin or cls.__name__}: {where}: {err['msg']}") from None

    @classmethod
    def read(cls: type[R], path: Path | str) -> R:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read {cls.__name__} ({exc})") from None
        return cls.from_json(data, origin=str(path))


class Interval(Record):
    """A score with its 95% bootstrap interval."""

    value: float | None = None
    ci95: list[float] | None = None


class Continuous(Interval):
    """The mean of a per-item continuous score (log-probability, margin) over `n` items, in `unit`."""

    n: int | None = None
    unit: str | None = None


class Subsample(Record):
    """A seeded random `n` of the task's `of` items."""

    n: int
    of: int
    seed: int


class TaskResult(Record):
    """One task on one model. `value` is null (with `missing` saying why) when the data is absent
    (n = 0), or for a code task evaluated without generation (n > 0: only `bits_per_byte` was scored).
    Fields are declared in the order results.json has always listed a domain's cell."""

    task: str
    domain: str | None = None  # absent in a study's cells, which are keyed by domain
    metric: str
    value: float | None = None
    n: int = 0
    ci95: list[float] | None = None
    missing: str | None = None
    subsample: Subsample | None = None
    chance: float | None = None
    protocol: str | None = None
    shots: int | None = None
    # the split read (decided by the data present), its size, and the paper's
    split: str | None = None  # its label, e.g. "validation" or "test, text-only"
    split_source: str | None = None  # the file(s) the items came from
    split_n: int | None = None  # items in the split before any limit or subsample
    paper_split: str | None = None  # the split the paper scored (null: not in the paper)
    paper_n: int | None = None
    split_note: str | None = None  # one line: "validation, n=100 of 165; the paper's test n=335"
    # multiple choice: signals that move before accuracy does
    gold_logprob: Continuous | None = None
    margin: Continuous | None = None
    acc_norm: Interval | None = None
    # code generation
    bleu_tokenization: str | None = None
    check_references: bool | None = None
    pass_at_1: Interval | None = Field(None, alias="pass@1")
    pass_at_k: dict[str, Any] | None = Field(None, alias="pass@k")
    exec_status: dict[str, int] | None = None
    sandbox: dict[str, Any] | None = None
    # every task: bits per byte of the gold answer, sum of bits / sum of bytes over `n` items (eval/task_loss.py)
    bits_per_byte: Continuous | None = None
    # how much of it, from which files, and what to know about it
    limit: int | None = None
    files: dict[str, str] | None = None
    data_sha256: str | None = None
    notes: list[str] | None = None
    seconds: float | None = None

    CELL_FIELDS: ClassVar[tuple[str, ...]] = ("task", "metric", "value", "n", "ci95", "missing", "subsample", "chance", "protocol", "shots",
                   "split", "split_n", "paper_split", "paper_n", "split_note", "gold_logprob", "margin", "pass@1", "bits_per_byte")

    def cell(self) -> "TaskResult":
        """What a study's results.json keeps of it: the score and what it needs to be read."""
        data = self.to_json()
        return TaskResult.from_json({k: data[k] for k in self.CELL_FIELDS if k in data})


class EvalResults(Record):
    """A model's evaluation (eval/<RUN>/results.json): the settings, then one result per task name."""

    model: str | None = None
    protocol: str
    shots: int
    seed: int
    data_dir: str
    lenient: bool | None = None  # duplicate records scored once (noted) instead of refused
    peak_memory_gib: float | None = None  # CUDA only: max_memory_allocated over the evaluation
    tasks: dict[str, TaskResult] = Field(default_factory=dict)


class HeldoutLoss(Record):
    """Mean next-token loss on held-out documents: nats per token and (tokenizer-free) bits per byte."""

    nats_per_token: float
    bits_per_byte: float
    tokens: int
    bytes: int
    documents: int
    skip_docs: int | None = None  # the documents of the source left out first (set by the reader)
    files: list[str] | None = None
    seq_len: int


class RunResults(Record):
    """One run of a study: its report table (`stage`), one cell per domain, the other tasks evaluated."""

    stage: str
    same_run_as: str | None = None
    base: str | None = None
    tasks: dict[str, TaskResult] = Field(default_factory=dict)
    other_tasks: dict[str, TaskResult] = Field(default_factory=dict)
    heldout: dict[str, HeldoutLoss] | None = None


class StudyResults(Record):
    """A study's results.json: per run its results, the resolved config, the paper's numbers."""

    runs: dict[str, RunResults] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    paper: dict[str, Any] | None = None

    def runs_in(self, stage: str) -> list[str]:
        return [n for n, r in self.runs.items() if r.stage == stage]


class Difference(Record):
    """A's and B's value and A - B with its paired-bootstrap 95% interval and p-value over `n` items."""

    a: float
    b: float
    diff: float
    ci95: list[float]
    p_value: float
    n: int


class TaskComparison(Record):
    """One task of a comparison: A - B on the task's metric, and the continuous signals beside it.
    Items are paired by `paired_by` (item_hash, or doc_id for older items files); how many were left
    out as only in A, only in B, or `conflicting` (same question, another answer or id)."""

    metric: str
    split: str | None = None  # the split both sides' items came from (null: items files that name none)
    n: int
    a: float
    b: float
    diff: float
    ci95: list[float]
    p_value: float
    paired_by: str | None = None
    only_in_a: int = 0
    only_in_b: int = 0
    conflicting: int = 0
    pass_at_1: Difference | None = Field(None, alias="pass@1")
    gold_logprob: Difference | None = None
    margin: Difference | None = None
    bits_per_byte: Difference | None = None


class Comparison(Record):
    """Run(s) A against run(s) B, one seed per items file; `unpaired_tasks` are in one side only, and
    `split_mismatch` tasks were not compared (their items came from different splits). `common_only`:
    sides that are not the same items were compared on their common items; `notes` says what was
    left out (the CLI prints them as warnings)."""

    a: str | list[str]
    b: str | list[str]
    seeds: int
    common_only: bool | None = None
    tasks: dict[str, TaskComparison] = Field(default_factory=dict)
    unpaired_tasks: list[str] = Field(default_factory=list)
    split_mismatch: dict[str, dict[str, list[str]]] = Field(default_factory=dict)  # task -> {"a": splits, "b": splits}
    notes: list[str] = Field(default_factory=list)
