"""Sources in every supported format, filters, and bad input: counted per file with line numbers, or an
error naming file:line in strict mode. Every record is accounted: documents + dropped = records."""

from __future__ import annotations

import gzip
import io
import json
import re
from pathlib import Path

import pytest

from codestage.data.build import BuildSpec, build
from codestage.data.issues import IssueLog
from codestage.data.parse import ParseOptions
from codestage.data.sources import iter_documents
from codestage.data.store import TokenStore
from codestage.errors import DataError
from codestage.resources import bundled


def code_records(n: int) -> list[dict]:
    with gzip.open(bundled("corpora", "code.jsonl.gz"), "rt", encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n), f)]


@pytest.fixture()
def bad_jsonl(tmp_path) -> Path:
    """Ten lines: good ones mixed with each kind of bad record, at known line numbers."""
    good = [json.dumps({"text": r["text"][:400]}).encode() for r in code_records(5)]
    lines = [
        good[0],                                     # 1
        b'{"text": "caf\xe9 au lait"}',              # 2 invalid UTF-8 (latin-1 byte)
        good[1],                                     # 3
        b'{"text": "unterminated',                   # 4 malformed JSON
        b'{"content": "no text field"}',             # 5 missing field
        b'["a", "list"]',                            # 6 not an object
        b'{"text": 42}',                             # 7 wrong type
        b'{"text": "   \\n  "}',                     # 8 empty
        json.dumps({"text": "x" * 5000}).encode(),   # 9 too long for max_chars=2000
        b"",                                         # 10 blank line: not a record
        good[2],                                     # 11
        b'{"text": "also broken',                    # 12 malformed JSON again
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_bad_records_are_counted_with_their_lines(tmp_path, tokenizer_dir, bad_jsonl) -> None:
    m = build([bad_jsonl], tokenizer_dir, tmp_path / "s", BuildSpec("b", ParseOptions(max_chars=2000), workers=1))
    dropped = m["inputs"][0]["dropped"]
    lines = {k: [e["at"].rsplit(":", 1)[1] for e in v["first"]] for k, v in dropped.items()}
    assert lines == {"invalid_utf8": ["2"], "malformed_json": ["4", "12"], "missing_field": ["5"], "not_an_object": ["6"],
                     "wrong_type": ["7"], "empty": ["8"], "too_long": ["9"]}
    assert m["documents"] == 3 and m["records"] == 11 and m["bad_records"] == 8
    assert m["documents"] + sum(m["dropped"].values()) == m["records"]
    assert "field 'text'" in dropped["missing_field"]["first"][0]["why"]


def test_strict_mode_stops_at_the_first_bad_line(tmp_path, tokenizer_dir, bad_jsonl) -> None:
    with pytest.raises(DataError, match=re.escape(f"{bad_jsonl}:2: invalid UTF-8")):
        build([bad_jsonl], tokenizer_dir, tmp_path / "s", BuildSpec("b", strict=True, workers=1))
    assert not (tmp_path / "s").exists()
    with pytest.raises(DataError, match=re.escape(f"{bad_jsonl}:2:")):
        list(iter_documents([bad_jsonl], "b"))  # the serial reader is strict unless given an IssueLog
    log = IssueLog()
    assert len(list(iter_documents([bad_jsonl], "b", issues=log))) == 4  # line 9 is fine under the default max_chars
    assert log.totals()["malformed_json"] == 2


def test_code_directory_counts_binary_and_other_files(tmp_path, tokenizer_dir) -> None:
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    recs = [r for r in code_records(40) if r["meta"]["language"] == "Python"][:3]
    for i, r in enumerate(recs):
        (repo / "pkg" / f"m{i}.py").write_text(r["text"], encoding="utf-8")
    (repo / "pkg" / "blob.c").write_bytes(b"\x7fELF\x00\x01\x02binary")
    (repo / "pkg" / "latin.h").write_bytes(b"/* caf\xe9 */\n")
    (repo / "README.md").write_text("readme")
    (repo / ".git").mkdir()
    (repo / ".git" / "config").write_text("hidden folders are not walked")
    m = build([repo], tokenizer_dir, tmp_path / "s", BuildSpec("repo", workers=1))
    inp = m["inputs"][0]
    assert inp["kind"] == "directory" and inp["files"] == 6 and inp["documents"] == 3
    assert inp["dropped"]["binary"]["count"] == 2
    assert [e["at"] for e in inp["dropped"]["binary"]["first"]] == [str(repo / "pkg" / "blob.c"), str(repo / "pkg" / "latin.h")]
    assert inp["dropped"]["unsupported_file"]["count"] == 1
    assert m["tokens_per_language"].keys() == {"Python"}
    with pytest.raises(DataError, match="blob.c: binary"):
        build([repo], tokenizer_dir, tmp_path / "strict", BuildSpec("repo", strict=True, workers=1))


def test_formats_zst_parquet_txt_give_the_same_documents(tmp_path, tokenizer_dir) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    recs = code_records(12)
    texts = [r["text"] for r in recs]
    blob = "".join(json.dumps({"text": t, "meta": r["meta"]}) + "\n" for t, r in zip(texts, recs)).encode()
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(blob))
    pq.write_table(pa.table({"content": texts, "license": [r["meta"]["license"] for r in recs],
                             "lang": [r["meta"]["language"] for r in recs]}), tmp_path / "a.parquet", row_group_size=5)
    (tmp_path / "t.txt").write_text(texts[0], encoding="utf-8")
    with gzip.open(tmp_path / "t.txt.gz", "wt", encoding="utf-8") as f:
        f.write(texts[1])
    zst = [d.text for d in iter_documents([tmp_path / "a.jsonl.zst"], "z")]
    par = list(iter_documents([tmp_path / "a.parquet"], "p", text_field="content"))
    assert zst == [d.text for d in par] == texts
    assert [d.language for d in par] == [r["meta"]["language"] for r in recs]
    assert par[3].location == f"{tmp_path / 'a.parquet'}:row4"
    assert [d.text for d in iter_documents([tmp_path / "t.txt", tmp_path / "t.txt.gz"], "t")] == texts[:2]
    m = build([tmp_path / "a.parquet"], tokenizer_dir, tmp_path / "s", BuildSpec("p", ParseOptions(text_field="content"), workers=1))
    assert m["documents"] == 12 and set(m["tokens_per_language"]) == {r["meta"]["language"] for r in recs}


