"""Paired comparison of two runs from their items files: per task A - B, its interval and p-value.

Items are paired by identity (`eval/identity.py`): the hash of their question and choices, and
their upstream id where both sides have one, so a reordered file pairs correctly and the same
comparison comes out. When the two sides are not the same items (another revision of the data,
another subsample, a changed answer key) `compare` refuses, naming the task and how many items
differ; `common_only` compares the items both sides share and notes how many were left out.
Items files written before items carried `item_hash` are paired by position (doc_id), and only
when both sides hold the same positions with the same gold answers; otherwise re-evaluate.
A task whose items came from different splits in A and B (E-KAR: test in one run, validation in
the other) is not compared at all (`split_mismatch`, and a note): a score on another split is
not the same measurement, even where some questions coincide.

Accuracy compares per-item correctness; BLEU resamples the per-item BLEU statistics and
recomputes corpus BLEU for both runs on the same resampled items. The mean log-probability of the
gold choice is compared too: it moves before accuracy does; and every task's bits per byte of the
gold answer (`eval/task_loss.py`: summed bits over summed bytes of the items both sides scored),
which is the task's only metric when its items carry nothing else (code tasks evaluated with
`--no-generate`).

Several seeds: give one items file per seed on each side (seed i of A pairs with seed i of B).
Each item's value is then its mean over seeds (BLEU: its statistics summed over seeds), so the
interval resamples items with the seed-to-seed variation folded into each item.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from codestage.errors import DataError
from codestage.jsonlines import iter_json_lines
from codestage.results import Comparison
from codestage.eval.metrics import bleu_statistic
from codestage.eval.stats import mean_stat, paired_bootstrap, ratio_stat
from codestage.eval.task_loss import has_loss


def _items_path(path: Path | str) -> Path:
    path = Path(path)
    if path.is_dir():
        plain = path / "items.jsonl"
        return plain if plain.is_file() or not (path / "items.jsonl.gz").is_file() else path / "items.jsonl.gz"
    return path


def read_items(path: Path | str) -> dict[str, list[tuple[int, dict]]]:
    """task -> [(line, item record)] in file order, from an items.jsonl (or a run directory holding one)."""
    path = _items_path(path)
    if not path.is_file():
        raise DataError(f"{path}: items file not found (expected an items.jsonl written by `codestage eval`)")
    out: dict[str, list[tuple[int, dict]]] = {}
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the items file ({exc})") from None
    for lineno, rec in iter_json_lines(text, path):
        if not isinstance(rec, dict) or not isinstance(rec.get("task"), str) or not isinstance(rec.get("doc_id"), int):
            raise DataError(f"{path}:{lineno}: field 'task' or 'doc_id' missing")
        if "correct" not in rec and "bleu_stats" not in rec and "gold_bits" not in rec:
            raise DataError(f"{path}:{lineno}: field 'correct' (or 'bleu_stats', or 'gold_bits') missing")
        if "item_hash" in rec and not isinstance(rec["item_hash"], str):
            raise DataError(f"{path}:{lineno}: field 'item_hash' should be a string")
        out.setdefault(rec["task"], []).append((lineno, rec))
    return out


def _keyed(path: Path, task: str, rows: list[tuple[int, dict]], by: str) -> dict[Any, dict]:
    """One run's items of a task by identity (`item_hash`) or position (`doc_id`); a repeat is an error."""
    out: dict[Any, dict] = {}
    first: dict[Any, int] = {}
    for line, rec in rows:
        key = rec[by]
        if key in out:
            raise DataError(f"{path}:{line}: task {task}: the same item ({by} {key!r}) as line {first[key]}; "
                            "an items file holds each item once")
        out[key], first[key] = rec, line
    return out


def _same_item(recs: list[dict]) -> bool:
    """The records (one per run) agree on the gold answer and, where given, the upstream id."""
    ids = {r.get("item_id") for r in recs if r.get("item_id") is not None}
    return len(ids) <= 1 and all(r.get("gold") == recs[0].get("gold") for r in recs)


