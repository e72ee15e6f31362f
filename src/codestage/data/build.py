"""Build a token store from a source's files on all cores, or one shard of it for a cluster.

The main process streams raw records (`readers`), workers parse, filter, hash and tokenize batches
(`encode`), and results come back in input order (`parallel.ordered_map`) to be deduplicated and
written (`writer`). Memory is bounded by the in-flight window, except for the dedup hash set
(16 bytes per unique document). Shard i/N of a build keeps only the records it owns; `merge.py`
joins the N outputs into exactly the store a single build writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from transformers import PreTrainedTokenizerBase

from codestage.atomic import atomic_dir
from codestage.data.dedup import SeenHashes
from codestage.data.document import Document
from codestage.data.encode import Encoded, WorkerSetup, encode_batch, encode_docs, init_worker
from codestage.data.inputs import InputFile, expand_inputs, location
from codestage.data.issues import Issue, IssueLog
from codestage.data.parallel import ordered_map
from codestage.data.parse import ParseOptions, Raw
from codestage.data.readers import BLOCK, ShardPlan, iter_raw
from codestage.tokenizer import load_tokenizer, tokenizer_hash
from codestage.data.writer import StoreWriter
from codestage.data.store import dtype_for
from codestage.errors import DataError
from codestage.hashing import sha256_file
from codestage.outputs import STORE, check_output

BATCH_BYTES = 1 << 18
BATCH_RECORDS = 4096
Progress = Callable[[int, int, int], None]  # (documents, tokens, records dropped) so far


@dataclass(frozen=True)
class BuildSpec:
    """How to turn a source's files into a store (everything but the paths and the tokenizer)."""

    source: str
    options: ParseOptions = field(default_factory=ParseOptions)
    dedup: bool = False
    strict: bool = False
    workers: int = 0  # 0 = all cores, or inline when the input is small
    shard: tuple[int, int] = (0, 1)
    block: int = BLOCK
    max_docs: int | None = None


SMALL_INPUT = 8 << 20  # below this many input bytes, starting worker processes costs more than it saves


def default_workers() -> int:
    return max(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1), 1)


def auto_workers(files: Sequence[InputFile]) -> int:
    local = [Path(f.path) for f in files if f.kind != "hf"]
    if len(local) == len(files) and sum(p.stat().st_size for p in local if p.is_file()) < SMALL_INPUT:
        return 1
    return default_workers()


def _size(raw: Raw) -> int:
    payload = raw[3]
    if isinstance(payload, (bytes, str)):
        return len(payload)
    if isinstance(payload, tuple):
        return len(payload[0])
    return 256


def batches(raws: Iterable[Raw], max_bytes: int = BATCH_BYTES, max_records: int = BATCH_RECORDS) -> Iterator[list[Raw]]:
    """Group raw records into batches of about `max_bytes` of payload."""
    batch: list[Raw] = []
    size = 0
    for raw in raws:
        batch.append(raw)
        size += _size(raw)
        if size >= max_bytes or len(batch) >= max_records:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _worker_setup(tok: PreTrainedTokenizerBase, tokenizer_dir: str | None, paths: Sequence[str],
                  spec: BuildSpec, dtype: np.dtype) -> WorkerSetup:
    backend = getattr(tok, "backend_tokenizer", None)
    return WorkerSetup(tuple(paths), spec.options, spec.source, int(tok.eos_token_id), dtype.name,
                       backend.to_str() if backend is not None else None, tokenizer_dir)


class _Sink:
    """Dedup, max_docs and issue accounting between the workers' results and the writer."""

    def __init__(self, writer: StoreWriter, issues: IssueLog, files: Sequence[InputFile], spec: BuildSpec) -> None:
        self.w, self.issues, self.files, self.spec = writer, issues, files, spec
        self.seen = SeenHashes() if spec.dedup else None
        self.dropped = 0

    @property
    def full(self) -> bool:
        return self.spec.max_docs is not None and self.w.n_docs >= self.spec.max_docs

    def take(self, enc: Encoded) -> None:
        for issue in enc.issues:
            self.issues.add(self.files[issue.file_idx].input, issue)
        self.dropped += sum(i.count for i in enc.issues)
        keep = np.ones(len(enc.lengths), dtype=bool)
        if self.seen is not None:
            keep = self.seen.first_seen(enc.hashes)
            for j in np.flatnonzero(~keep).tolist():
                f = self.files[int(enc.file_idx[j])]
                at = location(f.path, f.kind, int(enc.record[j]))
                self.issues.add(f.input, Issue("duplicate", int(enc.file_idx[j]), int(enc.record[j]), at,
                                               "exact duplicate of an earlier document (normalised content hash)"))
                self.dropped += 1
        if self.spec.max_docs is not None:
            room = self.spec.max_docs - self.w.n_docs
            keep &= np.cumsum(keep) <= room
        langs = np.fromiter((self.w.lang_id(x) for x, k in zip(enc.languages, keep) if k), dtype=np.uint16)
        if keep.all():
            self.w.append(enc.tokens, enc.lengths, enc.hashes, enc.file_idx, enc.record, langs)
        else:
            tok_mask = np.repeat(keep, enc.lengths)
            self.w.append(enc.tokens[tok_mask], enc.lengths[keep], enc.hashes[keep], enc.file_idx[keep],
                          enc.record[keep], langs)


