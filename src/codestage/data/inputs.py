"""What a source's paths mean: a flat, sorted list of input files, each with its reader kind.

A build, each of its shards and a merge must agree on this list exactly (documents are ordered by
their (file index, record) pair), so it depends only on the paths and the file system, never on
the shard or worker count. A directory contributes its files in sorted walk order; a Hugging Face
dataset (`hf:NAME[:SPLIT]` or a `save_to_disk` folder) is one input file whose records are rows.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

from codestage.errors import DataError

CODE_EXTENSIONS: dict[str, str] = {
    ".py": "Python", ".pyi": "Python", ".pyx": "Cython", ".pxd": "Cython",
    ".c": "C", ".h": "C", ".cc": "C++", ".cpp": "C++", ".cxx": "C++", ".hpp": "C++", ".hh": "C++",
    ".java": "Java", ".kt": "Kotlin", ".scala": "Scala", ".go": "Go", ".rs": "Rust",
    ".js": "JavaScript", ".mjs": "JavaScript", ".jsx": "JavaScript", ".ts": "TypeScript", ".tsx": "TypeScript",
    ".rb": "Ruby", ".php": "PHP", ".lua": "Lua", ".sh": "Shell", ".bash": "Shell", ".swift": "Swift",
    ".cs": "C#", ".m": "Objective-C", ".r": "R", ".jl": "Julia", ".hs": "Haskell", ".sql": "SQL",
}
DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet", ".txt", ".txt.gz")
_GLOB_CHARS = set("*?[")

Kind = Literal["jsonl", "parquet", "txt", "code", "hf", "other"]
HF_PREFIX = "hf:"


@dataclass(frozen=True)
class InputFile:
    """One file (or HF dataset) to read; `input` names the user-given path it came from."""

    path: str
    kind: Kind
    input: str
    language: str | None = None


def suffix(path: Path) -> str:
    """The format suffix, compound ones (`.jsonl.gz`) included."""
    name = path.name.lower()
    for suf in DATA_SUFFIXES:
        if name.endswith(suf):
            return suf
    return path.suffix.lower()


def language_of(path: str) -> str | None:
    """The programming language a file name's extension implies, if any."""
    return CODE_EXTENSIONS.get(os.path.splitext(path)[1].lower())


def expand_paths(paths: Iterable[str | Path], *, base: Path | None = None) -> list[Path]:
    """Resolve files, directories and glob patterns (relative to `base`) to existing paths."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if base is not None and not p.is_absolute():
            p = base / p
        if _GLOB_CHARS & set(str(raw)):
            matches = sorted(Path(m) for m in glob.glob(str(p), recursive=True))
            if not matches:
                raise DataError(f"{raw}: the pattern matches no files")
            out.extend(matches)
        elif p.exists():
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or directory")
    return out


def location(path: str, kind: str, record: int) -> str:
    """How a record is cited: `file:line` (JSON lines), `file:rowN` (tables), the file otherwise."""
    if not record:
        return path
    return f"{path}:row{record}" if kind in ("parquet", "hf") else f"{path}:{record}"


def kind_of(path: Path) -> Kind:
    suf = suffix(path)
    if suf in (".jsonl", ".jsonl.gz", ".jsonl.zst"):
        return "jsonl"
    if suf == ".parquet":
        return "parquet"
    if suf in (".txt", ".txt.gz"):
        return "txt"
    if suf in CODE_EXTENSIONS:
        return "code"
    return "other"


def is_hf_saved(path: Path) -> bool:
    """A folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def _walk(root: Path, input_key: str) -> list[InputFile]:
    out: list[InputFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            kind = kind_of(p)
            out.append(InputFile(str(p), kind, input_key, language_of(name) if kind == "code" else None))
    return out


def _hf_spec(raw: str, base: Path | None) -> str:
    """`hf:rel/dir[:split]` made absolute against `base` when that folder exists there; hub names as given."""
    body = raw[len(HF_PREFIX):]
    head, sep, tail = body.rpartition(":")
    name, split = (head, sep + tail) if sep and head and "/" not in tail else (body, "")
    if base is not None and not Path(name).is_absolute() and (base / name).exists():
        return f"{HF_PREFIX}{base / name}{split}"
    return raw


def expand_inputs(paths: Iterable[str | Path], *, base: Path | None = None) -> list[InputFile]:
    """Resolve files, globs, directories and `hf:` names to the ordered list of input files."""
    out: list[InputFile] = []
    local: list[str | Path] = []

    def flush() -> None:
        for p in expand_paths(local, base=base):
            key = str(p)
            if is_hf_saved(p):
                out.append(InputFile(key, "hf", key))
            elif p.is_dir():
                out.extend(_walk(p, key))
            else:
                kind = kind_of(p)
                if kind == "other":
                    raise DataError(f"{p}: unsupported file type {suffix(p) or '(none)'}; expected one of "
                                    f"{', '.join(DATA_SUFFIXES)}, a source-code extension, a directory or hf:NAME")
                out.append(InputFile(key, kind, key, language_of(key) if kind == "code" else None))
        local.clear()

    for raw in paths:
        if str(raw).startswith(HF_PREFIX):
            flush()
            spec = _hf_spec(str(raw), base)
            out.append(InputFile(spec, "hf", spec))
        else:
            local.append(raw)
    flush()
    return out