def _pair(task: str, paths_a: list[Path], paths_b: list[Path], rows_a: list[list], rows_b: list[list],
          common_only: bool) -> tuple[list[dict], list[dict], list, str, dict[str, int], list[str]]:
    """(side A runs, side B runs keyed alike, the keys to compare, how paired, counts, notes)."""
    rows = rows_a + rows_b
    by = "item_hash" if all("item_hash" in r for run in rows for _, r in run) else "doc_id"
    runs = [_keyed(p, task, run, by) for p, run in zip(paths_a + paths_b, rows)]
    side_a, side_b = runs[: len(rows_a)], runs[len(rows_a):]
    in_all = set.intersection(*(set(r) for r in runs))
    same = {k for k in in_all if _same_item([r[k] for r in runs])}
    counts = {"only_in_a": len(set().union(*side_a) - in_all), "only_in_b": len(set().union(*side_b) - in_all),
              "conflicting": len(in_all - same)}
    differ = sum(counts.values())
    if by == "doc_id":
        if differ:
            raise DataError(
                f"compare: task {task}: these items files carry no item_hash (written by an older codestage), so items "
                f"can only be paired by position, and the positions disagree ({counts['only_in_a']} only in A, "
                f"{counts['only_in_b']} only in B, {counts['conflicting']} with a different gold answer); "
                "re-evaluate both runs with this codestage")
        return side_a, side_b, sorted(same), by, counts, [
            f"{task}: paired by position (items files without item_hash, from an older codestage); the gold answers "
            "agree item for item"]
    if differ and not common_only:
        raise DataError(
            f"compare: task {task}: the two sides are not the same items: {differ} differ ({counts['only_in_a']} only "
            f"in A, {counts['only_in_b']} only in B, {counts['conflicting']} with a different answer or id; "
            f"{len(same)} in common); pass --common-only to compare the common items")
    notes = []
    if differ:
        done = f"compared the {len(same)} items common to both sides" if same else "no items in common: not compared"
        notes.append(f"{task}: {done}; left out {counts['only_in_a']} only in A, {counts['only_in_b']} only in B, "
                     f"{counts['conflicting']} with a different answer or id")
    return side_a, side_b, sorted(same), by, counts, notes


def _point(x: np.ndarray, stat) -> float:
    rows = x[:, None] if x.ndim == 1 else x
    return 100.0 * float(np.asarray(stat(rows.sum(axis=0), rows.shape[0])))


def _scaled(result: dict) -> dict:
    return {**result, "diff": 100.0 * result["diff"], "ci95": [100.0 * v for v in result["ci95"]]}


def _per_item(runs: list[dict[int, dict]], ids: list[int], field: str, reduce: str = "mean") -> np.ndarray:
    """(items x ...) values of `field`, combined over the runs (seeds) of one side."""
    stacked = np.array([[np.asarray(r[i][field], dtype=np.float64) for i in ids] for r in runs], dtype=np.float64)
    return stacked.sum(axis=0) if reduce == "sum" else stacked.mean(axis=0)


def _gold_loss(rec: dict) -> tuple[float, float] | None:
    """(bits, bytes) of an item's gold answer; items files written before gold_bits existed carry
    the MBPP reference's `ref_logprob` (nats) and `ref_bytes` instead."""
    if has_loss(rec):
        return float(rec["gold_bits"]), float(rec["gold_bytes"])
    if rec.get("ref_logprob") is not None and (rec.get("ref_bytes") or 0) > 0:
        return -float(rec["ref_logprob"]) / np.log(2), float(rec["ref_bytes"])
    return None


def _bits_per_byte(side_a: list[dict], side_b: list[dict], ids: list, seed: int) -> dict | None:
    """Paired bits per byte A - B over the items every run of both sides scored; None when none did."""
    both = [i for i in ids if all(_gold_loss(r[i]) is not None for r in side_a + side_b)]
    if not both:
        return None

    def rows(side: list[dict]) -> np.ndarray:  # (items, 2): bits and bytes, each averaged over the side's seeds
        return np.mean([[_gold_loss(r[i]) for i in both] for r in side], axis=0)

    ra, rb = rows(side_a), rows(side_b)
    return {"a": float(ratio_stat(ra.sum(axis=0), len(both))), "b": float(ratio_stat(rb.sum(axis=0), len(both))),
            **paired_bootstrap(ra, rb, ratio_stat, seed=seed)}


def _splits(runs: list[list[tuple[int, dict]]]) -> set[str]:
    """The splits the item records of one side name (items files written before splits were recorded name none)."""
    return {rec["split"] for run in runs for _, rec in run if rec.get("split")}


