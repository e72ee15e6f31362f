"""No command deletes or overwrites what codestage did not write, and no output lands on an input.

Each command with an output path is run through the real CLI against a folder or file that is
not its own output, against its own input, and (where it replaces a folder) against a folder
holding its input: every one exits with status 2 naming the option and the path, and every file
is still there, byte for byte. Its own earlier output is replaced or written into as before.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from codestage.errors import ConfigError
from codestage.outputs import EVAL, STORE, STUDY, check_output
from codestage.resources import DATA_DIR

CORPUS = DATA_DIR / "corpora" / "nl_en.jsonl.gz"




def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def unrelated(tmp_path: Path) -> Path:
    """A user's folder that happens to be named as an output."""
    folder = tmp_path / "thesis"
    (folder / "chapters").mkdir(parents=True)
    (folder / "notes.txt").write_text("three years of work\n")
    (folder / "chapters" / "one.md").write_text("# One\n")
    return folder


def small_corpus(path: Path, n: int = 40) -> Path:
    import gzip

    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        path.write_text("".join(next(f) for _ in range(n)), encoding="utf-8")
    return path


def test_data_build_refuses_an_unrelated_folder_and_its_own_input(tmp_path, cli_run, unrelated) -> None:
    data = small_corpus(tmp_path / "docs.jsonl")
    before, data_bytes = snapshot(unrelated), data.read_bytes()
    cases = [
        (unrelated, "exists and is not a codestage token store"),
        (data, "is also an input"),
        (tmp_path, "contains the input"),
        (tmp_path / "report.pdf", "exists and is a file"),
    ]
    (tmp_path / "report.pdf").write_bytes(b"%PDF")
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    small_corpus(src_dir / "a.jsonl")
    for out, message in cases:
        code, msg = cli_run("data", "build", data, "--tokenizer", tmp_path / "tok", "--out", out)
        assert code == 2 and f"--out {out}" in msg and message in msg, msg
    code, msg = cli_run("data", "build", src_dir, "--tokenizer", tmp_path / "tok", "--out", src_dir / "store")
    assert code == 2 and "lies inside the input" in msg, msg
    assert snapshot(unrelated) == before and data.read_bytes() == data_bytes and not (src_dir / "store").exists()
    assert (tmp_path / "report.pdf").read_bytes() == b"%PDF"


def test_data_build_replaces_its_own_store_and_fills_an_empty_folder(tmp_path, cli_run, tokenizer_dir) -> None:
    data = small_corpus(tmp_path / "docs.jsonl")
    out = tmp_path / "store"
    out.mkdir()
    for n in (40, 20):  # an empty folder, then our own store (replaced by a smaller one)
        small_corpus(data, n)
        code, msg = cli_run("data", "build", data, "--tokenizer", tokenizer_dir, "--out", out, "--workers", "1")
        assert code == 0, msg
        assert json.loads((out / "manifest.json").read_text())["documents"] == n


def test_data_merge_and_decontam_refuse_folders_and_files_they_did_not_write(tmp_path, cli_run, unrelated) -> None:
    before = snapshot(unrelated)
    code, msg = cli_run("data", "merge", tmp_path / "s0", tmp_path / "s1", "--out", unrelated)
    assert code == 2 and "not a codestage token store" in msg, msg
    data = small_corpus(tmp_path / "docs.jsonl")
    code, msg = cli_run("data", "decontam", "--sources", f"web={data}", "--tasks", "cosqa",
                        "--drop-out", unrelated)
    assert code == 2 and f"--drop-out {unrelated}" in msg and "decontaminated copies" in msg, msg
    code, msg = cli_run("data", "decontam", "--sources", f"web={data}", "--tasks", "cosqa",
                        "--report", unrelated / "notes.txt")
    assert code == 2 and "not a codestage decontamination report" in msg, msg
    code, msg = cli_run("data", "decontam", "--sources", f"web={data}", "--tasks", "cosqa", "--report", data)
    assert code == 2 and "is also an input" in msg, msg
    assert snapshot(unrelated) == before


