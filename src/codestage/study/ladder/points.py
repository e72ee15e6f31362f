"""POINTS: the table a ladder fit reads (CSV or JSONL), validated row by row.

One row per evaluated model (a run, or one checkpoint of a run) and task:

    arm, task, params, tokens, loss          required
    accuracy, chance                          optional: step 2 (accuracy as a fraction in [0, 1])
    run, step | checkpoint | fraction         optional: checkpoints of one run (predictability, step 2)
    n_items                                   optional: how many items the loss/accuracy average
    items | item_losses | item_bits + item_bytes, item_correct
                                              optional: per-item data, for the bootstrap over items
    params_kind                               optional: non_embedding (default) or total

`params` counts non-embedding parameters unless the file says `total` (a `params_kind` column or a
`# params_kind: total` comment line at the top). `tokens` is the tokens seen at that row (for a
checkpoint: so far). Leading `# key: value` lines are file-level settings; other columns are ignored
(and listed in the fit's inputs). Every problem is a `DataError` naming the file, line and column.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codestage.errors import DataError
from codestage.hashing import sha256_file
from codestage.relpaths import recorded
from codestage.resources import DATA_DIR

REQUIRED = ("arm", "task", "params", "tokens", "loss")
OPTIONAL = ("accuracy", "chance", "run", "step", "checkpoint", "fraction", "n_items", "params_kind",
            "items", "item_losses", "item_bits", "item_bytes", "item_correct")
PARAMS_KINDS = ("non_embedding", "total")
EXAMPLE_POINTS = DATA_DIR.parent / "ladder" / "chinchilla_besiroglu2024.csv"  # a published ladder (SOURCE.md beside it)
_REL_TOL = 1e-4  # a row's loss/accuracy against the mean of its per-item values (rounded CSV cells)


@dataclass(frozen=True)
class ItemData:
    """Per-item values of one task, rows aligned: `rows` are indices into the Points arrays."""

    rows: np.ndarray            # (r,) row indices into Points
    ids: tuple[str, ...]        # item ids in column order
    num: np.ndarray             # (r, n) per-item loss, or bits when `den` is given
    den: np.ndarray | None      # (r, n) per-item bytes: loss = sum(bits) / sum(bytes)
    correct: np.ndarray | None  # (r, n) per-item correctness (0/1 or a fraction)

    def losses(self, counts: np.ndarray) -> np.ndarray:
        """(B, r) row losses under item resamples given as (B, n) counts."""
        if self.den is None:
            return counts @ self.num.T / counts.sum(axis=1, keepdims=True)
        return (counts @ self.num.T) / (counts @ self.den.T)

    def accuracies(self, counts: np.ndarray) -> np.ndarray | None:
        if self.correct is None:
            return None
        return counts @ self.correct.T / counts.sum(axis=1, keepdims=True)


@dataclass
class Points:
    """The validated table, as column arrays (one entry per row)."""

    path: Path
    sha256: str
    params_kind: str
    arm: np.ndarray
    task: np.ndarray
    run: np.ndarray
    params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray        # NaN where absent
    order: np.ndarray           # checkpoint order within a run (step, fraction or tokens)
    final: np.ndarray           # bool: the run's last evaluated checkpoint
    line: np.ndarray            # source line of each row
    n_items: np.ndarray         # NaN where absent
    chance: dict[str, float | None]
    items: dict[str, ItemData] = field(default_factory=dict)
    item_files: dict[str, str] = field(default_factory=dict)   # path -> sha256
    has_runs: bool = False
    has_checkpoints: bool = False
    ignored_columns: tuple[str, ...] = ()

    @property
    def arms(self) -> list[str]:
        return sorted(set(self.arm.tolist()))

    @property
    def tasks(self) -> list[str]:
        return sorted(set(self.task.tolist()))

    def where(self, arm: str | None = None, task: str | None = None) -> np.ndarray:
        mask = np.ones(len(self.arm), dtype=bool)
        if arm is not None:
            mask &= self.arm == arm
        if task is not None:
            mask &= self.task == task
        return np.flatnonzero(mask)

    def where_str(self, idx: np.ndarray) -> str:
        lines = sorted(int(x) for x in self.line[idx])
        return f"{self.path.name}: lines {', '.join(map(str, lines[:6]))}{' ...' if len(lines) > 6 else ''}"


class _Row(dict):
    """A raw row plus where it came from."""

    line: int


def _err(path: Path, line: int, column: str | None, msg: str) -> DataError:
    where = f"{path}: line {line}" + (f", column '{column}'" if column else "")
    return DataError(f"{where}: {msg}")


def _read_settings(lines: list[str]) -> tuple[dict[str, str], int]:
    """Leading `# key: value` lines; returns the settings and the index of the first other line."""
    settings: dict[str, str] = {}
    i = 0
    while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
        text = lines[i].lstrip()[1:].strip() if lines[i].strip() else ""
        if ":" in text:
            key, _, value = text.partition(":")
            settings[key.strip()] = value.strip()
        i += 1
    return settings, i


def _read_csv(path: Path, text: str) -> tuple[list[_Row], list[str], dict[str, str], str]:
    lines = text.splitlines()
    settings, start = _read_settings(lines)
    reader = csv.reader(lines[start:])
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DataError(f"{path}: no header line (expected columns {', '.join(REQUIRED)})") from None
    rows: list[_Row] = []
    for values in reader:
        line = start + reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise _err(path, line, None, f"{len(values)} fields, the header has {len(header)}")
        row = _Row({h: v.strip() for h, v in zip(header, values) if v.strip() != ""})
        row.line = line
        rows.append(row)
    return rows, header, settings, f"line {start + 1}"


def _read_jsonl(path: Path, text: str) -> tuple[list[_Row], list[str], dict[str, str], str]:
    lines = text.splitlines()
    settings, start = _read_settings(lines)
    rows: list[_Row] = []
    columns: list[str] = []
    for i in range(start, len(lines)):
        raw = lines[i].strip()
        if not raw or raw.startswith("#"):
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _err(path, i + 1, None, f"malformed JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise _err(path, i + 1, None, f"expected a JSON object, got {type(obj).__name__}")
        row = _Row({k: v for k, v in obj.items() if v is not None and v != ""})
        row.line = i + 1
        rows.append(row)
        columns.extend(k for k in obj if k not in columns)
    return rows, columns, settings, "no row has it"


def _number(path: Path, row: _Row, column: str, *, positive: bool = False, unit: bool = False) -> float:
    raw = row[column]
    if isinstance(raw, bool):
        raise _err(path, row.line, column, f"{raw!r} is not a number")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise _err(path, row.line, column, f"{raw!r} is not a number") from None
    if not math.isfinite(value):
        raise _err(path, row.line, column, f"{raw!r} is not finite")
    if positive and value <= 0:
        raise _err(path, row.line, column, f"must be > 0, got {raw!r}")
    if unit and not 0.0 <= value <= 1.0:
        hint = " (a percentage? give fractions: divide by 100)" if 1.0 < value <= 100.0 else ""
        raise _err(path, row.line, column, f"must be a fraction in [0, 1], got {raw!r}{hint}")
    return value


def _number_list(path: Path, row: _Row, column: str, *, unit: bool = False) -> np.ndarray:
    raw = row[column]
    if not isinstance(raw, list) or not raw:
        raise _err(path, row.line, column, "expected a non-empty JSON array of numbers")
    try:
        values = np.array([float(x) for x in raw], dtype=np.float64)
    except (TypeError, ValueError):
        raise _err(path, row.line, column, "expected a JSON array of numbers") from None
    if not np.all(np.isfinite(values)):
        raise _err(path, row.line, column, "has a non-finite value")
    if unit and (values.min() < 0 or values.max() > 1):
        raise _err(path, row.line, column, "values must lie in [0, 1]")
    return values


def _items_file(path: Path, row: _Row, task: str, cache: dict[Path, tuple[str, dict]]) -> dict[str, dict[str, float]]:
    """Per-item values for `task` from the JSONL file named in the row's `items` column."""
    file = Path(str(row["items"]))
    file = file if file.is_absolute() else path.parent / file
    if file not in cache:
        if not file.is_file():
            raise _err(path, row.line, "items", f"no such file: {file}")
        by_task: dict[str, dict[str, dict[str, float]]] = {}
        for n, raw in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise DataError(f"{file}: line {n}: malformed JSON ({exc.msg})") from None
            if not isinstance(rec, dict) or "id" not in rec:
                raise DataError(f"{file}: line {n}: expected an object with an 'id'")
            values: dict[str, float] = {}
            for key in ("loss", "bits", "bytes", "correct"):
                if key in rec and rec[key] is not None:
                    v = rec[key]
                    if isinstance(v, bool):
                        v = float(v)
                    if not isinstance(v, (int, float)) or not math.isfinite(float(v)):
                        raise DataError(f"{file}: line {n}, field '{key}': {v!r} is not a finite number")
                    values[key] = float(v)
            if ("loss" in values) == ("bits" in values and "bytes" in values):
                raise DataError(f"{file}: line {n}: give 'loss', or 'bits' and 'bytes' (not both)")
            if "bytes" in values and values["bytes"] <= 0:
                raise DataError(f"{file}: line {n}, field 'bytes': must be > 0")
            item_task = str(rec.get("task", ""))
            item_id = str(rec["id"])
            bucket = by_task.setdefault(item_task, {})
            if item_id in bucket:
                raise DataError(f"{file}: line {n}: item id {item_id!r} repeats")
            bucket[item_id] = values
        cache[file] = (sha256_file(file), by_task)
    by_task = cache[file][1]
    found = by_task.get(task) or by_task.get("")
    if not found:
        raise _err(path, row.line, "items", f"{file} has no items for task {task!r}")
    return found


