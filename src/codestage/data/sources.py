"""Read documents from files, globs and directories, in the formats users actually have.

Supported: `.jsonl` / `.jsonl.gz` / `.jsonl.zst` (one JSON object per line, text in a named field),
`.parquet` (a text column), `.txt` / `.txt.gz` (one document per file), and directories of source
files (each file one code document, language from its extension). Bad input stops with the file
and line; nothing is dropped silently.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Iterator

from codestage.errors import DataError

CODE_EXTENSIONS: dict[str, str] = {
    ".py": "Python", ".pyi": "Python", ".pyx": "Cython", ".pxd": "Cython",
    ".c": "C", ".h": "C", ".cc": "C++", ".cpp": "C++", ".cxx": "C++", ".hpp": "C++", ".hh": "C++",
    ".java": "Java", ".kt": "Kotlin", ".scala": "Scala", ".go": "Go", ".rs": "Rust",
    ".js": "JavaScript", ".mjs": "JavaScript", ".jsx": "JavaScript", ".ts": "TypeScript", ".tsx": "TypeScript",
    ".rb": "Ruby", ".php": "PHP", ".lua": "Lua", ".sh": "Shell", ".bash": "Shell", ".swift": "Swift",
    ".cs": "C#", ".m": "Objective-C", ".r": "R", ".jl": "Julia", ".hs": "Haskell", ".sql": "SQL",
}
_DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet", ".txt", ".txt.gz")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Document:
    """One training document and where it came from (`location` is `file` or `file:line`)."""

    text: str
    source: str
    location: str
    meta: dict = field(default_factory=dict, compare=False)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suf in _DATA_SUFFIXES:
        if name.endswith(suf):
            return suf
    return path.suffix.lower()


def _open_text(path: Path) -> IO[str]:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="strict")
    if name.endswith(".zst"):
        import zstandard

        raw = open(path, "rb")
        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True), encoding="utf-8")
    return open(path, encoding="utf-8", errors="strict")


def _read_jsonl(path: Path, source: str, text_field: str) -> Iterator[Document]:
    lineno = 0
    try:
        with _open_text(path) as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
                if text_field not in obj:
                    raise DataError(f"{path}:{lineno}: no field {text_field!r} (fields: {', '.join(sorted(obj)) or 'none'})")
                text = obj[text_field]
                if not isinstance(text, str):
                    raise DataError(f"{path}:{lineno}: field {text_field!r} is {type(text).__name__}, expected a string")
                meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
                yield Document(text, obj.get("source") or source, f"{path}:{lineno}", meta)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}:{lineno + 1}: invalid UTF-8 ({exc.reason})") from None
    except (OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise DataError(f"{path}: file not found") from None
        raise DataError(f"{path}: cannot read ({exc})") from None


def _read_parquet(path: Path, source: str, text_field: str) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None
    if text_field not in pf.schema_arrow.names:
        raise DataError(f"{path}: no column {text_field!r} (columns: {', '.join(pf.schema_arrow.names)})")
    row = 0
    for batch in pf.iter_batches(columns=[text_field], batch_size=1024):
        for value in batch.column(0).to_pylist():
            row += 1
            if not isinstance(value, str):
                raise DataError(f"{path}: row {row}: column {text_field!r} is {type(value).__name__}, expected a string")
            yield Document(value, source, f"{path}:row{row}")


def _read_txt(path: Path, source: str) -> Iterator[Document]:
    try:
        with _open_text(path) as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: invalid UTF-8 at byte {exc.start} ({exc.reason})") from None
    yield Document(text, source, str(path))


def _read_code_file(path: Path, source: str) -> Document | None:
    """A source file as one code document, or None when it is binary (caller counts it)."""
    data = path.read_bytes()
    if b"\x00" in data:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    language = CODE_EXTENSIONS[path.suffix.lower()]
    return Document(text, source, str(path), {"path": str(path), "language": language})


def _read_file(path: Path, source: str, text_field: str) -> Iterator[Document]:
    suf = _suffix(path)
    if suf in (".jsonl", ".jsonl.gz", ".jsonl.zst"):
        yield from _read_jsonl(path, source, text_field)
    elif suf == ".parquet":
        yield from _read_parquet(path, source, text_field)
    elif suf in (".txt", ".txt.gz"):
        yield from _read_txt(path, source)
    elif suf in CODE_EXTENSIONS:
        doc = _read_code_file(path, source)
        if doc is None:
            raise DataError(f"{path}: binary or non-UTF-8 content in a code file")
        yield doc
    else:
        raise DataError(f"{path}: unsupported file type {suf or '(none)'}; expected one of "
                        f"{', '.join(_DATA_SUFFIXES)} or a source-code extension")


@dataclass
class DirectoryReport:
    """What a directory walk skipped, so nothing is dropped without a count."""

    skipped_binary: list[str] = field(default_factory=list)
    skipped_other: list[str] = field(default_factory=list)


def _read_directory(root: Path, source: str, text_field: str, report: DirectoryReport) -> Iterator[Document]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            suf = _suffix(path)
            if suf in _DATA_SUFFIXES:
                yield from _read_file(path, source, text_field)
            elif suf in CODE_EXTENSIONS:
                doc = _read_code_file(path, source)
                if doc is None:
                    report.skipped_binary.append(str(path))
                else:
                    yield doc
            else:
                report.skipped_other.append(str(path))


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


def iter_documents(
    paths: Iterable[str | Path], source: str, *, text_field: str = "text", base: Path | None = None,
    report: DirectoryReport | None = None,
) -> Iterator[Document]:
    """Every document of a source, in a stable order (sorted paths, then file order)."""
    report = report if report is not None else DirectoryReport()
    for path in expand_paths(paths, base=base):
        if path.is_dir():
            yield from _read_directory(path, source, text_field, report)
        else:
            yield from _read_file(path, source, text_field)


def sample_texts(docs: Iterable[Document], max_chars: int) -> Iterator[str]:
    """The leading documents of a source up to about `max_chars` characters (tokenizer training)."""
    used = 0
    for doc in docs:
        if used >= max_chars:
            return
        text = doc.text[: max_chars - used]
        used += len(text)
        yield text
