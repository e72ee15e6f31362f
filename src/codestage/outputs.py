"""Output paths: codestage never replaces or overwrites what it did not write, nor writes over an input.

Every command that writes calls `check_output` before it reads anything big. An output that does
not exist, or an empty folder, is always fine. An existing one is accepted only when it is
recognisably codestage's own output of the same kind (by the marker or manifest that kind writes);
anything else is refused with a message saying what was found and what to do, and nothing is
touched. There is deliberately no flag to override this: deleting a folder codestage did not make
is the user's own act. An output may also never be an input, lie inside an input folder, or (for
outputs that replace a whole folder, and study folders) contain an input.

| Kind | What is written | Recognised as ours by |
|---|---|---|
| token store (`data build`, `data merge`) | the folder, replaced as a whole | `manifest.json` with a store's fields |
| decontamination copies (`data decontam --drop-out`) | the folder, replaced as a whole | `decontam.json` |
| evaluation folder (`eval --out`) | `results.json`, `items.jsonl` inside it | those files are an evaluation's (other files are left alone) |
| study folder (`run`, `demo`, `pretrain --out`) | step folders inside it, replaced per step | `.codestage-study.json` (written on first use), or a finished step's `.step.json` |
| lm-eval export (`tasks export-lm-eval`) | `README.md`, `utils.py`, task YAMLs, `data/` | our `README.md` heading |
| JSON reports (`compare --json`, `data decontam --report`) | the file | a JSON object with that report's fields |
"""

from __future__ import annotations

import glob
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from codestage.errors import ConfigError

STUDY_MARKER = ".codestage-study.json"
LMEVAL_README_HEAD = "# codestage tasks for lm-evaluation-harness"


