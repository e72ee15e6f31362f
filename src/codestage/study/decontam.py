"""Test-set contamination: n-gram overlap between training data and the evaluation tasks.

Text is lower-cased and split into words (runs of letters/digits; each CJK character is a word,
since Chinese has no spaces). Every n-gram (13 by default, as in GPT-3's decontamination) of every
evaluation item's texts (question, passage, options, MBPP code and tests) goes into a sorted array
of 64-bit hashes; a training document that shares at least one n-gram with an item *touches* it.
The report counts, per training source and task, the documents touched and the items touched;
`drop_out` writes clean copies of the sources without the touching documents. It sits in study/
because it joins the two sides below it: training data (data/) and the evaluation tasks (eval/).
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from codestage.atomic import atomic_dir, write_json
from codestage.outputs import DROP_OUT, check_output
from codestage.data.issues import IssueLog
from codestage.data.parallel import ordered_map

DEFAULT_N = 13
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_WORD = re.compile(f"[{_CJK}]|[^\\W_{_CJK}]+")
_P = np.uint64(1099511628211)
FIRST = 5


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _window_count(flags: np.ndarray, n: int) -> np.ndarray:
    c = np.concatenate([[0], np.cumsum(flags)])
    return c[n:] - c[:-n]


def ngram_hashes(ids: np.ndarray, n: int, trivial: np.ndarray | None = None) -> np.ndarray:
    """Hashes of every window of n word ids. Windows holding an unknown word (id 0) are left out,
    and, when `trivial` flags are given, windows made only of numbers and single ASCII letters
    (`1 2 3 ... 13`, `a b c ... m`), which match unrelated documents."""
    m = len(ids) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=np.uint64)
    ids = ids.astype(np.uint64)
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            h = h * _P + ids[k : k + m]
    valid = _window_count(ids == 0, n) == 0
    if trivial is not None:
        valid &= _window_count(~trivial, n) > 0
    return h[valid]


def item_texts(item: Any) -> list[str]:
    """The texts of an evaluation item that training data must not contain."""
    from codestage.eval.tasks.base import ChoiceItem

    if isinstance(item, ChoiceItem):
        return [item.passage or "", item.question, *item.choices, " ".join([item.question, *item.choices])]
    tests = "\n".join(item.tests)
    return [item.prompt, item.reference, tests, item.test_setup, f"{item.prompt}\n{tests}"]


@dataclass
class EvalIndex:
    """n-gram hashes of every evaluation item, sorted, with the item each came from."""

    n: int
    vocab: dict[str, int] = field(default_factory=dict)
    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    owners: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    items: list[tuple[str, int]] = field(default_factory=list)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def ids(self, text: str, *, grow: bool = False) -> np.ndarray:
        ws = words(text)
        if grow:
            for w in ws:
                self.vocab.setdefault(w, len(self.vocab) + 1)
        get = self.vocab.get
        return np.fromiter((get(w, 0) for w in ws), dtype=np.int64, count=len(ws))

    def item_grams(self, text: str) -> np.ndarray:
        trivial = np.fromiter((w.isdigit() or (len(w) == 1 and w.isascii()) for w in words(text)), dtype=bool)
        return ngram_hashes(self.ids(text, grow=True), self.n, trivial)

    def touched(self, text: str) -> np.ndarray:
        """Sorted unique item numbers sharing an n-gram with `text`."""
        h = ngram_hashes(self.ids(text), self.n)
        if not len(h) or not len(self.hashes):
            return np.zeros(0, dtype=np.int32)
        lo = np.searchsorted(self.hashes, h, side="left")
        hit = lo < len(self.hashes)
        hit[hit] = self.hashes[lo[hit]] == h[hit]
        if not hit.any():
            return np.zeros(0, dtype=np.int32)
        hi = np.searchsorted(self.hashes, h[hit], side="right")
        return np.unique(np.concatenate([self.owners[a:b] for a, b in zip(lo[hit], hi)]))


def build_index(tasks: Sequence[str], data_dir: Path | str | None = None, n: int = DEFAULT_N) -> EvalIndex:
    """Index every item of `tasks` (task or domain names); tasks whose data is absent are noted."""
    from codestage.eval.registry import get_task, resolve_tasks
    from codestage.eval.tasks.base import TaskDataMissing

    index = EvalIndex(n)
    hashes, owners = [], []
    for name in resolve_tasks(list(tasks)):
        try:
            items = get_task(name, data_dir).load()
        except TaskDataMissing as exc:
            index.tasks[name] = {"items": 0, "checkable": 0, "absent": str(exc)}
            continue
        checkable = 0
        for item in items:
            num = len(index.items)
            index.items.append((name, item.doc_id))
            grams = np.unique(np.concatenate([index.item_grams(t) for t in item_texts(item)]))
            checkable += bool(len(grams))
            hashes.append(grams)
            owners.append(np.full(len(grams), num, dtype=np.int32))
        index.tasks[name] = {"items": len(items), "checkable": checkable, "absent": None}
    if hashes:
        h, o = np.concatenate(hashes), np.concatenate(owners)
        order = np.argsort(h, kind="stable")
        index.hashes, index.owners = h[order], o[order]
    return index


_STATE: dict[str, Any] = {}


def _init(index: EvalIndex, in_pool: bool = True) -> None:
    _STATE["index"] = index


def _scan(texts: list[str]) -> list[np.ndarray]:
    return [_STATE["index"].touched(t) for t in texts]


@dataclass(frozen=True)
class TrainingSet:
    """A training source to check: pretraining files (`kind="pretrain"`) or an instruction set."""

    name: str
    paths: tuple[str, ...]
    kind: str = "pretrain"
    text_field: str = "text"


def _records(ts: TrainingSet, issues: IssueLog, base: Path | None) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(location, text, record to write if kept) for every document or example of a training set."""
    if ts.kind == "instruct":
        from codestage.data.instructions import read_examples

        for ex in read_examples(ts.paths, ts.name, base=base).examples:
            yield ex.location, f"{ex.instruction}\n{ex.input}\n{ex.output}", \
                {"instruction": ex.instruction, "input": ex.input, "output": ex.output}
        return
    from codestage.data.sources import iter_documents

    for d in iter_documents(ts.paths, ts.name, text_field=ts.text_field, base=base, issues=issues):
        yield d.location, d.text, {"text": d.text, "source": d.source, "meta": {**d.meta, "location": d.location}}