def test_parquet_missing_column_is_counted_for_every_row(tmp_path, tokenizer_dir) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"content": ["one document", "two documents"]}), tmp_path / "a.parquet")
    (tmp_path / "ok.jsonl").write_text(json.dumps({"text": "a fine document"}) + "\n")
    m = build([tmp_path / "a.parquet", tmp_path / "ok.jsonl"], tokenizer_dir, tmp_path / "s", BuildSpec("p", workers=1))
    miss = m["inputs"][0]["dropped"]["missing_field"]
    assert miss["count"] == 2 and "no column 'text'" in miss["first"][0]["why"]
    assert m["records"] == 3 and m["documents"] == 1


def test_filters_length_language_licence(tmp_path, tokenizer_dir) -> None:
    recs = code_records(60)
    path = tmp_path / "code.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    langs, lics = frozenset({"Python", "Go"}), frozenset({"MIT", "BSD-3-Clause"})
    opts = ParseOptions(min_chars=300, languages=langs, licenses=lics)
    m = build([path], tokenizer_dir, tmp_path / "s", BuildSpec("c", opts, workers=1))
    short = [r for r in recs if len(r["text"]) < 300]
    wrong_lang = [r for r in recs if len(r["text"]) >= 300 and r["meta"]["language"] not in langs]
    wrong_lic = [r for r in recs if len(r["text"]) >= 300 and r["meta"]["language"] in langs and r["meta"]["license"] not in lics]
    kept = len(recs) - len(short) - len(wrong_lang) - len(wrong_lic)
    assert m["dropped"] == {k: v for k, v in {"too_short": len(short), "language": len(wrong_lang),
                                              "license": len(wrong_lic)}.items() if v}
    assert m["documents"] == kept > 0
    assert set(m["tokens_per_language"]) <= langs
    assert m["filters"] == {"min_chars": 300, "max_chars": 5_000_000, "languages": ["Go", "Python"],
                            "licenses": ["BSD-3-Clause", "MIT"]}


def test_hf_saved_dataset_and_data_dir(tmp_path, tokenizer_dir) -> None:
    datasets = pytest.importorskip("datasets")
    recs = code_records(8)
    ds = datasets.Dataset.from_dict({"content": [r["text"] for r in recs], "language": [r["meta"]["language"] for r in recs]})
    ds.save_to_disk(str(tmp_path / "saved"))
    docs = list(iter_documents([tmp_path / "saved"], "hf", text_field="content"))
    assert [d.text for d in docs] == [r["text"] for r in recs]
    assert docs[0].language == recs[0]["meta"]["language"]
    files = tmp_path / "files"
    files.mkdir()
    (files / "train.jsonl").write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in recs))
    m = build([f"hf:{files}"], tokenizer_dir, tmp_path / "s", BuildSpec("hf", workers=1))
    assert m["documents"] == 8 and TokenStore.open(tmp_path / "s").location(2) == f"hf:{files}:row3"
    with pytest.raises(DataError, match="missing_field 8"):  # its column is `content`, not `text`
        build([tmp_path / "saved"], tokenizer_dir, tmp_path / "s2", BuildSpec("hf", workers=1))


def test_missing_datasets_package_is_a_clear_error(monkeypatch, tmp_path) -> None:
    import builtins

    real = builtins.__import__

    def no_datasets(name, *a, **k):
        if name == "datasets":
            raise ImportError("no module named datasets")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(DataError, match=r"codestage\[hf\]"):
        list(iter_documents(["hf:someone/some-corpus"], "x"))


def test_a_zstd_frame_ending_exactly_at_a_read_boundary_is_followed_by_the_next() -> None:
    """Frames are read in 1 MiB chunks; one may end exactly where a chunk ends."""
    import zstandard

    from codestage.data.readers import _ZstdFrames

    frames = [zstandard.ZstdCompressor().compress(b'{"text": "one"}\n'), zstandard.ZstdCompressor().compress(b'{"text": "two"}\n')]

    class OneFramePerRead(io.RawIOBase):
        def __init__(self) -> None:
            self.left = list(frames)

        def read(self, n: int = -1) -> bytes:
            return self.left.pop(0) if self.left else b""

    reader = io.BufferedReader(_ZstdFrames(OneFramePerRead()))
    assert reader.read() == b'{"text": "one"}\n{"text": "two"}\n'
    cut = _ZstdFrames(io.BytesIO(frames[0][:-3]))
    with pytest.raises(EOFError):
        io.BufferedReader(cut).read()
