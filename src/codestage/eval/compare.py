"""Paired comparison of two runs from their items files: per task A - B, its interval and p-value.

Items are paired by (task, doc_id); only items present in both runs count (how many were not
paired is reported). Accuracy compares per-item correctness; BLEU resamples the per-item BLEU
statistics and recomputes corpus BLEU for both runs on the same resampled items.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from codestage.errors import DataError
from codestage.eval.metrics import bleu_from_stats
from codestage.eval.stats import mean_stat, paired_bootstrap


def _items_path(path: Path | str) -> Path:
    path = Path(path)
    return path / "items.jsonl" if path.is_dir() else path


def read_items(path: Path | str) -> dict[str, dict[int, dict]]:
    """task -> doc_id -> item record, from an items.jsonl (or a run directory holding one)."""
    path = _items_path(path)
    if not path.is_file():
        raise DataError(f"{path}: items file not found (expected an items.jsonl written by `codestage eval`)")
    out: dict[str, dict[int, dict]] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("task"), str) or not isinstance(rec.get("doc_id"), int):
            raise DataError(f"{path}:{lineno}: field 'task' or 'doc_id' missing")
        if "correct" not in rec and "bleu_stats" not in rec:
            raise DataError(f"{path}:{lineno}: field 'correct' (or 'bleu_stats') missing")
        out.setdefault(rec["task"], {})[rec["doc_id"]] = rec
    return out


def _bleu_stat(sums: np.ndarray, n: int) -> np.ndarray:
    return bleu_from_stats(sums)


def _point(x: np.ndarray, stat) -> float:
    rows = x[:, None] if x.ndim == 1 else x
    return 100.0 * float(np.asarray(stat(rows.sum(axis=0), rows.shape[0])))


def _scaled(result: dict) -> dict:
    return {**result, "diff": 100.0 * result["diff"], "ci95": [100.0 * v for v in result["ci95"]]}


def compare(items_a: Path | str, items_b: Path | str, *, seed: int = 0) -> dict:
    """Per task: n paired items, A's and B's score (percent), A - B with 95% interval and p-value."""
    a, b = read_items(items_a), read_items(items_b)
    out: dict = {"a": str(_items_path(items_a)), "b": str(_items_path(items_b)), "tasks": {}}
    out["unpaired_tasks"] = sorted(set(a) ^ set(b))
    for task in sorted(set(a) & set(b)):
        ids = sorted(set(a[task]) & set(b[task]))
        if not ids:
            continue
        ra, rb = [a[task][i] for i in ids], [b[task][i] for i in ids]
        if all("bleu_stats" in r for r in ra + rb):
            metric = "bleu"
            xa = np.array([r["bleu_stats"] for r in ra], dtype=np.float64)
            xb = np.array([r["bleu_stats"] for r in rb], dtype=np.float64)
            stat = _bleu_stat
        else:
            metric = "accuracy"
            xa = np.array([float(r["correct"]) for r in ra])
            xb = np.array([float(r["correct"]) for r in rb])
            stat = mean_stat
        entry = {
            "metric": metric,
            "n": len(ids),
            "a": _point(xa, stat),
            "b": _point(xb, stat),
            **_scaled(paired_bootstrap(xa, xb, stat, seed=seed)),
            "only_in_a": len(a[task]) - len(ids),
            "only_in_b": len(b[task]) - len(ids),
        }
        if all("passed" in r for r in ra + rb):
            pa = np.array([float(r["passed"]) for r in ra])
            pb = np.array([float(r["passed"]) for r in rb])
            entry["pass@1"] = {"a": 100.0 * pa.mean(), "b": 100.0 * pb.mean(), **_scaled(paired_bootstrap(pa, pb, seed=seed))}
        out["tasks"][task] = entry
    return out