def _batched(records: Iterable[tuple[str, str, dict[str, Any]]], chars: int = 1 << 18) -> Iterator[list[tuple[str, str, dict]]]:
    batch, size = [], 0
    for r in records:
        batch.append(r)
        size += len(r[1])
        if size >= chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class _Clean:
    """Writes the kept records of one training set to `drop_out` (jsonl.gz / jsonl)."""

    def __init__(self, folder: Path, ts: TrainingSet) -> None:
        name = f"{ts.name}.jsonl" if ts.kind == "instruct" else f"{ts.name}.jsonl.gz"
        self.path = folder / name
        self.f = gzip.open(self.path, "wt", encoding="utf-8") if name.endswith(".gz") else open(self.path, "w", encoding="utf-8")

    def write(self, rec: dict[str, Any]) -> None:
        self.f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self.f.close()


class _SetScan:
    """Per training set: documents seen and touched, items touched per task, the clean copy."""

    def __init__(self, ts: TrainingSet, clean: _Clean | None) -> None:
        self.ts, self.clean, self.issues = ts, clean, IssueLog()
        self.docs = self.touched = 0
        self.per_task: dict[str, dict[str, Any]] = {}
        self.items_hit: dict[str, set[int]] = {}

    def take(self, batch: list[tuple[str, str, dict]], hits: list[np.ndarray], index: EvalIndex) -> None:
        for (where, _, rec), items in zip(batch, hits):
            self.docs += 1
            if not len(items):
                if self.clean is not None:
                    self.clean.write(rec)
                continue
            self.touched += 1
            owners = [index.items[i] for i in items.tolist()]
            for task in sorted({t for t, _ in owners}):
                mine = [d for t, d in owners if t == task]
                entry = self.per_task.setdefault(task, {"documents_touched": 0, "items_touched": 0, "examples": []})
                entry["documents_touched"] += 1
                self.items_hit.setdefault(task, set()).update(mine)
                if len(entry["examples"]) < FIRST:
                    entry["examples"].append({"document": where, "items": mine[:FIRST]})

    def report(self, drop_out: Path | None) -> dict[str, Any]:
        for task, hit in self.items_hit.items():
            self.per_task[task]["items_touched"] = len(hit)
            self.per_task[task]["item_ids"] = sorted(hit)
        return {"kind": self.ts.kind, "documents": self.docs, "documents_touched": self.touched,
                "dropped": self.touched if self.clean is not None else 0,
                "clean_copy": str(drop_out / self.clean.path.name) if self.clean is not None and drop_out else None,
                "unreadable_records": self.issues.totals(), "tasks": dict(sorted(self.per_task.items()))}