def test_eval_refuses_foreign_results_and_a_model_folder_but_writes_beside_other_files(tmp_path, cli_run, micro_model_dir) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "results.json").write_text('{"accuracy": 0.93}\n')
    code, msg = cli_run("eval", "--tasks", "mbpp", "--check-references", "--out", theirs)
    assert code == 2 and "not a codestage evaluation folder" in msg and (theirs / "results.json").read_text() == '{"accuracy": 0.93}\n'
    code, msg = cli_run("eval", "--model", micro_model_dir, "--tasks", "cosqa", "--out", micro_model_dir)
    assert code == 2 and "is also an input" in msg, msg
    code, msg = cli_run("eval", "--model", micro_model_dir, "--tasks", "cosqa", "--out", micro_model_dir / "eval")
    assert code == 2 and "lies inside the input" in msg, msg
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my notes\n")
    for _ in range(2):  # a folder with other files, then our own results again
        code, msg = cli_run("eval", "--tasks", "mbpp", "--check-references", "--limit", "2", "--out", mine)
        assert code == 0, msg
    assert (mine / "README.md").read_text() == "my notes\n" and (mine / "results.json").is_file()


def test_lm_eval_export_and_compare_json_refuse_what_they_did_not_write(tmp_path, cli_run) -> None:
    out = tmp_path / "tasks"
    out.mkdir()
    (out / "README.md").write_text("# my lm-eval tasks\n")
    code, msg = cli_run("tasks", "export-lm-eval", out, "--tasks", "cosqa")
    assert code == 2 and "OUT " in msg and "lm-eval task export" in msg and (out / "README.md").read_text() == "# my lm-eval tasks\n"
    fresh = tmp_path / "fresh"
    for _ in range(2):  # new, then our own export again
        code, msg = cli_run("tasks", "export-lm-eval", fresh, "--tasks", "cosqa")
        assert code == 0, msg
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"task": "cosqa", "doc_id": 0, "item_hash": "h", "gold": [0], "correct": True}) + "\n")
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}\n')
    for target, message in ((notes, "not a codestage comparison JSON"), (items, "is also an input")):
        code, msg = cli_run("compare", items, items, "--json", target)
        assert code == 2 and f"--json {target}" in msg and message in msg, msg
    assert notes.read_text() == '{"mine": true}\n'


def test_run_and_pretrain_refuse_a_folder_that_is_not_a_study_or_lies_in_an_input(tmp_path, cli_run, unrelated) -> None:
    src = tmp_path / "corpus"
    src.mkdir()
    small_corpus(src / "a.jsonl")
    cfg = {"sources": {"web": {"paths": [str(src)]}}, "model": {"preset": "micro"},
           "pretrain": {"train": {"steps": 2, "warmup_steps": 1, "batch_size": 1, "seq_len": 16}}}
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(cfg))
    before = snapshot(unrelated)
    for cmd in (["run", config], ["pretrain", config]):
        code, msg = cli_run(*cmd, "--out", unrelated)
        assert code == 2 and "not a codestage study folder" in msg, msg
        code, msg = cli_run(*cmd, "--out", src / "runs")
        assert code == 2 and "lies inside the input" in msg, msg
    assert snapshot(unrelated) == before and not (src / "runs").exists()


def test_check_output_recognises_older_study_folders_and_refuses_symlinked_inputs(tmp_path) -> None:
    old = tmp_path / "study"
    (old / "stores" / "web").mkdir(parents=True)
    (old / "stores" / "web" / ".step.json").write_text('{"key": "k"}')
    (old / "notes.txt").write_text("x")
    assert check_output(old, STUDY) == old  # a study folder from before the marker
    data = tmp_path / "data.jsonl"
    data.write_text("{}\n")
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(ConfigError, match="contains the input"):
        check_output(link, STORE, inputs=[data])  # the same folder under another name
    with pytest.raises(ConfigError, match="is also an input"):
        check_output(tmp_path / "link" / "data.jsonl", EVAL, inputs=[data])
