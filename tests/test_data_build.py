"""Store builds: parallel equals serial, shards merge into exactly the single build, dedup is counted,
tokens are the HF tokenizer's, and the serial build from documents already read writes the same kind of store."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from codestage.data.build import BuildSpec, build, build_from_documents
from codestage.data.merge import merge
from codestage.data.sources import iter_documents
from codestage.data.store import TokenStore
from codestage.errors import DataError
from codestage.resources import bundled


def corpus_lines(name: str, n: int) -> list[bytes]:
    with gzip.open(bundled("corpora", f"{name}.jsonl.gz"), "rb") as f:
        return [line.rstrip(b"\n") for _, line in zip(range(n), f)]


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def assert_same_store(a: Path, b: Path) -> None:
    x, y = TokenStore.open(a), TokenStore.open(b)
    assert np.array_equal(np.asarray(x.tokens), np.asarray(y.tokens))
    assert np.array_equal(x.offsets, y.offsets)
    assert np.array_equal(np.asarray(x.docs), np.asarray(y.docs))
    strip = ("shard", "merged_from")
    assert {k: v for k, v in x.manifest.items() if k not in strip} == {k: v for k, v in y.manifest.items() if k not in strip}
    assert x.files() == y.files()


@pytest.fixture(scope="module")
def mixed_file(tmp_path_factory) -> Path:
    """60 code + 40 English documents with 4 planted exact duplicates (one only differing in spacing)."""
    code, nl = corpus_lines("code", 60), corpus_lines("nl_en", 40)
    respaced = json.dumps({"text": "  " + "\n\n".join(json.loads(code[7])["text"].split("\n")) + " "}).encode()
    lines = code[:30] + nl[:20] + [code[2], nl[5], respaced] + code[30:] + nl[20:] + [code[45]]
    return write_lines(tmp_path_factory.mktemp("mixed") / "mixed.jsonl", lines)


def test_parallel_build_equals_serial(tmp_path, tokenizer_dir, mixed_file) -> None:
    serial = build([mixed_file], tokenizer_dir, tmp_path / "serial", BuildSpec("mix", dedup=True, workers=1))
    build([mixed_file], tokenizer_dir, tmp_path / "parallel", BuildSpec("mix", dedup=True, workers=2))
    assert_same_store(tmp_path / "serial", tmp_path / "parallel")
    assert serial["documents"] == 100 and serial["dropped"] == {"duplicate": 4}


def test_tokens_are_the_hf_tokenizers_with_eos_and_locations(tmp_path, tokenizer, tokenizer_dir, mixed_file) -> None:
    build([mixed_file], tokenizer_dir, tmp_path / "s", BuildSpec("mix", workers=1))
    store = TokenStore.open(tmp_path / "s")
    docs = list(iter_documents([mixed_file], "mix"))
    assert store.n_docs == len(docs) == 104
    for i in (0, 31, 77, 103):
        expected = tokenizer(docs[i].text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert store.doc(i).tolist() == expected
        assert store.location(i) == docs[i].location
    assert store.n_tokens == int(store.offsets[-1]) == store.manifest["tokens"]
    names, idx = store.languages()
    assert names[idx[0]] == "Python" and "text" in names
    per = store.manifest["tokens_per_language"]
    assert sum(per.values()) == store.n_tokens
    assert per["text"] == sum(len(store.doc(i)) for i in range(store.n_docs) if names[idx[i]] == "text")


def test_dedup_counts_and_locations(tmp_path, tokenizer_dir, mixed_file) -> None:
    m = build([mixed_file], tokenizer_dir, tmp_path / "d", BuildSpec("mix", dedup=True, workers=1))
    dup = m["inputs"][0]["dropped"]["duplicate"]
    assert dup["count"] == 4
    assert [e["at"] for e in dup["first"]] == [f"{mixed_file}:{n}" for n in (51, 52, 53, 104)]
    assert m["records"] == 104 == m["documents"] + 4
    assert m["dedup"]["enabled"] is True


@pytest.mark.parametrize("shards, block", [(3, 7), (2, 1000)])
def test_shards_merge_into_the_single_build(tmp_path, tokenizer_dir, mixed_file, shards, block) -> None:
    spec = dict(dedup=True, workers=1, block=block)
    build([mixed_file], tokenizer_dir, tmp_path / "single", BuildSpec("mix", **spec))
    parts = []
    for i in range(shards):
        m = build([mixed_file], tokenizer_dir, tmp_path / f"part{i}", BuildSpec("mix", shard=(i, shards), **spec))
        assert m["shard"]["partition"] == "block"
        parts.append(tmp_path / f"part{i}")
    merge(list(reversed(parts)), tmp_path / "merged")
    assert_same_store(tmp_path / "single", tmp_path / "merged")


def test_file_partition_shards_merge_with_cross_shard_duplicates(tmp_path, tokenizer_dir) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    code = corpus_lines("code", 40)
    for k in range(5):
        write_lines(folder / f"part-{k}.jsonl", code[k * 8 : (k + 1) * 8] + [code[0]])  # code[0] repeats in every file
    build([folder], tokenizer_dir, tmp_path / "single", BuildSpec("c", dedup=True, workers=1))
    for i in range(2):
        m = build([folder], tokenizer_dir, tmp_path / f"s{i}", BuildSpec("c", dedup=True, workers=1, shard=(i, 2)))
        assert m["shard"]["partition"] == "file"
    merged = merge([tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged")
    assert_same_store(tmp_path / "single", tmp_path / "merged")
    assert merged["dropped"]["duplicate"] == 5 and merged["documents"] == 40  # part-0 holds code[0] twice
    assert merged["inputs"][0]["kind"] == "directory" and merged["inputs"][0]["sha256"]


def test_merge_refuses_missing_or_mismatched_shards(tmp_path, tokenizer_dir, mixed_file) -> None:
    for i in range(2):
        build([mixed_file], tokenizer_dir, tmp_path / f"s{i}", BuildSpec("mix", workers=1, block=10, shard=(i, 3)))
    with pytest.raises(DataError, match="missing shard"):
        merge([tmp_path / "s0", tmp_path / "s1"], tmp_path / "m")
    partial = merge([tmp_path / "s0", tmp_path / "s1"], tmp_path / "m", allow_partial=True)
    assert partial["documents"] < 104
    build([mixed_file], tokenizer_dir, tmp_path / "other", BuildSpec("mix", workers=1, block=10, shard=(2, 3), dedup=True))
    with pytest.raises(DataError, match="dedup differs"):
        merge([tmp_path / "s0", tmp_path / "s1", tmp_path / "other"], tmp_path / "m2")
    assert not (tmp_path / "m2").exists()


def test_build_from_documents_already_read(tmp_path, tokenizer, mixed_file) -> None:
    m = build_from_documents(iter_documents([mixed_file], "mix"), tokenizer, tmp_path / "old", source="mix",
                             inputs=[mixed_file], max_docs=10)
    store = TokenStore.open(tmp_path / "old")
    assert store.n_docs == m["documents"] == 10
    assert m["inputs"][0]["sha256"] and m["source"] == "mix"


def test_max_docs_and_empty_source(tmp_path, tokenizer_dir, mixed_file) -> None:
    m = build([mixed_file], tokenizer_dir, tmp_path / "few", BuildSpec("mix", workers=1, max_docs=12))
    assert m["documents"] == 12
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="no non-empty documents"):
        build([empty], tokenizer_dir, tmp_path / "none", BuildSpec("e", workers=1))
    assert not (tmp_path / "none").exists()
