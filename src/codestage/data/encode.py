"""The worker side of a store build: parse, filter, hash and tokenize one batch of raw records.

Workers get the tokenizer as its serialized backend (the exact rules the HF fast tokenizer uses,
so tokens match `tokenizer(text, add_special_tokens=False)`) and encode a batch with the Rust
batch encoder. A worker imports only numpy, tokenizers and these small modules, so it starts fast.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Callable, Sequence

import numpy as np

from codestage.data.document import Document
from codestage.data.issues import Issue
from codestage.data.parse import ParseOptions, Raw, parse_raw

HASH_DTYPE = np.dtype("S16")


@dataclass(frozen=True)
class WorkerSetup:
    """Everything a worker needs, pickled once per worker process."""

    paths: tuple[str, ...]
    options: ParseOptions
    source: str
    eos_id: int
    dtype: str
    backend_json: str | None = None
    tokenizer_dir: str | None = None


@dataclass
class Encoded:
    """One batch's documents (tokens back to back, each ending in EOS) and its dropped records."""

    tokens: np.ndarray
    lengths: np.ndarray
    file_idx: np.ndarray
    record: np.ndarray
    hashes: np.ndarray
    languages: list[str]
    issues: list[Issue] = field(default_factory=list)
    chars: int = 0


_STATE: dict[str, Any] = {}


def content_hash(text: str) -> bytes:
    """Exact-duplicate key: 128-bit BLAKE2b of the text with whitespace runs collapsed and ends stripped."""
    return hashlib.blake2b(" ".join(text.split()).encode("utf-8"), digest_size=16).digest()


def _encoder(setup: WorkerSetup) -> Callable[[list[str]], list[list[int]]]:
    if setup.backend_json is not None:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(setup.backend_json)
        tok.no_truncation()
        tok.no_padding()
        batch = getattr(tok, "encode_batch_fast", tok.encode_batch)  # same ids, no offsets computed
        return lambda texts: [e.ids for e in batch(texts, add_special_tokens=False)]
    from transformers import AutoTokenizer  # slow (Python) tokenizers only

    hf = AutoTokenizer.from_pretrained(setup.tokenizer_dir)
    return lambda texts: hf(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]


def init_worker(setup: WorkerSetup, in_pool: bool = True) -> None:
    """Process initializer: one Rust thread per worker process (the processes are the parallelism)."""
    if in_pool:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        os.environ["RAYON_NUM_THREADS"] = "1"
    _STATE["setup"] = setup
    _STATE["encode"] = _encoder(setup)


def split(raws: Sequence[Raw], setup: WorkerSetup) -> tuple[list[Document], list[tuple[int, int]], list[Issue]]:
    docs, keys, issues = [], [], []
    for raw in raws:
        out = parse_raw(raw, setup.paths, setup.options, setup.source)
        if isinstance(out, Issue):
            issues.append(out)
        else:
            docs.append(out)
            keys.append((raw[0], raw[1]))
    return docs, keys, issues


def encode_batch(raws: Sequence[Raw]) -> Encoded:
    """Parse and tokenize one batch (runs in a worker process, or inline with one worker)."""
    return encode_docs(*split(raws, _STATE["setup"]))


def encode_docs(docs: Sequence[Document], keys: Sequence[tuple[int, int]], issues: list[Issue]) -> Encoded:
    """Tokenize parsed documents; `keys` are their (file index, record) pairs."""
    setup: WorkerSetup = _STATE["setup"]
    ids = _STATE["encode"]([d.text for d in docs]) if docs else []
    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    eos = [setup.eos_id]
    flat = chain.from_iterable(chain.from_iterable((x, eos) for x in ids))
    tokens = np.fromiter(flat, dtype=np.dtype(setup.dtype), count=int(lengths.sum()))
    return Encoded(
        tokens=tokens,
        lengths=lengths,
        file_idx=np.fromiter((k[0] for k in keys), dtype=np.uint32, count=len(keys)),
        record=np.fromiter((k[1] for k in keys), dtype=np.int64, count=len(keys)),
        hashes=np.array([content_hash(d.text) for d in docs], dtype=HASH_DTYPE).reshape(len(docs)),
        languages=[d.language for d in docs],
        issues=issues,
        chars=sum(len(d.text) for d in docs),
    )