def _scan_all(sets: Sequence[TrainingSet], index: EvalIndex, workers: int, base: Path | None,
              clean_dir: Path | None, drop_out: Path | None) -> dict[str, Any]:
    scans = [_SetScan(ts, _Clean(clean_dir, ts) if clean_dir is not None else None) for ts in sets]
    tagged = ((k, b) for k, sc in enumerate(scans) for b in _batched(_records(sc.ts, sc.issues, base)))
    results = ordered_map(_scan, tagged, workers=workers, initializer=_init, initargs=(index,),
                          send=lambda kb: [r[1] for r in kb[1]])
    try:
        for (k, batch), hits in results:
            scans[k].take(batch, hits, index)
    finally:
        results.close()
        for sc in scans:
            if sc.clean is not None:
                sc.clean.close()
    return {sc.ts.name: sc.report(drop_out) for sc in scans}


def decontaminate(sets: Sequence[TrainingSet], tasks: Sequence[str], *, data_dir: Path | str | None = None,
                  n: int = DEFAULT_N, workers: int = 1, drop_out: Path | None = None, base: Path | None = None,
                  index: EvalIndex | None = None) -> dict[str, Any]:
    """The contamination report of `sets` against `tasks`; with `drop_out`, clean copies are written there
    (pretraining sources as `NAME.jsonl.gz`, instruction sets as `NAME.jsonl`) with `decontam.json`."""
    if drop_out is not None:
        check_output(drop_out, DROP_OUT, inputs=[*(p for ts in sets for p in ts.paths), data_dir], base=base,
                     option="--drop-out")
    index = index or build_index(tasks, data_dir, n)
    report: dict[str, Any] = {"n": index.n, "tasks": index.tasks, "sources": {}}
    if drop_out is None:
        report["sources"] = _scan_all(sets, index, workers, base, None, None)
        return report
    with atomic_dir(Path(drop_out)) as tmp:
        report["sources"] = _scan_all(sets, index, workers, base, tmp, Path(drop_out))
        write_json(tmp / "decontam.json", report)
    return report


def contamination_summary(report: Mapping[str, Any] | Path | str) -> dict[str, Any]:
    """What a study report states: per task, items touched by any training source (and by which)."""
    if not isinstance(report, Mapping):
        report = json.loads(Path(report).read_text(encoding="utf-8"))
    tasks: dict[str, Any] = {}
    for task, info in report["tasks"].items():
        hit: set[int] = set()
        by_source = {}
        for src, s in report["sources"].items():
            t = s["tasks"].get(task)
            if t:
                hit.update(t.get("item_ids", []))
                by_source[src] = {"items_touched": t["items_touched"], "documents_touched": t["documents_touched"]}
        tasks[task] = {"items": info["items"], "items_checkable": info["checkable"], "items_touched": len(hit),
                       "share_touched": round(len(hit) / info["items"], 4) if info["items"] else None,
                       "absent": info["absent"], "by_source": by_source}
    sources = {name: {"kind": s["kind"], "documents": s["documents"], "documents_touched": s["documents_touched"],
                      "dropped": s["dropped"]} for name, s in report["sources"].items()}
    return {"ngram": report["n"], "tasks": tasks, "sources": sources}
