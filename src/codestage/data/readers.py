"""Stream raw records out of input files in the main process: bytes and rows only, no decoding.

Keeping the main process to decompression and line splitting leaves UTF-8 decoding, JSON parsing,
filtering, hashing and tokenization to the workers (`parse.py`, `encode.py`), so it scales with
cores. A `ShardPlan` says which records this shard owns; records it does not own are skipped
without being parsed, and files it does not own are not opened when the partition is by file.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Sequence

from codestage.data.inputs import InputFile
from codestage.data.issues import Issue
from codestage.data.parse import LANGUAGE_KEYS, LICENSE_KEYS, PATH_KEYS, Raw
from codestage.errors import DataError

BLOCK = 1000  # records per block when shards split the records of a file


@dataclass(frozen=True)
class ShardPlan:
    """Shard `index` of `count`. With at least `count` files, shard i takes every count-th file;
    otherwise blocks of `block` consecutive records are dealt round-robin (offset by file index)."""

    index: int = 0
    count: int = 1
    block: int = BLOCK
    n_files: int = 0

    @property
    def by_file(self) -> bool:
        return self.n_files >= self.count

    def owns(self, fidx: int, rec: int) -> bool:
        if self.count == 1:
            return True
        blk = 0 if self.by_file else max(rec - 1, 0) // self.block
        return (fidx + blk) % self.count == self.index

    def to_json(self) -> dict[str, int | str]:
        return {"index": self.index, "count": self.count, "block": self.block,
                "partition": "file" if self.by_file else "block"}


def parse_shard(spec: str) -> tuple[int, int]:
    """'2/8' -> (2, 8); shards are numbered 0..N-1 (a Slurm array's SLURM_ARRAY_TASK_ID)."""
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise DataError(f"--shard {spec!r}: expected i/N, e.g. 0/8") from None
    if n < 1 or not 0 <= i < n:
        raise DataError(f"--shard {spec!r}: need N >= 1 and 0 <= i < N")
    return i, n


def _open_binary(path: str) -> IO[bytes]:
    name = path.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        return io.BufferedReader(_ZstdFrames(open(path, "rb")), 1 << 20)
    return open(path, "rb", buffering=1 << 20)


class _ZstdFrames(io.RawIOBase):
    """Decompress every zstd frame of a file, raising EOFError when the last frame is cut short
    (zstandard's stream reader returns a truncated file as if it ended early)."""

    def __init__(self, raw: IO[bytes]) -> None:
        import zstandard

        self._raw, self._zstd, self._buf, self._pos = raw, zstandard, b"", 0
        self._obj = zstandard.ZstdDecompressor().decompressobj()
        self._started = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        while self._pos >= len(self._buf):
            chunk = self._raw.read(1 << 20)
            if not chunk:
                if self._started and not self._obj.eof:
                    raise EOFError("compressed file ended before the end of a zstd frame (truncated?)")
                return 0
            self._started = True
            parts = []
            while chunk:
                if self._obj.eof:  # the next frame, in this chunk or starting exactly at it
                    self._obj = self._zstd.ZstdDecompressor().decompressobj()
                parts.append(self._obj.decompress(chunk))
                chunk = self._obj.unused_data if self._obj.eof else b""
            self._buf, self._pos = b"".join(parts), 0
        n = min(len(b), len(self._buf) - self._pos)
        b[:n] = memoryview(self._buf)[self._pos : self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _unreadable(fidx: int, rec: int, path: str, exc: BaseException) -> Raw:
    where = f"{path}:{rec}" if rec else path
    return (fidx, rec, "issue", Issue("unreadable", fidx, rec, where, f"cannot read ({type(exc).__name__}: {exc})"))


def _jsonl(fidx: int, f: InputFile, plan: ShardPlan) -> Iterator[Raw]:
    lineno = 0
    try:
        with _open_binary(f.path) as fh:
            for lineno, line in enumerate(fh, start=1):
                if plan.owns(fidx, lineno) and line.strip():
                    yield (fidx, lineno, "json", line)
    except Exception as exc:  # truncated gzip, zstd frame errors, I/O errors
        yield _unreadable(fidx, lineno + 1, f.path, exc)


def _whole(fidx: int, f: InputFile, kind: str) -> Iterator[Raw]:
    try:
        with _open_binary(f.path) as fh:
            data = fh.read()
    except Exception as exc:
        yield _unreadable(fidx, 0, f.path, exc)
        return
    yield (fidx, 0, kind, (data, f.language) if kind == "code" else data)


_META_COLUMNS = ("source", "meta", *LANGUAGE_KEYS, *LICENSE_KEYS, *PATH_KEYS)


def _missing(fidx: int, path: str, field: str, columns: Sequence[str], rows: int) -> Raw:
    detail = f"no column {field!r} (columns: {', '.join(columns)}); its {rows} row(s) not read"
    return (fidx, 0, "issue", Issue("missing_field", fidx, 0, path, detail, count=max(rows, 1)))


def _rows(fidx: int, batches: Iterator[list[dict]], plan: ShardPlan) -> Iterator[Raw]:
    rec = 0
    for rows in batches:
        for row in rows:
            rec += 1
            if plan.owns(fidx, rec):
                yield (fidx, rec, "obj", row)


def _parquet(fidx: int, f: InputFile, plan: ShardPlan, text_field: str) -> Iterator[Raw]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f.path)
    except Exception as exc:
        yield _unreadable(fidx, 0, f.path, exc)
        return
    names = pf.schema_arrow.names
    root = text_field.split(".")[0]
    if root not in names:
        yield _missing(fidx, f.path, text_field, names, pf.metadata.num_rows)
        return
    cols = [root] + [c for c in _META_COLUMNS if c in names and c != root]
    yield from _rows(fidx, (b.to_pylist() for b in pf.iter_batches(columns=cols, batch_size=1024)), plan)


def _hf(fidx: int, f: InputFile, plan: ShardPlan, text_field: str) -> Iterator[Raw]:
    from codestage.data.hf import columns_of, iter_batches, open_dataset

    ds = open_dataset(f.path)
    cols = columns_of(ds)
    if cols and text_field.split(".")[0] not in cols:
        rows = len(ds) if hasattr(ds, "__len__") else 1
        yield _missing(fidx, f.path, text_field, cols, rows)
        return
    yield from _rows(fidx, iter_batches(ds, 1000), plan)


def iter_raw(files: Sequence[InputFile], plan: ShardPlan, text_field: str) -> Iterator[Raw]:
    """Every owned raw record of `files`, in (file index, record) order."""
    for fidx, f in enumerate(files):
        single = f.kind in ("code", "txt", "other")
        if (plan.by_file or single) and not plan.owns(fidx, 0):
            continue
        if f.kind == "jsonl":
            yield from _jsonl(fidx, f, plan)
        elif f.kind == "parquet":
            yield from _parquet(fidx, f, plan, text_field)
        elif f.kind == "hf":
            yield from _hf(fidx, f, plan, text_field)
        elif f.kind in ("code", "txt"):
            yield from _whole(fidx, f, f.kind)
        else:
            issue = Issue("unsupported_file", fidx, 0, f.path, f"not a data or source-code file ({Path(f.path).suffix or 'no extension'})")
            yield (fidx, 0, "issue", issue)
