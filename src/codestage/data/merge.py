"""Merge the N shard stores of one build into the store a single build would have written.

Every document carries its (input file, record) key, and each shard's documents are in key order,
so the merge is a k-way merge by key that copies long runs of tokens at a time. Exact duplicates
that sat in different shards are removed here (the first in key order is kept, as in a single
build), and the shards' dropped-record counts are added up, so the manifest matches as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from codestage.atomic import atomic_dir
from codestage.data.dedup import SeenHashes
from codestage.data.inputs import location
from codestage.data.issues import Issue, IssueLog
from codestage.data.store import TokenStore
from codestage.data.writer import StoreWriter
from codestage.errors import DataError
from codestage.outputs import STORE, check_output

CHUNK_DOCS = 1 << 16
_SAME = ("source", "tokenizer_sha256", "dtype", "eos_token_id", "text_field", "filters", "dedup", "strict")


def _keys(store: TokenStore) -> np.ndarray:
    return (store.docs["file"].astype(np.int64) << 40) | store.docs["record"].astype(np.int64)


def _check(stores: Sequence[TokenStore], allow_partial: bool) -> int:
    first = stores[0].manifest
    for s in stores:
        if s.docs is None or not s.manifest.get("shard"):
            raise DataError(f"{s.path}: not a shard store (build it with --shard i/N)")
        for k in _SAME:
            if s.manifest.get(k) != first.get(k):
                raise DataError(f"{s.path}: {k} differs from {stores[0].path} ({s.manifest.get(k)!r} vs {first.get(k)!r}); "
                                "shards of one store must share inputs, tokenizer and options")
        if [f["path"] for f in s.files()] != [f["path"] for f in stores[0].files()]:
            raise DataError(f"{s.path}: its input file list differs from {stores[0].path}'s")
    count = first["shard"]["count"]
    seen = [s.manifest["shard"]["index"] for s in stores]
    if any(s.manifest["shard"]["count"] != count for s in stores) or len(set(seen)) != len(seen):
        raise DataError(f"shards must be distinct parts of one i/N split; got {sorted(seen)} of {count}")
    missing = sorted(set(range(count)) - set(seen))
    if missing and not allow_partial:
        raise DataError(f"missing shard(s) {', '.join(f'{i}/{count}' for i in missing)}; "
                        "pass allow_partial (--allow-partial) to merge what is there")
    return count


def _files(stores: Sequence[TokenStore]) -> list[dict[str, Any]]:
    out = [dict(f) for f in stores[0].files()]
    for s in stores[1:]:
        for mine, theirs in zip(out, s.files()):
            mine["sha256"] = mine["sha256"] or theirs["sha256"]
    return out


def _runs(keys: list[np.ndarray]) -> Any:
    """(shard, start, end) runs in global key order: a k-way merge that moves whole runs."""
    pos = [0] * len(keys)
    while True:
        live = [i for i in range(len(keys)) if pos[i] < len(keys[i])]
        if not live:
            return
        s = min(live, key=lambda i: keys[i][pos[i]])
        bound = min((keys[i][pos[i]] for i in live if i != s), default=None)
        end = len(keys[s]) if bound is None else int(np.searchsorted(keys[s], bound, side="left"))
        end = min(max(end, pos[s] + 1), pos[s] + CHUNK_DOCS)
        yield s, pos[s], end
        pos[s] = end


def merge(shard_dirs: Sequence[Path | str], out: Path, *, allow_partial: bool = False) -> dict[str, Any]:
    """Merge shard stores into `out` (absent, empty or a store, which is replaced); return the merged manifest."""
    if not shard_dirs:
        raise DataError("merge: no shard stores given")
    check_output(out, STORE, inputs=shard_dirs)
    stores = [TokenStore.open(p) for p in shard_dirs]
    count = _check(stores, allow_partial)
    files = _files(stores)
    issues = IssueLog()
    for s in stores:
        for entry in s.manifest["inputs"]:
            issues.merge({entry["path"]: entry["dropped"]})
    keys = [_keys(s) for s in stores]
    langs = [s.manifest["languages"] for s in stores]
    seen = SeenHashes() if stores[0].manifest["dedup"]["enabled"] else None
    with atomic_dir(Path(out)) as tmp:
        w = StoreWriter(tmp, np.dtype(stores[0].manifest["dtype"]))
        for si, a, b in _runs(keys):
            s = stores[si]
            docs = np.asarray(s.docs[a:b])
            lengths = np.diff(s.offsets[a : b + 1])
            tokens = np.asarray(s.tokens[s.offsets[a] : s.offsets[b]])
            keep = seen.first_seen(docs["hash"]) if seen is not None else np.ones(b - a, dtype=bool)
            for j in np.flatnonzero(~keep).tolist():
                f = files[int(docs["file"][j])]
                issues.add(f["input"], Issue("duplicate", int(docs["file"][j]), int(docs["record"][j]),
                                             location(f["path"], f["kind"], int(docs["record"][j])),
                                             "exact duplicate of an earlier document (normalised content hash)"))
            if not keep.all():
                tokens, lengths, docs = tokens[np.repeat(keep, lengths)], lengths[keep], docs[keep]
            ids = np.fromiter((w.lang_id(langs[si][i]) for i in docs["lang"].tolist()), dtype=np.uint16, count=len(docs))
            w.append(tokens, lengths, docs["hash"], docs["file"], docs["record"], ids)
        if w.n_docs == 0:
            raise DataError(f"merge: the shards hold no documents ({', '.join(map(str, shard_dirs))})")
        head = {k: v for k, v in stores[0].manifest.items() if k in (*_SAME, "max_docs")}
        head = {"source": head.pop("source"), "eos_token_id": head.pop("eos_token_id"),
                "tokenizer_sha256": head.pop("tokenizer_sha256"), **head, "shard": None}
        head["merged_from"] = {"count": count, "shards": [{"path": str(s.path), **s.manifest["shard"],
                                                           "documents": s.n_docs, "tokens": s.n_tokens} for s in stores]}
        manifest = w.finish(files, issues, head)
    return manifest
