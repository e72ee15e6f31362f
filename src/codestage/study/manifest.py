"""What a finished step wrote, recorded in its marker, so a damaged output is redone, not reused.

A step's marker (`.step.json`) lists every file the step left in its folder: relative path, size,
sha256 and modification time. Before a step is reused its files are checked against that list:

- a file up to `FULL_CHECK_BYTES` (64 MiB: every result, log, tokenizer and the demo's models and
  stores) is hashed in full on every check;
- a bigger one (a real `model.safetensors`, `tokens.bin`) is checked by its size and a *sampled
  digest*, the sha256 of its size and its first, middle and last MiB, plus its full sha256 when
  its modification time moved (any write through the file system moves it). So truncation,
  deletion, a partly copied file or an edit anywhere cost 3 MiB of reading, not the whole file.
  What it misses, bits that rot in place in the unsampled part without a write, the full check
  (`codestage plan --verify full`, `run --verify full`) finds: it hashes every file in full.

Hidden names (the marker, `.key`, the temporaries of atomic writes and checkpoints) are not
recorded. Logs are recorded and checked like any output (the report reads them), but hold
timings, so they are left out of the step's `content_digest`: what a dependant records of its
inputs, and compares to tell whether an input redone since then came out different.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from codestage.hashing import sha256_file, sha256_json

FULL_CHECK_BYTES = 64 << 20  # files up to this size are hashed in full on every check
SAMPLE_BYTES = 1 << 20  # the sampled digest reads this much at the start, the middle and the end
VOLATILE = ("metrics.jsonl", "events.out.tfevents.*")  # logs whose bytes differ between identical runs (timings)


def _files(folder: Path) -> Iterator[Path]:
    """Every regular file under `folder`, sorted, skipping hidden names (bookkeeping and temporaries)."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def sampled_digest(path: Path, size: int) -> str:
    """sha256 of the size and the first, middle and last `SAMPLE_BYTES` of a file of `size` bytes."""
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for start in (0, max(0, (size - SAMPLE_BYTES) // 2), max(0, size - SAMPLE_BYTES)):
            f.seek(start)
            h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()


def record(folder: Path) -> list[dict[str, Any]]:
    """The manifest of `folder`: per file its path (relative, '/'), size, sha256, mtime, and for a big
    file its sampled digest."""
    out = []
    for p in _files(Path(folder)):
        st = p.stat()
        entry: dict[str, Any] = {"path": p.relative_to(folder).as_posix(), "size": st.st_size,
                                 "sha256": sha256_file(p), "mtime_ns": st.st_mtime_ns}
        if st.st_size > FULL_CHECK_BYTES:
            entry["sample"] = sampled_digest(p, st.st_size)
        out.append(entry)
    return out


def content_digest(files: list[dict[str, Any]]) -> str:
    """One hash of what a step wrote (path, size, sha256 of every file but the logs): dependants
    record it, so an input redone to the same bytes does not force them, and one redone to other
    bytes does."""
    kept = [[f["path"], f["size"], f["sha256"]] for f in files
            if not any(fnmatch.fnmatch(Path(f["path"]).name, pat) for pat in VOLATILE)]
    return sha256_json(kept)


@dataclass
class Check:
    """The outcome of checking a folder against its manifest: the first problem (None: it matches)
    and the big files whose mtime moved but whose full sha256 still matches (their new mtime can be
    recorded, so the next check is cheap again)."""

    problem: str | None = None
    touched: dict[str, int] = field(default_factory=dict)


def check(folder: Path, files: list[dict[str, Any]], *, full: bool = False) -> Check:
    """Check `folder` against `files` (its manifest): missing files, sizes, hashes. `full` hashes
    every file in full; otherwise big files get the sampled digest (and the full hash when their
    mtime moved)."""
    result = Check()
    for f in files:
        rel, p = f["path"], Path(folder) / f["path"]
        try:
            st = p.stat()
            if not p.is_file():
                return Check(f"{rel}: not a file")
            if st.st_size != f["size"]:
                return Check(f"{rel}: size {st.st_size} != {f['size']} recorded")
            sample = f.get("sample")
            if full or sample is None:
                if sha256_file(p) != f["sha256"]:
                    return Check(f"{rel}: content differs (sha256)")
            elif sampled_digest(p, st.st_size) != sample:
                return Check(f"{rel}: content differs (sampled digest)")
            elif st.st_mtime_ns != f.get("mtime_ns"):
                if sha256_file(p) != f["sha256"]:
                    return Check(f"{rel}: content differs (sha256, modified since the step ran)")
                result.touched[rel] = st.st_mtime_ns
        except FileNotFoundError:
            return Check(f"{rel}: missing")
        except OSError as exc:
            return Check(f"{rel}: unreadable ({exc.strerror or exc})")
    return result


def _companions(path: Path) -> tuple[str, ...]:
    """Files written together with `path`, so a deleted one shows without a manifest: an evaluation's
    results.json and items.jsonl; a token store's manifest, tokens and offsets; a saved model's
    weights beside its config and tokenizer."""
    names = {"results.json": ("items.jsonl",), "items.jsonl": ("results.json",),
             "tokens.bin": ("manifest.json", "offsets.npy"), "offsets.npy": ("manifest.json", "tokens.bin")}
    if path.name == "config.json" and (path.parent / "tokenizer_config.json").is_file():
        if not any((path.parent / w).is_file() for w in WEIGHTS):
            return (WEIGHTS[0],)
    return names.get(path.name, ())


WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def structural_problem(folder: Path) -> str | None:
    """For a folder finished before manifests existed: what can be checked without one. Every JSON
    file parses, every JSON-lines line parses, a safetensors file's header matches its size, a
    token store's files match its manifest's counts, files written together are all there. The
    first problem found, or None."""
    from safetensors import safe_open

    from codestage.data.store import MANIFEST, TokenStore
    from codestage.errors import CodestageError

    folder = Path(folder)
    for p in _files(folder):
        rel = p.relative_to(folder).as_posix()
        missing = next((m for m in _companions(p) if not (p.parent / m).is_file()), None)
        if missing:
            return f"{(p.parent / missing).relative_to(folder).as_posix()}: missing (written with {p.name})"
        try:
            if p.suffix == ".json":
                json.loads(p.read_text(encoding="utf-8"))
            elif p.suffix == ".jsonl":
                with open(p, encoding="utf-8") as fh:
                    for n, line in enumerate(fh, 1):
                        if line.strip():
                            try:
                                json.loads(line)
                            except ValueError as exc:
                                return f"{rel}:{n}: not valid JSON ({exc})"
            elif p.suffix == ".safetensors":
                with safe_open(str(p), framework="numpy"):
                    pass
        except (ValueError, RecursionError) as exc:
            return f"{rel}: not valid JSON ({exc})"
        except OSError as exc:
            return f"{rel}: unreadable ({exc.strerror or exc})"
        except Exception as exc:  # safetensors raises its own error types for a damaged file
            return f"{rel}: not a readable safetensors file ({type(exc).__name__}: {exc})"
    if (folder / MANIFEST).is_file() and (folder / "tokens.bin").is_file():
        try:
            TokenStore.open(folder)
        except (CodestageError, OSError, ValueError, KeyError, TypeError) as exc:
            return f"token store: {exc}"
    return None


__all__ = ["FULL_CHECK_BYTES", "SAMPLE_BYTES", "Check", "check", "content_digest", "record", "sampled_digest",
           "structural_problem"]
