"""Token stores: one source tokenized once into a memory-mapped array plus a manifest.

Layout of a store directory:
  tokens.bin     all documents' token ids back to back, each followed by EOS (uint16 or uint32)
  offsets.npy    int64 start of each document in tokens.bin, plus the end (n_docs + 1 entries)
  docs.npy       per document: content hash, input file index, record (line/row), language index
  files.json     the input files (path, kind, input, bytes, sha256) that `docs.npy` indexes
  manifest.json  source, counts (per input, language), dropped records by reason with locations,
                 filters, dedup, shard, tokenizer hash

Documents are in (file index, record) order, which is what lets shards merge into exactly the
store a single build makes. The directory is written under a temporary name and renamed when
complete, so a store that exists is a whole store. Stores without docs.npy (format 1) still open.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from codestage.errors import DataError

MANIFEST = "manifest.json"
DOCS = "docs.npy"
FILES = "files.json"
DOC_DTYPE = np.dtype([("hash", "S16"), ("file", "<u4"), ("record", "<i8"), ("lang", "<u2")])


@dataclass
class TokenStore:
    """A read-only view of a built store."""

    path: Path
    manifest: dict[str, Any]
    tokens: np.ndarray
    offsets: np.ndarray
    docs: np.ndarray | None = None

    @classmethod
    def open(cls, path: Path | str) -> "TokenStore":
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise DataError(f"{path}: not a token store (no {MANIFEST}; an interrupted build leaves none)")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{manifest_path}: malformed JSON ({exc})") from None
        if not isinstance(manifest, dict) or any(k not in manifest for k in ("dtype", "tokens", "documents")):
            raise DataError(f"{manifest_path}: not a token store manifest (needs dtype, tokens, documents)")
        name = "tokens.bin"  # the file being read, for the message of a damaged store
        try:
            dtype = np.dtype(manifest["dtype"])
            tokens = np.memmap(path / name, dtype=dtype, mode="r") if manifest["tokens"] else np.zeros(0, dtype)
            name = "offsets.npy"
            offsets = np.load(path / name)
            name = DOCS
            docs = np.load(path / DOCS, mmap_mode="r") if (path / DOCS).is_file() else None
        except (OSError, EOFError, ValueError, TypeError) as exc:  # missing, empty, truncated, not an array
            raise DataError(f"{path / name}: unreadable ({exc}); the store is damaged: rebuild it") from None
        if len(tokens) != manifest["tokens"] or len(offsets) != manifest["documents"] + 1 or (
            docs is not None and len(docs) != manifest["documents"]
        ):
            raise DataError(f"{path}: token files do not match the manifest's counts (store corrupted?)")
        return cls(path, manifest, tokens, offsets, docs)

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    def doc(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def languages(self) -> tuple[list[str], np.ndarray]:
        """Language names and each document's index into them (one language for old stores)."""
        names = list(self.manifest.get("languages") or [])
        if self.docs is not None and names:
            return names, np.asarray(self.docs["lang"])
        per = self.manifest.get("tokens_per_language") or {"text": 1}
        name = max(per, key=per.get) if len(per) == 1 else "mixed"
        return [name], np.zeros(self.n_docs, dtype=np.uint16)

    def files(self) -> list[dict[str, Any]]:
        p = self.path / FILES
        try:
            return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else []
        except (ValueError, OSError) as exc:
            raise DataError(f"{p}: unreadable ({exc}); the store is damaged: rebuild it") from None

    def location(self, i: int) -> str:
        """`file:line` (or `file:rowN`, or the file) of document i, for tracing a token back."""
        if self.docs is None:
            return f"document {i}"
        from codestage.data.inputs import location

        f = self.files()[int(self.docs["file"][i])]
        return location(f["path"], f["kind"], int(self.docs["record"][i]))


def dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)
