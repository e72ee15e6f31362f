"""The end of `codestage run`: a warnings block naming what changed what was measured, and a study
folder that a rerun accepts as its own."""

from __future__ import annotations

import gzip
import json

import pytest
import yaml

from codestage.outputs import STUDY_MARKER
from codestage.resources import DATA_DIR

pytestmark = pytest.mark.slow  # a whole (micro) study: tokenizer, stores, two arms, evaluation




def test_a_study_run_ends_with_its_warnings_and_reruns_in_its_own_folder(tmp_path, cli_run) -> None:
    with gzip.open(DATA_DIR / "corpora/nl_en.jsonl.gz", "rt", encoding="utf-8") as f:
        lines = [next(f) for _ in range(30)]
    text = tmp_path / "text.jsonl"
    text.write_text("".join(lines[:15]) + '{"text": "broken\n' + "".join(lines[15:]), encoding="utf-8")
    cfg = {
        "sources": {"nl": {"paths": [str(text)], "group": "text"},
                    "code": {"paths": [str(DATA_DIR / "corpora/code.jsonl.gz")], "group": "code", "max_docs": 20}},
        "data": {"strict": False, "decontam": False},
        "tokenizer": {"vocab_size": 300, "sample_chars_per_source": 5000},
        "model": {"preset": "micro"},
        "pretrain": {"train": {"steps": 2, "batch_size": 1, "seq_len": 16, "warmup_steps": 1}},
        "eval": {"tasks": ["cosqa", "scienceqa"], "sample": 3, "max_new_tokens": 4},
    }
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    code, msg = cli_run("run", config, "--out", out, "--quiet")
    assert code == 0, msg[-2000:]
    warnings = msg[msg.index("warnings"):]
    assert "store nl: 1 of 31 records dropped (malformed_json 1)" in warnings
    assert "a seeded subsample of items, not the full sets: cosqa 3 of 604 (seed 0), scienceqa 3 of 194 (seed 0)" in warnings
    assert "scienceqa: test split: 194 text-only problems evaluated" in warnings
    assert warnings.count("scienceqa: test split") == 1  # the same note from both arms, said once
    assert json.loads((out / STUDY_MARKER).read_text())["kind"] == "codestage study"
    code, msg = cli_run("run", config, "--out", out, "--quiet")  # its own folder: accepted
    assert code == 0 and "up to date" in msg, msg[-2000:]
