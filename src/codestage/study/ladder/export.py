"""Ladder evaluations -> POINTS (`points.csv` and per-item files), the table `ladder fit` reads.

Each evaluation of a ladder checkpoint writes `ladder.json` beside its `results.json` and
`items.jsonl`: the run, arm, checkpoint (fraction, step), parameters and tokens seen. This module
reads any set of such folders (the `ladder/points` step's inputs, or every one under a study's
`ladder/eval/` for `codestage ladder points`) and writes one row per (checkpoint, task):

    arm, task, run, fraction, step, params, tokens, loss, accuracy, chance, n_items, items

`loss` is the bits per byte of the gold answer over the task's items (sum of bits / sum of bytes;
docs/evaluation.md, "Task losses"), `accuracy` the fraction of items answered correctly (MBPP: tests
passed, where programs were generated; empty where some checkpoint of the task has no per-item
correctness, e.g. MBPP without generation), and `items` a JSONL file of per-item
`{task, id, bits, bytes[, correct]}` so the fit's bootstrap can resample items. Rows and item
lines come from `eval/task_loss.py` (`points_row`, `points_items`), consistent by construction.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codestage.atomic import write_json, write_text
from codestage.errors import DataError
from codestage.eval.compare import read_items
from codestage.eval.task_loss import points_items, points_row
from codestage.results import EvalResults

RECORD = "ladder.json"
COLUMNS = ("arm", "task", "run", "fraction", "step", "params", "tokens", "loss", "accuracy", "chance", "n_items", "items")


def write_record(eval_dir: Path, info: dict[str, Any]) -> None:
    """`ladder.json` in an evaluation folder: which run and checkpoint it evaluated (see `checkpoint_info`)."""
    write_json(Path(eval_dir) / RECORD, info)


def find_evals(study_out: Path) -> list[Path]:
    """Every ladder evaluation folder of a study output (those holding a `ladder.json`), in order."""
    root = Path(study_out) / "ladder" / "eval"
    found = sorted(p.parent for p in root.glob(f"*/*/{RECORD}")) if root.is_dir() else []
    if not found:
        raise DataError(f"{study_out}: no ladder evaluations under {root} (run the study's ladder steps first: "
                        "`codestage run CONFIG --out OUT`)")
    return found


@dataclass
class _Row:
    info: dict[str, Any]
    task: str
    items: list[dict[str, Any]]   # POINTS per-item lines (eval/task_loss.points_items)
    values: dict[str, Any]        # loss, accuracy, n_items (eval/task_loss.points_row)
    chance: float | None
    dropped: int


def _read_eval(eval_dir: Path) -> list[_Row]:
    try:
        info = json.loads((eval_dir / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{eval_dir / RECORD}: cannot read the ladder record ({exc})") from None
    results = EvalResults.read(eval_dir / "results.json")
    by_task = {task: [rec for _, rec in recs] for task, recs in read_items(eval_dir).items()}
    rows = []
    for task, result in results.tasks.items():
        if result.value is None and result.bits_per_byte is None:
            continue  # the task's data is missing (results.json says why); nothing to fit
        recs = [{**r, "task": task} for r in by_task.get(task, [])]
        items = points_items(recs)
        if not items:
            raise DataError(f"{eval_dir}/items.jsonl: task {task!r} has no item with gold_bits and gold_bytes (bits per "
                            "byte of the gold answer); evaluate with a codestage that writes them")
        chance = None if result.chance is None else result.chance / 100.0
        rows.append(_Row(info, task, items, points_row(recs), chance, dropped=len(recs) - len(items)))
    return rows


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.10g}"


def export_points(eval_dirs: list[Path], out_csv: Path) -> dict[str, Any]:
    """Write `out_csv` (POINTS) and its per-item files under `items/` beside it; return a summary."""
    out_csv = Path(out_csv)
    rows = [row for d in eval_dirs for row in _read_eval(Path(d))]
    if not rows:
        raise DataError(f"no task results in {len(eval_dirs)} ladder evaluation folders")
    # per-item correctness goes into a task's items only where every row of the task has it (the fit's rule)
    correct_everywhere = {t: all(r.values["accuracy"] is not None for r in rows if r.task == t) for t in {r.task for r in rows}}
    files: dict[Path, list[dict[str, Any]]] = defaultdict(list)
    table = io.StringIO()
    table.write("# params_kind: non_embedding\n")
    w = csv.writer(table, lineterminator="\n")
    w.writerow(COLUMNS)
    dropped: dict[str, int] = defaultdict(int)
    for r in rows:
        info = r.info
        rel = Path("items") / info["run"] / f"{info['checkpoint']}.jsonl"
        items = r.items if correct_everywhere[r.task] else [{k: v for k, v in it.items() if k != "correct"} for it in r.items]
        files[out_csv.parent / rel].extend(items)
        acc = r.values["accuracy"] if correct_everywhere[r.task] else None
        w.writerow([info["arm"], r.task, info["run"], _fmt(info["fraction"]), info["step"], info["params"], info["tokens"],
                    _fmt(r.values["loss"]), _fmt(acc), _fmt(r.chance), r.values["n_items"], rel.as_posix()])
        dropped[r.task] = max(dropped[r.task], r.dropped)
    for path, items in files.items():
        write_text(path, "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items))
    write_text(out_csv, table.getvalue())
    return {"points": str(out_csv), "rows": len(rows), "evaluations": len(eval_dirs),
            "tasks": sorted(correct_everywhere), "items_without_loss": {t: n for t, n in dropped.items() if n},
            "accuracy_per_item": sorted(t for t, ok in correct_everywhere.items() if ok)}


__all__ = ["COLUMNS", "RECORD", "export_points", "find_evals", "write_record"]
