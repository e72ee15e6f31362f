"""`codestage data ...` end to end: sharded build + merge, inspect, decontam, and bad input as exit 2."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from codestage import cli
from codestage.data.store import TokenStore
from codestage.resources import bundled


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["codestage", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, " ".join((captured.err + captured.out).split())


@pytest.fixture()
def corpus(tmp_path) -> Path:
    with gzip.open(bundled("corpora", "code.jsonl.gz"), "rb") as f:
        lines = [line for _, line in zip(range(30), f)]
    path = tmp_path / "code.jsonl"
    path.write_bytes(b"".join(lines + [lines[3], b'{"text": "broken\n']))
    return path


def test_sharded_build_merge_inspect(tmp_path, monkeypatch, capsys, tokenizer_dir, corpus) -> None:
    common = ["--tokenizer", str(tokenizer_dir), "--dedup", "--block-records", "4"]
    code, _ = run_cli(monkeypatch, capsys, "data", "build", str(corpus), "--out", str(tmp_path / "one"), *common)
    assert code == 0
    for i in range(2):
        code, msg = run_cli(monkeypatch, capsys, "data", "build", str(corpus), "--out", str(tmp_path / f"s{i}"),
                            "--shard", f"{i}/2", *common)
        assert code == 0 and f"shard {i}/2" in msg
    code, msg = run_cli(monkeypatch, capsys, "data", "merge", str(tmp_path / "s1"), str(tmp_path / "s0"),
                        "--out", str(tmp_path / "merged"))
    assert code == 0
    a, b = TokenStore.open(tmp_path / "one"), TokenStore.open(tmp_path / "merged")
    assert np.array_equal(np.asarray(a.tokens), np.asarray(b.tokens)) and np.array_equal(a.offsets, b.offsets)
    code, msg = run_cli(monkeypatch, capsys, "data", "inspect", str(tmp_path / "merged"))
    assert code == 0
    assert "duplicate 1" in msg and "malformed_json 1" in msg and "Python" in msg and "per language" in msg
    assert f"{a.n_tokens:,}" in msg


def test_strict_build_names_file_and_line(tmp_path, monkeypatch, capsys, tokenizer_dir, corpus) -> None:
    code, msg = run_cli(monkeypatch, capsys, "data", "build", str(corpus), "--tokenizer", str(tokenizer_dir),
                        "--out", str(tmp_path / "s"), "--strict")
    assert code == 2 and f"{corpus}:32" in msg and "malformed JSON" in msg
    assert not (tmp_path / "s").exists()
    code, msg = run_cli(monkeypatch, capsys, "data", "build", str(corpus), "--tokenizer", str(tokenizer_dir),
                        "--out", str(tmp_path / "s"), "--shard", "2/2")
    assert code == 2 and "--shard" in msg


def test_inspect_mixture_shows_repeats_and_warnings(tmp_path, monkeypatch, capsys) -> None:
    mix = {"unit": "tokens", "phases": [{"steps": [0, 10], "tokens": {"code": 640}, "token_share": {"code": 1.0},
                                         "requested_weights": {"code": 1.0},
                                         "tokens_per_source_language": {"code": {"Python": 600, "Go": 40}}}],
           "epochs": {"code": 5.5}, "repeats": {"code": 5}, "tokens_total": {"code": 640},
           "warnings": ["source 'code' was used for 5.5 epochs (repeated 5 times), more than max_epochs=4"]}
    (tmp_path / "mixture.json").write_text(json.dumps(mix))
    code, msg = run_cli(monkeypatch, capsys, "data", "inspect", str(tmp_path))
    assert code == 0 and "Python 600" in msg and "5.5" in msg and "warning" in msg
    code, msg = run_cli(monkeypatch, capsys, "data", "inspect", str(tmp_path / "nothing"))
    assert code == 2 and "neither a token store" in msg


def test_decontam_command(tmp_path, monkeypatch, capsys) -> None:
    from codestage.eval.registry import get_task

    item = get_task("mbpp_sanitized").load()[0]
    doc = tmp_path / "d.jsonl"
    doc.write_text(json.dumps({"text": "# copied\n" + item.reference}) + "\n" + json.dumps({"text": "print('hello')"}) + "\n")
    code, msg = run_cli(monkeypatch, capsys, "data", "decontam", "--sources", f"web={doc}", "--tasks", "mbpp_sanitized",
                        "--drop-out", str(tmp_path / "clean"), "--report", str(tmp_path / "r.json"), "--workers", "1")
    assert code == 0 and "mbpp_sanitized" in msg
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["sources"]["web"]["documents_touched"] == 1 and rep["sources"]["web"]["dropped"] == 1
    with gzip.open(tmp_path / "clean" / "web.jsonl.gz", "rt") as f:
        assert [json.loads(x)["text"] for x in f] == ["print('hello')"]
    code, msg = run_cli(monkeypatch, capsys, "data", "decontam", "--tasks", "mbpp")
    assert code == 2 and "--sources" in msg
