"""The pretraining-source reader under fuzzed files: strict mode raises a DataError naming
`file:line` of the first bad record; lenient mode (an IssueLog) yields every good record, in order,
and counts every bad one, so documents + counted issues = records. Never another exception type.

Inputs: JSON lines (plain, gzip, zstd) whose lines are valid documents or faults (malformed JSON,
non-objects, a missing or mistyped text field, invalid UTF-8, empty or over-long text), with
U+2028 / U+0085 / CRLF / blank lines / huge fields mixed in; corrupted compressed files; and
directories of text, code, binary and unsupported files.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codestage.data.issues import BAD, IssueLog
from codestage.data.parse import ParseOptions
from codestage.data.sources import iter_documents
from codestage.errors import DataError

FUZZ = settings(derandomize=True, max_examples=120, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
MAX_CHARS = 2000
TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(lambda t: t.strip()),
    st.sampled_from(["a\u2028b", "x\x85y", "中文 text", 'quote " and \\ backslash', "tab\there", "line\nbreak"]),
)

# (line bytes, good text or None when the record is bad)
GOOD = TEXT.map(lambda t: (json.dumps({"text": t, "source": "x", "meta": {"k": 1}}, ensure_ascii=False).encode(), t))
BAD_LINES = st.sampled_from([
    b"{not json", b'{"text": "unterminated', b"[1, 2]", b"42", b'"just a string"', b"null",
    b'{"body": "no text field"}', b'{"text": 5}', b'{"text": null}', b'{"text": ["a"]}', b'{"text": {"nested": 1}}',
    b'{"text": "bad \xff utf8"}', b"\xc3\x28", b'{"text": ""}', b'{"text": "   \\n  "}',
    b'{"text": "' + b"x" * (MAX_CHARS + 1) + b'"}',
]).map(lambda line: (line, None))
LINE = st.one_of(GOOD, GOOD, BAD_LINES)


def _write(path: Path, data: bytes, codec: str) -> None:
    if codec == "gz":
        data = gzip.compress(data)
    elif codec == "zst":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)


@FUZZ
@given(lines=st.lists(LINE, min_size=1, max_size=8), codec=st.sampled_from(["", "gz", "zst"]),
       newline=st.sampled_from([b"\n", b"\r\n"]), blank=st.booleans())
def test_jsonl_strict_names_the_first_bad_line_and_lenient_counts_every_record(lines, codec, newline, blank) -> None:
    body, numbered = b"", []
    for line, text in lines:
        if blank:
            body += b"  " + newline
        body += line + newline
        numbered.append((body.count(b"\n"), text))
    opts = ParseOptions(max_chars=MAX_CHARS)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"src.jsonl{'.' + codec if codec else ''}"
        _write(path, body, codec)
        good = [t for _, t in numbered if t is not None]
        first_bad = next((n for n, t in numbered if t is None), None)
        try:
            docs = list(iter_documents([path], "fuzz", options=opts))
        except DataError as exc:
            assert first_bad is not None, str(exc)[:300]
            assert f"{path}:{first_bad}:" in str(exc), (first_bad, str(exc)[:300])
        else:
            assert first_bad is None and [d.text for d in docs] == good
        log = IssueLog()
        docs = list(iter_documents([path], "fuzz", options=opts, issues=log))
        assert [d.text for d in docs] == good
        assert sum(log.totals().values()) == len(numbered) - len(good), log.to_json()
        assert all(kind in BAD for kind in log.totals())
        assert all(d.location.startswith(f"{path}:") for d in docs)


def _corrupt(codec: str, cut: float, flip: bool) -> bytes:
    body = b"".join(json.dumps({"text": f"document {i} " * 20}).encode() + b"\n" for i in range(300))
    data = gzip.compress(body) if codec == "gz" else zstandard.ZstdCompressor().compress(body)
    at = int(len(data) * cut)
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:] if flip else data[:at]


@FUZZ
@given(codec=st.sampled_from(["gz", "zst"]), cut=st.floats(0.1, 0.9, allow_subnormal=False), flip=st.booleans())
def test_a_corrupted_compressed_file_is_an_error_or_a_counted_skip(codec, cut, flip) -> None:
    if codec == "zst" and not flip:
        return  # a truncated zstd frame: see test_a_truncated_zstd_file_is_not_silently_empty
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"src.jsonl.{codec}"
        path.write_bytes(_corrupt(codec, cut, flip))
        try:
            list(iter_documents([path], "fuzz"))
            strict_ok = True
        except DataError as exc:
            assert str(path) in str(exc)
            strict_ok = False
        log = IssueLog()
        docs = list(iter_documents([path], "fuzz", issues=log))
        counted = sum(log.totals().values())
        assert (len(docs) == 300 and counted == 0) or counted >= 1, (len(docs), log.totals())
        assert strict_ok == (counted == 0)


def test_a_truncated_zstd_file_is_not_silently_empty(tmp_path: Path) -> None:
    path = tmp_path / "src.jsonl.zst"
    path.write_bytes(_corrupt("zst", 0.5, False))
    log = IssueLog()
    docs = list(iter_documents([path], "fuzz", issues=log))
    assert docs or sum(log.totals().values()) >= 1


FILES = st.sampled_from([
    ("a.txt", "plain text ünïcode\u2028".encode(), True),
    ("b.txt", b"bad \xff utf-8", False),
    ("c.py", b"def f():\n    return 1\n", True),
    ("d.py", b"\x00\x01binary", False),
    ("e.rs", "fn main() { println!(\"中\"); }".encode(), True),
    ("f.bin", b"\x00\x00", None),  # unsupported: counted as filtered, not an error
    ("g.md", b"# notes", None),
    ("h.txt", b"   \n", False),  # empty document
    ("i.txt.gz", gzip.compress(b"zipped text"), True),
])


@FUZZ
@given(files=st.lists(FILES, min_size=1, max_size=6, unique_by=lambda f: f[0]), nested=st.booleans())
def test_a_directory_walk_accounts_for_every_file(files, nested) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "corpus"
        for i, (name, data, _) in enumerate(files):
            where = root / ("sub" if nested and i % 2 else "") / name
            where.parent.mkdir(parents=True, exist_ok=True)
            where.write_bytes(data)
        log = IssueLog()
        docs = list(iter_documents([root], "fuzz", issues=log))
        good = sum(1 for *_, ok in files if ok)
        bad = sum(1 for *_, ok in files if ok is False)
        other = sum(1 for *_, ok in files if ok is None)
        totals = log.totals()
        assert len(docs) == good
        assert sum(n for k, n in totals.items() if k in BAD) == bad, totals
        assert totals.get("unsupported_file", 0) == other, totals
        try:
            list(iter_documents([root], "fuzz"))
        except DataError as exc:
            assert bad and str(root) in str(exc)
        else:
            assert not bad


# Found by fuzzing, then fixed: a JSON line nested too deeply raised RecursionError, and a JSON
# "\ud800" escape yielded a document whose text could not be encoded as UTF-8.
def test_json_nested_too_deeply_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text('{"text": "x", "m": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(DataError, match=str(path)):
        list(iter_documents([path], "fuzz"))


def test_a_lone_surrogate_escape_is_not_a_document(tmp_path: Path) -> None:
    path = tmp_path / "surrogate.jsonl"
    path.write_text('{"text": "broken \\ud800 emoji"}\n')
    try:
        docs = list(iter_documents([path], "fuzz"))
    except DataError:
        return
    for d in docs:
        d.text.encode("utf-8")