def compare(items_a: Path | str | Sequence[Path | str], items_b: Path | str | Sequence[Path | str], *, seed: int = 0,
            common_only: bool = False) -> Comparison:
    """Per task: n paired items, A's and B's score (percent), A - B with 95% interval and p-value.
    Each side is one items file (or run folder), or a list of them, one per seed. Sides that are
    not the same items are refused (DataError) unless `common_only`; `notes` says what was left out."""
    list_a = [items_a] if isinstance(items_a, (str, Path)) else list(items_a)
    list_b = [items_b] if isinstance(items_b, (str, Path)) else list(items_b)
    if not list_a or len(list_a) != len(list_b):
        raise DataError(f"compare: give the same number of runs on both sides (got {len(list_a)} and {len(list_b)})")
    paths_a, paths_b = [_items_path(p) for p in list_a], [_items_path(p) for p in list_b]
    runs_a, runs_b = [read_items(p) for p in paths_a], [read_items(p) for p in paths_b]
    out: dict = {"a": [str(p) for p in paths_a], "b": [str(p) for p in paths_b], "seeds": len(list_a),
                 "common_only": common_only, "tasks": {}, "notes": []}
    if len(list_a) == 1:
        out["a"], out["b"] = out["a"][0], out["b"][0]
    tasks_a = set.intersection(*(set(r) for r in runs_a))
    tasks_b = set.intersection(*(set(r) for r in runs_b))
    out["unpaired_tasks"] = sorted(tasks_a ^ tasks_b)
    out["split_mismatch"] = {}
    if out["unpaired_tasks"]:
        out["notes"].append(f"tasks in only one side (not compared): {', '.join(out['unpaired_tasks'])}")
    for task in sorted(tasks_a & tasks_b):
        rows_a, rows_b = [r[task] for r in runs_a], [r[task] for r in runs_b]
        splits_a, splits_b = _splits(rows_a), _splits(rows_b)
        if len(splits_a | splits_b) > 1:
            out["split_mismatch"][task] = {"a": sorted(splits_a), "b": sorted(splits_b)}
            out["notes"].append(f"{task}: not compared, its items come from different splits "
                                f"(A: {', '.join(sorted(splits_a)) or 'unrecorded'}; B: {', '.join(sorted(splits_b)) or 'unrecorded'})")
            continue
        side_a, side_b, ids, paired_by, counts, notes = _pair(task, paths_a, paths_b, rows_a, rows_b, common_only)
        out["notes"] += notes
        if not ids:
            continue
        recs = [r[i] for r in side_a + side_b for i in ids]
        bpb = _bits_per_byte(side_a, side_b, ids, seed)
        split = next(iter(splits_a | splits_b), None)
        if all("bleu_stats" in r for r in recs) or all("correct" in r for r in recs):
            if all("bleu_stats" in r for r in recs):
                metric, field, reduce, stat = "bleu", "bleu_stats", "sum", bleu_statistic
            else:
                metric, field, reduce, stat = "accuracy", "correct", "mean", mean_stat
            xa, xb = _per_item(side_a, ids, field, reduce), _per_item(side_b, ids, field, reduce)
            entry = {"metric": metric, "split": split, "n": len(ids), "a": _point(xa, stat), "b": _point(xb, stat),
                     **_scaled(paired_bootstrap(xa, xb, stat, seed=seed)), "paired_by": paired_by, **counts}
        elif bpb is not None:  # nothing but the gold's bits per byte was scored (code tasks under --no-generate)
            entry = {"metric": "bits_per_byte", "split": split, **{k: bpb[k] for k in ("n", "a", "b", "diff", "ci95", "p_value")},
                     "paired_by": paired_by, **counts}
        else:
            out["notes"].append(f"{task}: not compared: its items carry no score both sides share")
            continue
        if all("passed" in r for r in recs):
            pa, pb = _per_item(side_a, ids, "passed"), _per_item(side_b, ids, "passed")
            entry["pass@1"] = {"a": 100.0 * pa.mean(), "b": 100.0 * pb.mean(), **_scaled(paired_bootstrap(pa, pb, seed=seed))}
        if all("gold_score" in r for r in recs):
            ga, gb = _per_item(side_a, ids, "gold_score"), _per_item(side_b, ids, "gold_score")
            entry["gold_logprob"] = {"a": float(ga.mean()), "b": float(gb.mean()), **paired_bootstrap(ga, gb, seed=seed)}
        if all("margin" in r for r in recs):
            ma, mb = _per_item(side_a, ids, "margin"), _per_item(side_b, ids, "margin")
            entry["margin"] = {"a": float(ma.mean()), "b": float(mb.mean()), **paired_bootstrap(ma, mb, seed=seed)}
        if bpb is not None:  # bits per byte of the gold answer (lower is better)
            entry["bits_per_byte"] = bpb
        out["tasks"][task] = entry
    return Comparison.from_json(out)
