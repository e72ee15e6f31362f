"""Stream documents into a store folder with bounded memory, then write its manifest.

Token ids go straight to `tokens.bin`; offsets and per-document records go to raw side files and
become `.npy` at the end by chunked copy, so nothing per-token or per-document is held in memory.
Counts per input and per language are kept as they arrive. Builds and merges both end here, so
their manifests are computed the same way.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from codestage import __version__
from codestage.atomic import write_json
from codestage.data.issues import BAD, IssueLog
from codestage.data.store import DOC_DTYPE, DOCS, FILES, MANIFEST

_CHUNK = 1 << 22


class StoreWriter:
    """Append documents in order; `finish` writes offsets.npy, docs.npy, files.json and the manifest."""

    def __init__(self, folder: Path, dtype: np.dtype) -> None:
        self.folder = Path(folder)
        self.dtype = np.dtype(dtype)
        self._tokens = open(self.folder / "tokens.bin", "wb")
        self._offsets = open(self.folder / "offsets.raw", "wb")
        self._docs = open(self.folder / "docs.raw", "wb")
        self._offsets.write(np.zeros(1, dtype=np.int64).tobytes())
        self.n_docs = 0
        self.n_tokens = 0
        self.languages: list[str] = []
        self._lang_index: dict[str, int] = {}
        self.lang_tokens: dict[int, int] = defaultdict(int)
        self.lang_docs: dict[int, int] = defaultdict(int)
        self.file_tokens: dict[int, int] = defaultdict(int)
        self.file_docs: dict[int, int] = defaultdict(int)

    def lang_id(self, name: str) -> int:
        if name not in self._lang_index:
            self._lang_index[name] = len(self.languages)
            self.languages.append(name)
        return self._lang_index[name]

    def append(self, tokens: np.ndarray, lengths: np.ndarray, hashes: np.ndarray, files: np.ndarray,
               records: np.ndarray, langs: np.ndarray) -> None:
        """Documents back to back (`lengths` include each EOS); `langs` are this writer's indices."""
        if not len(lengths):
            return
        self._tokens.write(np.ascontiguousarray(tokens, dtype=self.dtype).tobytes())
        ends = self.n_tokens + np.cumsum(lengths, dtype=np.int64)
        self._offsets.write(ends.tobytes())
        rec = np.empty(len(lengths), dtype=DOC_DTYPE)
        rec["hash"], rec["file"], rec["record"], rec["lang"] = hashes, files, records, langs
        self._docs.write(rec.tobytes())
        self.n_docs += len(lengths)
        self.n_tokens = int(ends[-1])
        for key, table in ((langs, (self.lang_docs, self.lang_tokens)), (files, (self.file_docs, self.file_tokens))):
            uniq, inv = np.unique(key, return_inverse=True)
            toks = np.bincount(inv, weights=lengths, minlength=len(uniq))
            cnt = np.bincount(inv, minlength=len(uniq))
            for u, c, t in zip(uniq.tolist(), cnt.tolist(), toks.tolist()):
                table[0][u] += c
                table[1][u] += int(t)

    def _npy(self, raw: str, name: str, dtype: np.dtype, n: int) -> None:
        arr = np.lib.format.open_memmap(self.folder / name, mode="w+", dtype=dtype, shape=(n,))
        step = max(_CHUNK // dtype.itemsize, 1)
        with open(self.folder / raw, "rb") as f:
            for start in range(0, n, step):
                chunk = np.frombuffer(f.read(min(step, n - start) * dtype.itemsize), dtype=dtype)
                arr[start : start + len(chunk)] = chunk
        arr.flush()
        del arr
        os.remove(self.folder / raw)

    def finish(self, files: Sequence[dict[str, Any]], issues: IssueLog, head: dict[str, Any]) -> dict[str, Any]:
        for f in (self._tokens, self._offsets, self._docs):
            f.close()
        self._npy("offsets.raw", "offsets.npy", np.dtype(np.int64), self.n_docs + 1)
        self._npy("docs.raw", DOCS, DOC_DTYPE, self.n_docs)
        write_json(self.folder / FILES, list(files))
        manifest = compose_manifest(self, files, issues, head)
        write_json(self.folder / MANIFEST, manifest)
        return manifest


def _input_digest(members: list[dict[str, Any]]) -> str | None:
    """sha256 of the file for a one-file input; of the (path, sha256) list for a directory."""
    if any(m.get("sha256") is None for m in members):
        return None
    if len(members) == 1 and members[0]["path"] == members[0]["input"]:
        return members[0]["sha256"]
    h = hashlib.sha256()
    for m in members:
        h.update(f"{os.path.relpath(m['path'], m['input'])}\t{m['sha256']}\n".encode())
    return h.hexdigest()


def compose_manifest(w: StoreWriter, files: Sequence[dict[str, Any]], issues: IssueLog, head: dict[str, Any]) -> dict[str, Any]:
    """Counts per input and language, dropped records by reason; documents + dropped = records."""
    by_input: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        by_input.setdefault(f["input"], []).append(i)
    inputs = []
    for key, idx in by_input.items():
        members = [files[i] for i in idx]
        docs = sum(w.file_docs.get(i, 0) for i in idx)
        dropped = issues.for_input(key)
        inputs.append({
            "path": key, "kind": members[0]["kind"] if len(members) == 1 else "directory", "files": len(members),
            "bytes": sum(m.get("bytes") or 0 for m in members), "sha256": _input_digest(members),
            "records": docs + sum(e["count"] for e in dropped.values()), "documents": docs,
            "tokens": sum(w.file_tokens.get(i, 0) for i in idx), "dropped": dropped,
        })
    totals = issues.totals()
    order = sorted(range(len(w.languages)), key=lambda i: w.languages[i])
    return {
        **head,
        "format": 2,
        "documents": w.n_docs,
        "tokens": w.n_tokens,
        "dtype": w.dtype.name,
        "records": w.n_docs + sum(totals.values()),
        "dropped": totals,
        "bad_records": sum(n for k, n in totals.items() if k in BAD),
        "empty_documents_skipped": totals.get("empty", 0),
        "languages": list(w.languages),
        "tokens_per_language": {w.languages[i]: w.lang_tokens[i] for i in order},
        "documents_per_language": {w.languages[i]: w.lang_docs[i] for i in order},
        "inputs": inputs,
        "codestage_version": __version__,
    }
