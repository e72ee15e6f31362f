"""The whole study at micro size: every stage runs for real, the report is built from the runs' own
outputs, and a second run reuses every finished step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from codestage.config import load_config
from codestage.resources import DATA_DIR
from codestage.results import StudyResults
from codestage.study.report import write_report
from codestage.study.runner import Study, StepOutcome

pytestmark = pytest.mark.slow  # the whole study, every stage, about a minute

RUNS = ["NL", "CODE", "NN", "NC", "CC", "uniform", "stepwise_increase", "stepwise_decrease"]
DOMAINS = ["logic", "legal", "scientific", "analogical", "code_reasoning", "code_generation"]


def micro_config(tmp: Path) -> Path:
    d = DATA_DIR
    cfg = {
        "name": "micro",
        "seed": 0,
        "sources": {
            "nl_en": {"paths": [str(d / "corpora/nl_en.jsonl.gz")], "group": "text", "max_docs": 60},
            "code": {"paths": [str(d / "corpora/code.jsonl.gz")], "group": "code", "max_docs": 60},
        },
        "tokenizer": {"vocab_size": 400, "sample_chars_per_source": 40000},
        "model": {"preset": "micro"},
        "pretrain": {"train": {"steps": 4, "batch_size": 2, "seq_len": 32, "lr": 1e-3, "warmup_steps": 1, "log_every": 1},
                     "arms": {"NL": {"schedule": "text_only"}, "CODE": {"schedule": "constant", "ratio": "2:1"}}},
        "instruct": {
            "sets": {"alpaca_en": {"paths": [str(d / "instruct/alpaca_en/alpaca_en_demo.json")], "group": "text", "max_examples": 40},
                     "code_alpaca": {"paths": [str(d / "instruct/code_alpaca/code_alpaca_2k.json")], "group": "code", "max_examples": 40}},
            "train": {"steps": 4, "batch_size": 2, "seq_len": 64, "lr": 1e-3, "warmup_steps": 1, "log_every": 1},
            "runs": {
                "NN": {"base": "NL", "mixture": {"schedule": "text_only"}},
                "NC": {"base": "NL", "mixture": {"schedule": "stepwise_decrease"}},
                "CC": {"base": "CODE", "mixture": {"schedule": "stepwise_decrease"}},
                "uniform": {"base": "CODE", "mixture": {"schedule": "uniform"}, "table": "mixing"},
                "stepwise_increase": {"base": "CODE", "mixture": {"schedule": "stepwise_increase"}, "table": "mixing"},
                "stepwise_decrease": {"base": "CODE", "mixture": {"schedule": "stepwise_decrease"}, "table": "mixing"},
            },
        },
        "eval": {"sample": 3, "max_new_tokens": 4, "batch_size": 8, "device": "cpu",
                 "heldout": {"code": {"paths": [str(d / "corpora/code.jsonl.gz")], "skip_docs": 60, "max_tokens": 1500}}},
    }
    path = tmp / "micro.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def study_out(tmp_path_factory) -> tuple[Path, dict, dict]:
    tmp = tmp_path_factory.mktemp("study")
    cfg = load_config(micro_config(tmp))
    out = tmp / "out"
    study = Study(cfg, out, progress=False)
    timings = study.run()
    results = write_report(study.run_table(), study.resolved_config(), out, timings=timings)
    return out, results, timings


def test_every_run_and_domain_is_reported(study_out) -> None:
    out, results, _ = study_out
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["runs"].keys() == set(RUNS)
    stages = {r: on_disk["runs"][r]["stage"] for r in RUNS}
    assert stages == {"NL": "pretrain", "CODE": "pretrain", "NN": "instruct", "NC": "instruct", "CC": "instruct",
                      "uniform": "mixing", "stepwise_increase": "mixing", "stepwise_decrease": "mixing"}
    for run in RUNS:
        tasks = on_disk["runs"][run]["tasks"]
        assert set(tasks) == set(DOMAINS)
        for domain in DOMAINS:
            cell = tasks[domain]
            assert cell["metric"] == ("bleu" if domain == "code_generation" else "accuracy")
            assert cell["n"] == 3
            lo, hi = cell["ci95"]
            assert lo <= cell["value"] <= hi
        # the bundled E-KAR slice holds validation records only: the cell says so, beside the paper's test
        assert tasks["analogical"]["split"] == "validation" and tasks["analogical"]["paper_n"] == 335
        assert tasks["analogical"]["split_note"] == "validation, n=3 of 100; the paper's test n=335"
    assert "paper" in on_disk and "config" in on_disk
    assert StudyResults.read(out / "results.json").to_json() == on_disk == results.to_json()


def test_report_cells_come_from_the_runs_items(study_out) -> None:
    out, results, _ = study_out
    for run in ("NL", "NN"):
        items = [json.loads(line) for line in (out / "eval" / run / "items.jsonl").read_text().splitlines()]
        legal = [r for r in items if r["task"] == "jecqa_kd"]
        assert len(legal) == 3
        acc = 100.0 * sum(r["correct"] for r in legal) / len(legal)
        assert results.runs[run].tasks["legal"].value == pytest.approx(acc)
        bpb = sum(r["gold_bits"] for r in legal) / sum(r["gold_bytes"] for r in legal)  # the task loss, from the same items
        assert results.runs[run].tasks["legal"].bits_per_byte.value == pytest.approx(bpb, rel=1e-12)


def test_heldout_loss_and_continuous_metrics_are_reported(study_out) -> None:
    out, results, _ = study_out
    for run in RUNS:
        h = results.runs[run].heldout["code"]
        assert h.skip_docs == 60 and h.documents >= 1 and 0 < h.tokens <= 1500
        assert 0 < h.bits_per_byte < 20 and h.nats_per_token > 0
    # NL and CODE are different models: their held-out code losses differ
    assert results.runs["NL"].heldout["code"].nats_per_token != results.runs["CODE"].heldout["code"].nats_per_token
    legal = results.runs["NL"].tasks["legal"]
    assert legal.gold_logprob.n == 3 and legal.margin.value is not None
    md = (out / "report.md").read_text()
    assert "## Held-out loss" in md and "## Continuous metrics" in md
    table = md.split("### Bits per byte of the gold answer")[1].split("\n\n")[2].splitlines()
    assert len(table) == 2 + len(RUNS) and table[0].count("|") == 2 + len(DOMAINS)  # one column per task evaluated
    assert all(results.runs[r].tasks[d].bits_per_byte.n == 3 for r in RUNS for d in DOMAINS)
    assert "## Test-set contamination" in md and "| mbpp_sanitized |" in md


def test_cc_is_the_stepwise_decrease_run_trained_once(study_out) -> None:
    out, results, timings = study_out
    assert timings["instruct/stepwise_decrease"] == StepOutcome("instruct/stepwise_decrease", "alias", alias_of="instruct/CC")
    assert results.runs["stepwise_decrease"].tasks["legal"] == results.runs["CC"].tasks["legal"]


def test_report_and_plots_are_written(study_out) -> None:
    out, _, _ = study_out
    md = (out / "report.md").read_text()
    for heading in ("Pre-training", "Instruction", "Mixing"):
        assert heading.lower() in md.lower()
    # every table names each column's split and n, under its header
    split_rows = [ln for ln in md.splitlines() if ln.startswith("| *split, n* |")]
    assert len(split_rows) == 3 and all("validation, n=3 of 100; the paper's test n=335" in ln for ln in split_rows)
    assert "| analogical | ekar_zh | accuracy | validation, n=3 of 100; the paper's test n=335 |" in md
    assert "paper" in md.lower()
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert "loss.png" in pngs and any(p.startswith("scores_") for p in pngs)
    for png in (out / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mixture_json_accounts_tokens_per_source(study_out) -> None:
    out, _, _ = study_out
    nl = json.loads((out / "runs" / "NL" / "mixture.json").read_text())
    code = json.loads((out / "runs" / "CODE" / "mixture.json").read_text())
    text = json.dumps(nl)
    assert "schedule" in text
    # Same budget for both arms; NL never draws code, CODE draws both.
    def totals(m: dict) -> dict:
        return m["tokens_total"]
    assert sum(totals(nl).values()) == sum(totals(code).values()) == 4 * 2 * 32
    assert totals(nl).get("code", 0) == 0 and totals(code)["code"] > 0


def test_second_run_reuses_every_step(study_out) -> None:
    out, _, _ = study_out
    cfg = load_config(out.parent / "micro.yaml")
    study = Study(cfg, out, progress=False)
    timings = study.run()
    assert {t.status for t in timings.values()} == {"up_to_date", "alias"}
    assert all(study.state(name) in ("up to date", f"same as {s.alias_of}") for name, s in study.steps.items())
