"""Evaluate one multiple-choice task: build requests, score them, decide, summarise with intervals."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from codestage.eval.metrics import argmax_first, exact_set_correct
from codestage.eval.protocols import choice_requests, decision_scores, exemplar_picker, norm_scores
from codestage.eval.requests import Score
from codestage.eval.scoring import Scorer
from codestage.eval.stats import bootstrap_ci
from codestage.eval.task_loss import aggregate, gold_loss, loss_notes
from codestage.eval.tasks.base import ChoiceItem, MultipleChoiceTask, Protocol


def _pct(point_lo_hi: tuple[float, float, float]) -> tuple[float, list[float]]:
    p, lo, hi = point_lo_hi
    return 100.0 * p, [100.0 * lo, 100.0 * hi]


def continuous(values: Sequence[float], seed: int, unit: str) -> dict | None:
    """Mean of a per-item continuous score with its bootstrap interval (None when no item has one)."""
    if not values:
        return None
    point, lo, hi = bootstrap_ci(np.asarray(values, dtype=np.float64), seed=seed)
    return {"value": point, "ci95": [lo, hi], "n": len(values), "unit": unit}


def item_record(task: MultipleChoiceTask, item: ChoiceItem, protocol: Protocol, choices: Sequence[Score]) -> dict:
    """One items.jsonl line: raw scores, decision, gold, correctness, the continuous margins and the
    gold continuation's bits per byte (`eval/task_loss.py`)."""
    logprobs = [s.logprob for s in choices]
    n_tokens = [s.n_tokens for s in choices]
    scores = decision_scores(protocol, logprobs, n_tokens)
    pred = argmax_first(scores)
    rec = {
        "task": task.name,
        "doc_id": item.doc_id,
        "choice_logprobs": logprobs,
        "choice_tokens": n_tokens,
        "choice_scores": scores,
        "prediction": pred,
        "gold": list(item.gold),
        "correct": exact_set_correct(pred, item.gold),
    }
    if protocol == "lm-eval":
        pred_norm = argmax_first(norm_scores(task, item, logprobs))
        rec["prediction_norm"] = pred_norm
        rec["correct_norm"] = exact_set_correct(pred_norm, item.gold)
    wrong = [s for i, s in enumerate(scores) if i not in item.gold]
    if item.gold and wrong:
        best_gold = max(scores[i] for i in item.gold)
        rec["gold_score"] = best_gold
        rec["margin"] = best_gold - max(wrong)
    rec.update(gold_loss([choices[i] for i in item.gold]))
    return rec


def evaluate_choice_task(
    task: MultipleChoiceTask,
    items: Sequence[ChoiceItem],
    all_items: Sequence[ChoiceItem],
    scorer: Scorer,
    *,
    protocol: Protocol,
    shots: int,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict, list[dict]]:
    """(summary fields, item records) for the given items; `all_items` is the exemplar fallback pool."""
    pick = exemplar_picker(task, all_items, shots, seed)
    groups = [choice_requests(task, it, protocol, pick(it)) for it in items]
    truncation = "right" if protocol == "paper" else "left"
    scored = scorer.loglikelihood(groups, truncation=truncation, progress=progress)
    records = [item_record(task, it, protocol, ss) for it, ss in zip(items, scored)]
    correct = np.array([r["correct"] for r in records], dtype=np.float64)
    value, ci = _pct(bootstrap_ci(correct, seed=seed))
    unit = "nats per token" if protocol == "paper" else "nats"
    summary = {
        "metric": "accuracy",
        "value": value,
        "n": len(records),
        "ci95": ci,
        "chance": None if task.chance(items) is None else 100.0 * task.chance(items),
        "gold_logprob": continuous([r["gold_score"] for r in records if "gold_score" in r], seed, unit),
        "margin": continuous([r["margin"] for r in records if "margin" in r], seed, unit),
        "bits_per_byte": aggregate(records, seed),
    }
    if notes := loss_notes(records, len(records)):
        summary["notes"] = notes
    if protocol == "lm-eval":
        norm = np.array([r["correct_norm"] for r in records], dtype=np.float64)
        v, c = _pct(bootstrap_ci(norm, seed=seed))
        summary["acc_norm"] = {"value": v, "ci95": c}
    return summary, records
