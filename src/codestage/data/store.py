"""Token stores: one source tokenized once into a memory-mapped array plus a manifest.

Layout of a store directory:
  tokens.bin     all documents' token ids back to back, each followed by EOS (uint16 or uint32)
  offsets.npy    int64 start of each document in tokens.bin, plus the end (n_docs + 1 entries)
  manifest.json  source, counts, dtype, input files with sha256, tokenizer hash, tokens per language

The directory is written under a temporary name and renamed when complete, so a store that
exists is a whole store.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from transformers import PreTrainedTokenizerBase

from codestage import __version__
from codestage.atomic import atomic_dir, write_json
from codestage.data.sources import Document
from codestage.data.tokenizer import tokenizer_hash
from codestage.errors import DataError
from codestage.hashing import sha256_file

MANIFEST = "manifest.json"


@dataclass
class TokenStore:
    """A read-only view of a built store."""

    path: Path
    manifest: dict[str, Any]
    tokens: np.ndarray
    offsets: np.ndarray

    @classmethod
    def open(cls, path: Path | str) -> "TokenStore":
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise DataError(f"{path}: not a token store (no {MANIFEST}; an interrupted build leaves none)")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{manifest_path}: malformed JSON ({exc.msg})") from None
        dtype = np.dtype(manifest["dtype"])
        tokens = np.memmap(path / "tokens.bin", dtype=dtype, mode="r") if manifest["tokens"] else np.zeros(0, dtype)
        offsets = np.load(path / "offsets.npy")
        if len(tokens) != manifest["tokens"] or len(offsets) != manifest["documents"] + 1:
            raise DataError(f"{path}: token files do not match the manifest's counts (store corrupted?)")
        return cls(path, manifest, tokens, offsets)

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    def doc(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]


def _dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def build_store(
    docs: Iterable[Document],
    tokenizer: PreTrainedTokenizerBase,
    out_dir: Path,
    *,
    source: str,
    inputs: list[Path],
    batch_docs: int = 256,
    max_docs: int | None = None,
) -> dict[str, Any]:
    """Tokenize every document of a source into a store at `out_dir`; return its manifest."""
    eos = tokenizer.eos_token_id
    dtype = _dtype_for(len(tokenizer))
    offsets = [0]
    n_tokens = 0
    per_language: Counter[str] = Counter()
    empty = 0

    with atomic_dir(Path(out_dir)) as tmp:
        with open(tmp / "tokens.bin", "wb") as out:

            def flush(batch: list[Document]) -> None:
                nonlocal n_tokens
                encoded = tokenizer(
                    [d.text for d in batch], add_special_tokens=False, return_attention_mask=False
                )["input_ids"]
                for d, ids in zip(batch, encoded):
                    arr = np.asarray(ids + [eos], dtype=dtype)
                    out.write(arr.tobytes())
                    n_tokens += len(arr)
                    offsets.append(n_tokens)
                    per_language[str(d.meta.get("language", "text"))] += len(arr)

            batch: list[Document] = []
            for doc in docs:
                if max_docs is not None and len(offsets) - 1 + len(batch) >= max_docs:
                    break
                if not doc.text.strip():
                    empty += 1
                    continue
                batch.append(doc)
                if len(batch) >= batch_docs:
                    flush(batch)
                    batch = []
            if batch:
                flush(batch)
        if len(offsets) == 1:
            raise DataError(f"source {source!r}: no non-empty documents in {', '.join(map(str, inputs))}")
        np.save(tmp / "offsets.npy", np.asarray(offsets, dtype=np.int64))
        manifest = {
            "source": source,
            "documents": len(offsets) - 1,
            "tokens": n_tokens,
            "dtype": dtype.name,
            "eos_token_id": eos,
            "empty_documents_skipped": empty,
            "tokens_per_language": dict(sorted(per_language.items())),
            "inputs": [{"path": str(p), "bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in inputs if p.is_file()],
            "tokenizer_sha256": tokenizer_hash(tokenizer),
            "codestage_version": __version__,
        }
        write_json(tmp / MANIFEST, manifest)
    return manifest