def _json_object(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _has_keys(path: Path, keys: Iterable[str]) -> bool:
    obj = _json_object(path)
    return obj is not None and all(k in obj for k in keys)


def _first_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline(1 << 16)
    except OSError:
        return ""


def _is_store(folder: Path) -> bool:
    return _has_keys(folder / "manifest.json", ("source", "documents", "tokens", "dtype"))


def _is_drop_out(folder: Path) -> bool:
    return _has_keys(folder / "decontam.json", ("n", "tasks", "sources"))


def _eval_files_ours(folder: Path) -> bool:
    """Nothing an evaluation would overwrite (results.json, items.jsonl) is someone else's."""
    results, items = folder / "results.json", folder / "items.jsonl"
    if results.exists() and not _has_keys(results, ("protocol", "shots", "tasks")):
        return False
    if items.exists():
        try:
            first = json.loads(_first_line(items) or "{}")
        except ValueError:
            return False
        if first and not (isinstance(first, dict) and "task" in first and "doc_id" in first):
            return False
    return True


def _is_study(folder: Path) -> bool:
    if (folder / STUDY_MARKER).is_file():
        return True
    # a study folder from before the marker: a finished step's marker one or two levels down
    return any(folder.glob(".step.json")) or any(folder.glob("*/.step.json")) or any(folder.glob("*/*/.step.json"))


def _lmeval_ours(folder: Path) -> bool:
    readme = folder / "README.md"
    if readme.exists():
        return _first_line(readme).strip() == LMEVAL_README_HEAD
    return not any((folder / n).exists() for n in ("utils.py", "data")) and not any(folder.glob("codestage_*.yaml"))


@dataclass(frozen=True)
class OutputKind:
    """What a command writes at its output path and how an existing one is recognised as ours."""

    name: str
    folder: bool  # a folder (True) or a single file (False)
    replaces: bool  # the whole path is replaced (True), or named files are written inside it (False)
    ours: Callable[[Path], bool]
    sign: str  # what "ours" looks like, for the message


STORE = OutputKind("token store", True, True, _is_store, "a manifest.json with a store's fields")
DROP_OUT = OutputKind("folder of decontaminated copies", True, True, _is_drop_out, "a decontam.json")
EVAL = OutputKind("evaluation folder", True, False, _eval_files_ours,
                  "its results.json / items.jsonl are an evaluation's")
STUDY = OutputKind("study folder", True, False, _is_study, f"a {STUDY_MARKER} or a finished step's .step.json")
LMEVAL = OutputKind("lm-eval task export", True, False, _lmeval_ours, f"a README.md starting {LMEVAL_README_HEAD!r}")
COMPARE_JSON = OutputKind("comparison JSON", False, True, lambda p: _has_keys(p, ("a", "b", "seeds", "tasks")),
                          "a JSON object with a, b, seeds and tasks")
DECONTAM_REPORT = OutputKind("decontamination report", False, True, lambda p: _has_keys(p, ("n", "tasks", "sources")),
                             "a JSON object with n, tasks and sources")


def _resolved_inputs(inputs: Iterable[str | Path | None], base: Path | None) -> list[Path]:
    out: list[Path] = []
    for raw in inputs:
        if raw is None:
            continue
        text = str(raw)
        if text.startswith("hf:"):  # a hub name, or a local saved dataset (`hf:DIR[:SPLIT]`)
            text = text[3:]
            if not Path(text).exists():
                text = text.rpartition(":")[0] or text
        p = Path(text)
        if base is not None and not p.is_absolute():
            p = base / p
        if set("*?[") & set(text):
            out.extend(Path(m).resolve() for m in glob.glob(str(p), recursive=True))
        elif p.exists():
            out.append(p.resolve())
    return out


def _inside(child: Path, parent: Path) -> bool:
    return child != parent and child.is_relative_to(parent)


def check_output(path: Path | str, kind: OutputKind, *, inputs: Iterable[str | Path | None] = (),
                 base: Path | None = None, option: str = "--out") -> Path:
    """Refuse (ConfigError) an output that would replace or overwrite something codestage did not
    write, or that overlaps an input; return the path. `inputs` may hold files, folders, globs and
    `hf:` names (relative ones against `base`); `option` names the argument in the message."""
    given = Path(path)
    out = given.resolve()
    for q in _resolved_inputs(inputs, base):
        if out == q:
            raise ConfigError(f"{option} {given}: is also an input of this command; write the {kind.name} elsewhere")
        if _inside(out, q):
            raise ConfigError(f"{option} {given}: lies inside the input {q}; write the {kind.name} elsewhere")
        if (kind.replaces or kind is STUDY) and _inside(q, out):
            raise ConfigError(f"{option} {given}: contains the input {q}, which writing the {kind.name} could "
                              "replace; write it elsewhere or move the input out of it")
    if not out.exists() and not given.is_symlink():
        return given
    if kind.folder and not out.is_dir():
        raise ConfigError(f"{option} {given}: exists and is a file, not a {kind.name}; choose another path "
                          "(codestage does not replace what it did not write)")
    if not kind.folder and out.is_dir():
        raise ConfigError(f"{option} {given}: is a folder; give a file path for the {kind.name}")
    if kind.folder and not any(out.iterdir()):
        return given
    if not kind.ours(out):
        what = "replace it" if kind.replaces else "write into it"
        raise ConfigError(f"{option} {given}: exists and is not a codestage {kind.name} ({kind.sign}); codestage "
                          f"will not {what}: choose another path, or move or remove it yourself")
    return given


def mark_study(out: Path | str) -> None:
    """Claim a study folder (after `check_output(..., STUDY)`), so a cut-off first run is still ours."""
    from codestage import __version__
    from codestage.atomic import write_json

    marker = Path(out) / STUDY_MARKER
    if not marker.is_file():
        write_json(marker, {"kind": "codestage study", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                            "codestage_version": __version__})


def study_inputs(cfg: Any) -> list[str]:
    """Every data path a study config reads (relative to `cfg.base_dir`): sources, instruction
    sets, held-out documents, the evaluation data, a given tokenizer and an initial model."""
    paths = [p for s in cfg.sources.values() for p in s.paths]
    paths += [p for s in cfg.instruct.sets.values() for p in s.paths]
    paths += [p for h in cfg.eval.heldout.values() for p in h.paths]
    paths += [p for p in (cfg.eval.data_dir, cfg.tokenizer.path, cfg.model.init_from) if p]
    return paths


def check_study_output(cfg: Any, out: Path | str) -> None:
    """`check_output` for a study folder against the config's inputs, then claim the folder."""
    check_output(out, STUDY, inputs=study_inputs(cfg), base=cfg.base_dir)
    mark_study(out)


__all__ = ["OutputKind", "STORE", "DROP_OUT", "EVAL", "STUDY", "LMEVAL", "COMPARE_JSON", "DECONTAM_REPORT",
           "check_output", "check_study_output", "mark_study", "study_inputs"]