def _file_entries(files: Sequence[InputFile], plan: ShardPlan) -> list[dict[str, Any]]:
    """Per input file: size and sha256, hashed by the shard that owns its first block."""
    out = []
    for i, f in enumerate(files):
        local = Path(f.path)
        mine = plan.owns(i, 0) and f.kind != "hf" and local.is_file()
        out.append({"path": f.path, "kind": f.kind, "input": f.input,
                    "bytes": local.stat().st_size if local.is_file() else None,
                    "sha256": sha256_file(local) if mine else None})
    return out


def _head(spec: BuildSpec, tok: PreTrainedTokenizerBase, plan: ShardPlan | None) -> dict[str, Any]:
    o = spec.options
    return {
        "source": spec.source,
        "eos_token_id": int(tok.eos_token_id),
        "tokenizer_sha256": tokenizer_hash(tok),
        "text_field": o.text_field,
        "filters": {"min_chars": o.min_chars, "max_chars": o.max_chars,
                    "languages": sorted(o.languages) if o.languages is not None else None,
                    "licenses": sorted(o.licenses) if o.licenses is not None else None},
        "dedup": {"enabled": spec.dedup, "method": "exact: BLAKE2b-128 of whitespace-normalised text"},
        "strict": spec.strict,
        "max_docs": spec.max_docs,
        "shard": plan.to_json() if plan is not None else None,
    }


def _nothing_kept(spec: BuildSpec, issues: IssueLog, where: str) -> DataError:
    dropped = ", ".join(f"{k} {n}" for k, n in issues.totals().items()) or "none"
    return DataError(f"source {spec.source!r}: no non-empty documents in {where} (dropped: {dropped})")


def build(paths: Sequence[str | Path], tokenizer: PreTrainedTokenizerBase | str | Path, out: Path, spec: BuildSpec, *,
          base: Path | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Build the store (or shard `spec.shard`) of `paths` at `out`; return its manifest. An existing
    `out` must be a store (it is replaced) or empty; an input inside it or it inside an input is refused."""
    tok_dir = None if isinstance(tokenizer, PreTrainedTokenizerBase) else str(tokenizer)
    check_output(out, STORE, inputs=[*paths, tok_dir], base=base)
    tok = load_tokenizer(tokenizer) if tok_dir is not None else tokenizer
    files = expand_inputs(paths, base=base)
    index, count = spec.shard
    if count > 1 and spec.max_docs is not None:
        raise DataError("max_docs cannot be combined with --shard (it counts documents across the whole source)")
    plan = ShardPlan(index, count, spec.block, len(files))
    dtype = dtype_for(len(tok))
    setup = _worker_setup(tok, tok_dir, [f.path for f in files], spec, dtype)
    issues = IssueLog(strict=spec.strict)
    with atomic_dir(Path(out)) as tmp:
        w = StoreWriter(tmp, dtype)
        sink = _Sink(w, issues, files, spec)
        results = ordered_map(encode_batch, batches(iter_raw(files, plan, spec.options.text_field)),
                              workers=spec.workers or auto_workers(files), initializer=init_worker, initargs=(setup,))
        try:
            for _, enc in results:
                sink.take(enc)
                if progress is not None:
                    progress(w.n_docs, w.n_tokens, sink.dropped)
                if sink.full:
                    break
        finally:
            results.close()
        if w.n_docs == 0 and count == 1:
            raise _nothing_kept(spec, issues, ", ".join(map(str, paths)))
        manifest = w.finish(_file_entries(files, plan), issues, _head(spec, tok, plan if count > 1 else None))
    return manifest


def build_from_documents(docs: Iterable[Document], tokenizer: PreTrainedTokenizerBase, out: Path, *, source: str,
                         inputs: list[Path], batch_docs: int = 256, max_docs: int | None = None) -> dict[str, Any]:
    """Serial build from documents already read (no reader, no worker processes)."""
    check_output(out, STORE, inputs=inputs)
    spec = BuildSpec(source=source, max_docs=max_docs, workers=1)
    dtype = dtype_for(len(tokenizer))
    init_worker(_worker_setup(tokenizer, None, [str(p) for p in inputs] or ["(documents)"], spec, dtype), in_pool=False)
    files = [InputFile(str(p), "jsonl", str(p)) for p in inputs] or [InputFile("(documents)", "jsonl", "(documents)")]
    issues = IssueLog()
    with atomic_dir(Path(out)) as tmp:
        w = StoreWriter(tmp, dtype)
        sink = _Sink(w, issues, files, spec)
        batch: list[Document] = []
        n = 0

        def flush() -> None:
            keys = [(0, n - len(batch) + j + 1) for j in range(len(batch))]
            ok = [d for d in batch if d.text.strip()]
            empty = [Issue("empty", 0, k[1], d.location, "empty document") for d, k in zip(batch, keys) if not d.text.strip()]
            sink.take(encode_docs(ok, [k for d, k in zip(batch, keys) if d.text.strip()], empty))

        for doc in docs:
            if sink.full:
                break
            batch.append(doc)
            n += 1
            if len(batch) >= batch_docs:
                flush()
                batch = []
        if batch and not sink.full:
            flush()
        if w.n_docs == 0:
            raise _nothing_kept(spec, issues, ", ".join(map(str, inputs)))
        entries = [{"path": f.path, "kind": f.kind, "input": f.input, "bytes": Path(f.path).stat().st_size,
                    "sha256": sha256_file(Path(f.path))} for f in files if Path(f.path).is_file()]
        manifest = w.finish(entries or [{"path": "(documents)", "kind": "jsonl", "input": "(documents)"}], issues,
                            _head(spec, tokenizer, None))
    return manifest