def _item_data(path: Path, task: str, rows: list[_Row], index: list[int], losses: np.ndarray, accs: np.ndarray,
               cache: dict[Path, tuple[str, dict]]) -> ItemData | None:
    """Align the per-item values of every row of one task; None when no row has any."""
    kinds = ["items" if "items" in r else "arrays" if any(k in r for k in ("item_losses", "item_bits", "item_correct"))
             else None for r in rows]
    if not any(kinds):
        return None
    missing = [r.line for r, k in zip(rows, kinds) if k is None]
    if missing:
        raise _err(path, missing[0], None, f"task {task!r}: other rows carry per-item data, this one has none "
                   "(give it for every row of a task or for none)")
    nums, dens, cors = [], [], []
    ids: tuple[str, ...] | None = None
    for r, kind in zip(rows, kinds):
        if kind == "items":
            per = _items_file(path, r, task, cache)
            row_ids = tuple(sorted(per))
            if ids is None:
                ids = row_ids
            elif row_ids != ids:
                raise _err(path, r.line, "items", f"task {task!r}: item ids differ from line {rows[0].line}'s "
                           f"({len(row_ids)} vs {len(ids)} items); every row of a task needs the same items")
            vals = [per[i] for i in ids]
            if "loss" in vals[0]:
                nums.append(np.array([v.get("loss", np.nan) for v in vals])); dens.append(None)
            else:
                nums.append(np.array([v.get("bits", np.nan) for v in vals]))
                dens.append(np.array([v.get("bytes", np.nan) for v in vals]))
            cor = [v.get("correct") for v in vals]
            cors.append(None if all(c is None for c in cor) else np.array([np.nan if c is None else c for c in cor]))
        else:
            if "item_losses" in r and ("item_bits" in r or "item_bytes" in r):
                raise _err(path, r.line, "item_losses", "give item_losses, or item_bits and item_bytes (not both)")
            if "item_losses" in r:
                nums.append(_number_list(path, r, "item_losses")); dens.append(None)
            elif "item_bits" in r and "item_bytes" in r:
                nums.append(_number_list(path, r, "item_bits")); dens.append(_number_list(path, r, "item_bytes"))
                if len(dens[-1]) != len(nums[-1]) or dens[-1].min() <= 0:
                    raise _err(path, r.line, "item_bytes", "needs one positive value per item_bits value")
            else:
                raise _err(path, r.line, None, "per-item data needs item_losses (or item_bits and item_bytes)")
            cors.append(_number_list(path, r, "item_correct", unit=True) if "item_correct" in r else None)
            n = len(nums[-1])
            row_ids = tuple(str(i) for i in range(n))
            if ids is None:
                ids = row_ids
            elif len(row_ids) != len(ids):
                raise _err(path, r.line, "item_losses", f"task {task!r}: {n} items, line {rows[0].line} has {len(ids)}")
        if cors[-1] is not None and len(cors[-1]) != len(nums[-1]):
            raise _err(path, r.line, "item_correct", "needs one value per item")
    if any(np.isnan(x).any() for x in nums) or any(d is not None and np.isnan(d).any() for d in dens):
        raise DataError(f"{path}: task {task!r}: an item lacks its loss (or bits/bytes) in some row")
    if len({d is None for d in dens}) > 1:
        raise DataError(f"{path}: task {task!r}: mixes per-item losses with bits/bytes; use one form")
    has_cor = [c is not None for c in cors]
    if any(has_cor) and not all(has_cor):
        raise DataError(f"{path}: task {task!r}: per-item correctness is given for some rows only")
    num = np.vstack(nums)
    den = None if dens[0] is None else np.vstack(dens)
    cor = np.vstack(cors) if all(has_cor) else None
    if cor is not None and np.isnan(cor).any():
        raise DataError(f"{path}: task {task!r}: an item lacks 'correct' in some row")
    data = ItemData(np.array(index), ids or (), num, den, cor)
    ones = np.ones((1, num.shape[1]))
    agg_loss = data.losses(ones)[0]
    for r, want, got in zip(rows, losses, agg_loss):
        if not math.isclose(want, got, rel_tol=_REL_TOL, abs_tol=1e-9):
            raise _err(path, r.line, "loss", f"{want:g} is not the mean of its per-item values ({got:g})")
    agg_acc = data.accuracies(ones)
    if agg_acc is not None:
        for r, want, got in zip(rows, accs, agg_acc[0]):
            if np.isnan(want):
                raise _err(path, r.line, "accuracy", "missing, though the row has per-item correctness")
            if not math.isclose(want, got, rel_tol=_REL_TOL, abs_tol=1e-6):
                raise _err(path, r.line, "accuracy", f"{want:g} is not the mean of its per-item correctness ({got:g})")
    return data


