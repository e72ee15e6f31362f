"""Task loss: bits per byte of the gold answer, one rule for every task (the ladder's step-1 loss).

Per item, from the log-likelihoods the task's score already needed (no extra forward pass):

    gold_bits   -log2 P(gold continuation | its context), summed over its scored tokens
    gold_bytes  UTF-8 bytes of that continuation as scored (after lm-eval's context/continuation
                split; a continuation cut to fit the model counts the bytes of its scored tokens)
    gold_bpb    gold_bits / gold_bytes
    gold_tokens the scored tokens; `gold_truncated: true` only when part of the gold was cut

Multiple choice: the gold choice's request under the task's protocol (paper: the scored span that
follows the gold candidate; lm-eval: the gold choice text). An item with several correct options
(JEC-QA) pools them: bits and bytes summed over every gold option, the loss of the whole gold set,
as its accuracy asks for the whole set. Code generation: the reference program after the prompt.

Task level: sum of gold_bits / sum of gold_bytes over the items that have them (bytes-weighted,
as the ladder's POINTS reader aggregates per-item bits and bytes), with a 95% bootstrap interval
over items. `points_items` / `points_row` turn item records into the POINTS per-item lines and row
values (`codestage.study.ladder.points`), consistent by construction.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

from codestage.eval.requests import Score
from codestage.eval.stats import bootstrap_ci, ratio_stat

LN2 = math.log(2.0)
UNIT = "bits per byte"
FIELDS = ("gold_bits", "gold_bytes", "gold_bpb", "gold_tokens", "gold_truncated")


def gold_loss(scores: Sequence[Score]) -> dict[str, Any]:
    """The per-item fields from the scores of the gold continuation(s); {} when there is no gold or
    it covers no bytes (such an item has no task loss)."""
    n_bytes = sum(s.n_bytes for s in scores)
    if not scores or n_bytes <= 0:
        return {}
    bits = -sum(s.logprob for s in scores) / LN2
    out: dict[str, Any] = {"gold_bits": bits, "gold_bytes": n_bytes, "gold_bpb": bits / n_bytes,
                           "gold_tokens": sum(s.n_tokens for s in scores)}
    if any(s.cut_tokens for s in scores):
        out["gold_truncated"] = True
    return out


def has_loss(record: dict) -> bool:
    return record.get("gold_bits") is not None and (record.get("gold_bytes") or 0) > 0


def aggregate(records: Iterable[dict], seed: int) -> dict | None:
    """{"value": sum bits / sum bytes, "ci95", "n" items, "unit"} over the records with a task loss;
    None when none has one."""
    rows = np.array([(r["gold_bits"], r["gold_bytes"]) for r in records if has_loss(r)], dtype=np.float64)
    if rows.size == 0:
        return None
    point, lo, hi = bootstrap_ci(rows, ratio_stat, seed=seed)
    return {"value": point, "ci95": [lo, hi], "n": int(rows.shape[0]), "unit": UNIT}


def loss_notes(records: Sequence[dict], n_items: int) -> list[str]:
    """What a result's notes should say about its task loss: items without one, golds cut to fit."""
    notes = []
    without = n_items - sum(has_loss(r) for r in records)
    if without:
        notes.append(f"bits per byte: {without} of {n_items} items have no gold answer to score and are left out")
    cut = sum(bool(r.get("gold_truncated")) for r in records)
    if cut:
        notes.append(f"bits per byte: the gold continuation of {cut} of {n_items} items was cut to fit the model's "
                     "context; those count the bytes of the part scored")
    return notes


def item_id(record: dict) -> str:
    """A record's identity across runs: its item_hash (content), else its task position."""
    return str(record.get("item_hash") or f"doc{record['doc_id']}")


def _correct(record: dict) -> float | None:
    if "correct" in record:
        return float(bool(record["correct"]))
    if "passed" in record:
        return float(bool(record["passed"]))
    return None


def points_items(records: Iterable[dict]) -> list[dict]:
    """The ladder POINTS per-item lines ({"task", "id", "bits", "bytes"} and "correct" when known:
    multiple-choice accuracy, or a generated program passing its tests) of the records with a task loss."""
    out = []
    for r in records:
        if not has_loss(r):
            continue
        line = {"task": r["task"], "id": item_id(r), "bits": float(r["gold_bits"]), "bytes": float(r["gold_bytes"])}
        correct = _correct(r)
        if correct is not None:
            line["correct"] = correct
        out.append(line)
    return out


def points_row(records: Iterable[dict]) -> dict[str, float | int | None]:
    """A POINTS row's `loss` (bits per byte), `accuracy` (fraction; None unless every item has one) and
    `n_items`, over the same items `points_items` gives, so the POINTS reader's checks hold."""
    lines = points_items(records)
    if not lines:
        return {"loss": None, "accuracy": None, "n_items": 0}
    bits = math.fsum(x["bits"] for x in lines)
    n_bytes = math.fsum(x["bytes"] for x in lines)
    acc = None if any("correct" not in x for x in lines) else math.fsum(x["correct"] for x in lines) / len(lines)
    return {"loss": bits / n_bytes, "accuracy": acc, "n_items": len(lines)}
