"""Paired comparison of two runs from their items files: per task A - B, its interval and p-value.

Items are paired by (task, doc_id); only items present in both runs count (how many were not
paired is reported). A task whose items came from different splits in A and B (E-KAR: test in
one run, validation in the other) is not compared: its doc_ids name different items. Accuracy
compares per-item correctness; BLEU resamples the per-item BLEU statistics and recomputes corpus
BLEU for both runs on the same resampled items. The mean log-probability of the gold choice is
compared too: it moves before accuracy does.

Several seeds: give one items file per seed on each side (seed i of A pairs with seed i of B).
Each item's value is then its mean over seeds (BLEU: its statistics summed over seeds), so the
interval resamples items with the seed-to-seed variation folded into each item.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Sequence

import numpy as np

from codestage.errors import DataError
from codestage.jsonlines import iter_json_lines
from codestage.eval.metrics import bleu_statistic
from codestage.eval.stats import mean_stat, paired_bootstrap, ratio_stat


def _items_path(path: Path | str) -> Path:
    path = Path(path)
    if path.is_dir():
        plain = path / "items.jsonl"
        return plain if plain.is_file() or not (path / "items.jsonl.gz").is_file() else path / "items.jsonl.gz"
    return path


def read_items(path: Path | str) -> dict[str, dict[int, dict]]:
    """task -> doc_id -> item record, from an items.jsonl (or a run directory holding one)."""
    path = _items_path(path)
    if not path.is_file():
        raise DataError(f"{path}: items file not found (expected an items.jsonl written by `codestage eval`)")
    out: dict[str, dict[int, dict]] = {}
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the items file ({exc})") from None
    for lineno, rec in iter_json_lines(text, path):
        if not isinstance(rec, dict) or not isinstance(rec.get("task"), str) or not isinstance(rec.get("doc_id"), int):
            raise DataError(f"{path}:{lineno}: field 'task' or 'doc_id' missing")
        if "correct" not in rec and "bleu_stats" not in rec:
            raise DataError(f"{path}:{lineno}: field 'correct' (or 'bleu_stats') missing")
        out.setdefault(rec["task"], {})[rec["doc_id"]] = rec
    return out


def _point(x: np.ndarray, stat) -> float:
    rows = x[:, None] if x.ndim == 1 else x
    return 100.0 * float(np.asarray(stat(rows.sum(axis=0), rows.shape[0])))


def _scaled(result: dict) -> dict:
    return {**result, "diff": 100.0 * result["diff"], "ci95": [100.0 * v for v in result["ci95"]]}


def _per_item(runs: list[dict[int, dict]], ids: list[int], field: str, reduce: str = "mean") -> np.ndarray:
    """(items x ...) values of `field`, combined over the runs (seeds) of one side."""
    stacked = np.array([[np.asarray(r[i][field], dtype=np.float64) for i in ids] for r in runs], dtype=np.float64)
    return stacked.sum(axis=0) if reduce == "sum" else stacked.mean(axis=0)


def _splits(runs: list[dict[int, dict]]) -> set[str]:
    """The splits the item records of one side name (items files written before splits were recorded name none)."""
    return {rec["split"] for run in runs for rec in run.values() if rec.get("split")}


def compare(items_a: Path | str | Sequence[Path | str], items_b: Path | str | Sequence[Path | str], *, seed: int = 0) -> dict:
    """Per task: n paired items, A's and B's score (percent), A - B with 95% interval and p-value.
    Each side is one items file (or run folder), or a list of them, one per seed."""
    list_a = [items_a] if isinstance(items_a, (str, Path)) else list(items_a)
    list_b = [items_b] if isinstance(items_b, (str, Path)) else list(items_b)
    if not list_a or len(list_a) != len(list_b):
        raise DataError(f"compare: give the same number of runs on both sides (got {len(list_a)} and {len(list_b)})")
    runs_a, runs_b = [read_items(p) for p in list_a], [read_items(p) for p in list_b]
    out: dict = {"a": [str(_items_path(p)) for p in list_a], "b": [str(_items_path(p)) for p in list_b],
                 "seeds": len(list_a), "tasks": {}}
    if len(list_a) == 1:
        out["a"], out["b"] = out["a"][0], out["b"][0]
    tasks_a = set.intersection(*(set(r) for r in runs_a))
    tasks_b = set.intersection(*(set(r) for r in runs_b))
    out["unpaired_tasks"] = sorted(tasks_a ^ tasks_b)
    out["split_mismatch"] = {}
    for task in sorted(tasks_a & tasks_b):
        side_a, side_b = [r[task] for r in runs_a], [r[task] for r in runs_b]
        splits_a, splits_b = _splits(side_a), _splits(side_b)
        if len(splits_a | splits_b) > 1:
            out["split_mismatch"][task] = {"a": sorted(splits_a), "b": sorted(splits_b)}
            continue
        ids = sorted(set.intersection(*(set(r) for r in side_a + side_b)))
        if not ids:
            continue
        recs = [r[i] for r in side_a + side_b for i in ids]
        if all("bleu_stats" in r for r in recs):
            metric, field, reduce, stat = "bleu", "bleu_stats", "sum", bleu_statistic
        else:
            metric, field, reduce, stat = "accuracy", "correct", "mean", mean_stat
        xa, xb = _per_item(side_a, ids, field, reduce), _per_item(side_b, ids, field, reduce)
        entry = {
            "metric": metric,
            "split": next(iter(splits_a | splits_b), None),
            "n": len(ids),
            "a": _point(xa, stat),
            "b": _point(xb, stat),
            **_scaled(paired_bootstrap(xa, xb, stat, seed=seed)),
            "only_in_a": max(len(r) for r in side_a) - len(ids),
            "only_in_b": max(len(r) for r in side_b) - len(ids),
        }
        if all("passed" in r for r in recs):
            pa, pb = _per_item(side_a, ids, "passed"), _per_item(side_b, ids, "passed")
            entry["pass@1"] = {"a": 100.0 * pa.mean(), "b": 100.0 * pb.mean(), **_scaled(paired_bootstrap(pa, pb, seed=seed))}
        if all("gold_score" in r for r in recs):
            ga, gb = _per_item(side_a, ids, "gold_score"), _per_item(side_b, ids, "gold_score")
            entry["gold_logprob"] = {"a": float(ga.mean()), "b": float(gb.mean()), **paired_bootstrap(ga, gb, seed=seed)}
        if all("margin" in r for r in recs):
            ma, mb = _per_item(side_a, ids, "margin"), _per_item(side_b, ids, "margin")
            entry["margin"] = {"a": float(ma.mean()), "b": float(mb.mean()), **paired_bootstrap(ma, mb, seed=seed)}
        if all("ref_logprob" in r and "ref_bytes" in r for r in recs):
            # bits per byte of the reference solution (lower is better): rows of (bits, bytes)
            nbytes = np.array([side_a[0][i]["ref_bytes"] for i in ids], dtype=np.float64)
            ba = np.stack([-_per_item(side_a, ids, "ref_logprob") / np.log(2), nbytes], axis=1)
            bb = np.stack([-_per_item(side_b, ids, "ref_logprob") / np.log(2), nbytes], axis=1)
            entry["bits_per_byte"] = {"a": float(ratio_stat(ba.sum(axis=0), len(ids))), "b": float(ratio_stat(bb.sum(axis=0), len(ids))),
                                      **paired_bootstrap(ba, bb, ratio_stat, seed=seed)}
        out["tasks"][task] = entry
    return out