def load_points(path: Path | str) -> Points:
    """Read and validate a POINTS file (.csv or .jsonl); raise DataError naming file/line/column."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such POINTS file")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise DataError(f"{path}: POINTS must be .csv or .jsonl, got {suffix or 'no extension'!r}")
    text = path.read_text(encoding="utf-8")
    rows, columns, settings, header_at = (_read_csv if suffix == ".csv" else _read_jsonl)(path, text)
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        where = f"{header_at}: " if header_at.startswith("line") else ""
        why = "" if where else f" ({header_at})"
        raise DataError(f"{path}: {where}missing column{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(repr(c) for c in missing)}{why} (have: {', '.join(columns) or 'none'})")
    if not rows:
        raise DataError(f"{path}: no rows")
    ignored = tuple(c for c in columns if c not in REQUIRED and c not in OPTIONAL)

    kinds = {settings["params_kind"]} if "params_kind" in settings else set()
    for r in rows:
        for c in REQUIRED:
            if c not in r:
                raise _err(path, r.line, c, "empty")
        if "params_kind" in r:
            kinds.add(str(r["params_kind"]))
    bad = kinds - set(PARAMS_KINDS)
    if bad:
        raise DataError(f"{path}: params_kind {sorted(bad)[0]!r} is not one of {', '.join(PARAMS_KINDS)}")
    if len(kinds) > 1:
        raise DataError(f"{path}: params_kind mixes {' and '.join(sorted(kinds))}; one file, one kind of parameter count")
    params_kind = kinds.pop() if kinds else "non_embedding"

    has_runs = "run" in columns
    ckpt_col = next((c for c in ("step", "checkpoint", "fraction") if c in columns), None)
    if ckpt_col and not has_runs:
        raise DataError(f"{path}: column '{ckpt_col}' needs a 'run' column to group the checkpoints of a run")

    n = len(rows)
    arm = np.array([str(r["arm"]).strip() for r in rows], dtype=object)
    task = np.array([str(r["task"]).strip() for r in rows], dtype=object)
    run = np.array([str(r["run"]).strip() if "run" in r else f"line{r.line}" for r in rows], dtype=object)
    if has_runs:
        for r in rows:
            if "run" not in r:
                raise _err(path, r.line, "run", "empty")
    params = np.array([_number(path, r, "params", positive=True) for r in rows])
    tokens = np.array([_number(path, r, "tokens", positive=True) for r in rows])
    loss = np.array([_number(path, r, "loss", positive=True) for r in rows])
    accuracy = np.array([_number(path, r, "accuracy", unit=True) if "accuracy" in r else np.nan for r in rows])
    n_items = np.array([_number(path, r, "n_items", positive=True) if "n_items" in r else np.nan for r in rows])
    line = np.array([r.line for r in rows])
    if ckpt_col:
        for r in rows:
            if ckpt_col not in r:
                raise _err(path, r.line, ckpt_col, "empty (every row of a file with checkpoints needs one)")
        order = np.array([_number(path, r, ckpt_col, positive=ckpt_col == "fraction") for r in rows])
        if ckpt_col == "fraction" and order.max() > 1.0:
            i = int(np.argmax(order))
            raise _err(path, rows[i].line, "fraction", f"must be in (0, 1], got {order[i]:g}")
    else:
        order = tokens.copy()

    seen: dict[tuple, int] = {}
    for i, r in enumerate(rows):
        key = (arm[i], task[i], run[i], order[i]) if has_runs else (arm[i], task[i], params[i], tokens[i])
        if key in seen:
            what = (f"arm {arm[i]}, task {task[i]}, run {run[i]}" + (f", {ckpt_col} {order[i]:g}" if ckpt_col else "")
                    if has_runs else f"arm {arm[i]}, task {task[i]}, params {params[i]:g}, tokens {tokens[i]:g}")
            raise _err(path, r.line, None, f"duplicate row: repeats line {seen[key]} ({what})")
        seen[key] = r.line

    final = np.zeros(n, dtype=bool)
    run_params: dict[tuple[str, str], tuple[float, int]] = {}
    for i in range(n):
        first = run_params.setdefault((arm[i], run[i]), (params[i], line[i]))
        if first[0] != params[i]:
            raise _err(path, line[i], "params", f"arm {arm[i]}, run {run[i]!r} has params {first[0]:g} at line "
                       f"{first[1]}; one run, one model size")
    groups: dict[tuple, list[int]] = {}
    for i in range(n):
        groups.setdefault((arm[i], task[i], run[i]), []).append(i)
    for idx in groups.values():
        idx.sort(key=lambda i: order[i])
        final[idx[-1]] = True
        toks = tokens[idx]
        if np.any(np.diff(toks) <= 0):
            j = idx[int(np.argmax(np.diff(toks) <= 0)) + 1]
            raise _err(path, line[j], "tokens", f"run {run[j]!r}: tokens must grow from one checkpoint to the next")
    has_checkpoints = any(len(idx) > 1 for idx in groups.values())

    chance: dict[str, float | None] = {}
    for t in sorted(set(task.tolist())):
        values = {(_number(path, r, "chance", unit=True), r.line) for r, tt in zip(rows, task) if tt == t and "chance" in r}
        distinct = {v for v, _ in values}
        if len(distinct) > 1:
            raise DataError(f"{path}: task {t!r}: chance differs between rows ({', '.join(f'{v:g}' for v in sorted(distinct))})")
        chance[t] = distinct.pop() if distinct else None

    cache: dict[Path, tuple[str, dict]] = {}
    items: dict[str, ItemData] = {}
    for t in sorted(set(task.tolist())):
        index = [i for i in range(n) if task[i] == t]
        data = _item_data(path, t, [rows[i] for i in index], index, loss[index], accuracy[index], cache)
        if data is not None:
            items[t] = data
    return Points(path=path, sha256=sha256_file(path), params_kind=params_kind, arm=arm, task=task, run=run,
                  params=params, tokens=tokens, loss=loss, accuracy=accuracy, order=order, final=final, line=line,
                  n_items=n_items, chance=chance, items=items,
                  item_files={str(p): h for p, (h, _) in cache.items()}, has_runs=has_runs,
                  has_checkpoints=has_checkpoints, ignored_columns=ignored)


def describe(points: Points, folder: Path | None = None) -> dict[str, Any]:
    """The inputs block of fit.json; with `folder` (fit.json's), its paths relative to that folder."""
    where = (lambda f: recorded(f, folder)) if folder is not None else str
    return {"points": where(points.path), "sha256": points.sha256, "rows": int(len(points.arm)),
            "params_kind": points.params_kind, "arms": points.arms, "tasks": points.tasks,
            "runs": points.has_runs, "checkpoints": points.has_checkpoints,
            "item_level_tasks": sorted(points.items),
            "item_files": {where(f): h for f, h in points.item_files.items()},
            "ignored_columns": list(points.ignored_columns)}
