"""A study's warnings for the end of `codestage run` / `demo`: records its stores dropped,
instruction examples skipped, and every evaluation's caveats (`eval/caveats.py`), each once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from codestage.errors import DataError
from codestage.eval.caveats import eval_caveats
from codestage.results import EvalResults

if TYPE_CHECKING:
    from codestage.study.runner import StudyRun


def _read(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def store_caveat(name: str, manifest: Mapping[str, Any]) -> str | None:
    """'store NAME: N of M records dropped (reason n, ...)', or None when nothing was dropped."""
    dropped = manifest.get("dropped") or {}
    if not dropped:
        return None
    reasons = ", ".join(f"{k} {v:,}" for k, v in dropped.items())
    return f"store {name}: {sum(dropped.values()):,} of {manifest.get('records', '?'):,} records dropped ({reasons})"


def study_caveats(store_dirs: Mapping[str, Path], runs: Mapping[str, StudyRun]) -> list[str]:
    """Caveats of a study's stores (name -> folder) and runs (`Study.run_table()`), in that order."""
    lines: list[str] = []
    for name, folder in store_dirs.items():
        manifest = _read(Path(folder) / "manifest.json")
        line = store_caveat(name, manifest) if manifest else None
        if line:
            lines.append(line)
    for run in runs.values():
        sets = _read(run.dir / "instruction_sets.json") or {}
        for name, rep in sets.items():
            if isinstance(rep, dict) and rep.get("skipped_empty_answer"):
                lines.append(f"instruction set {name}: {rep['skipped_empty_answer']} examples with an empty answer skipped")
    for run in runs.values():
        path = run.eval_dir / "results.json"
        if path.is_file():
            try:
                lines += eval_caveats(EvalResults.read(path))
            except DataError:
                continue  # an unreadable evaluation is the report's to state, not a warning's
    return list(dict.fromkeys(lines))


__all__ = ["store_caveat", "study_caveats"]
