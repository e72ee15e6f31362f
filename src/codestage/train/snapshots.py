"""Model snapshots at fractions of a run (train.snapshots): `run_dir/snapshots/step-NNNNNNNNN/`.

A snapshot is a plain Hugging Face model folder (weights, config, tokenizer) plus `snapshot.json`
(step, tokens seen, fraction, loss), written atomically, so anything that evaluates a model can
evaluate it; a ladder evaluates each run at its snapshots and its final model. Unlike checkpoints
they carry no optimizer state and are kept when the run ends. On a resume from step S the
snapshots after S are removed (training reaches them again and rewrites them), those up to S kept.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from codestage.atomic import atomic_dir

DIR = "snapshots"
RECORD = "snapshot.json"
_NAME = re.compile(r"^step-(\d{9})$")


@dataclass(frozen=True)
class Snapshot:
    step: int
    tokens: int
    fraction: float
    loss: float | None
    path: Path


def folder(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / DIR / f"step-{step:09d}"


def list_snapshots(run_dir: Path) -> list[Snapshot]:
    """Every complete snapshot of a run (its record written), by step."""
    root = Path(run_dir) / DIR
    found = []
    for p in sorted(root.iterdir()) if root.is_dir() else []:
        if _NAME.match(p.name) and (p / RECORD).is_file():
            rec = json.loads((p / RECORD).read_text(encoding="utf-8"))
            found.append(Snapshot(rec["step"], rec["tokens"], rec["fraction"], rec.get("loss"), p))
    return found


def prune_after(run_dir: Path, step: int) -> None:
    """Remove the snapshots after `step` (all of them for step 0) and leftovers of interrupted writes."""
    root = Path(run_dir) / DIR
    if not root.is_dir():
        return
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if (m and int(m.group(1)) > step) or (p.name.startswith(".") and p.name.endswith(".tmp")):
            shutil.rmtree(p, ignore_errors=True)


def write(run_dir: Path, step: int, tokens: int, fraction: float, loss: float | None,
          writer: Callable[[Path], None]) -> Path:
    """`writer(tmp)` fills the model folder; the record goes in last and the folder appears whole."""
    path = folder(run_dir, step)
    record = {"step": step, "tokens": tokens, "fraction": fraction, "loss": loss}
    with atomic_dir(path) as tmp:
        writer(tmp)
        (tmp / RECORD).write_text(json.dumps(record, indent=1), encoding="utf-8")
    return path
