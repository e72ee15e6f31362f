"""Bad input through the `codestage` command: one clear line naming what and where, exit status 2,
and nothing half-written left behind as if complete."""

from __future__ import annotations

import gzip
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from codestage import cli
from codestage.resources import DATA_DIR


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["codestage", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    captured = capsys.readouterr()
    return int(exc.value.code or 0), " ".join((captured.err + captured.out).split())


def base_config(tmp: Path, **changes) -> dict:
    cfg = {
        "sources": {"nl": {"paths": [str(DATA_DIR / "corpora/nl_en.jsonl.gz")], "group": "text", "max_docs": 20},
                    "code": {"paths": [str(DATA_DIR / "corpora/code.jsonl.gz")], "group": "code", "max_docs": 20}},
        "tokenizer": {"vocab_size": 300, "sample_chars_per_source": 5000},
        "model": {"preset": "micro"},
        "pretrain": {"train": {"steps": 2, "batch_size": 1, "seq_len": 16, "warmup_steps": 1}},
    }
    cfg.update(changes)
    return cfg


def write_yaml(tmp: Path, cfg: dict) -> Path:
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_malformed_yaml_names_file_and_line(tmp_path, monkeypatch, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("sources:\n  nl: {paths: [a.jsonl]\n  code: [\n")
    code, msg = run_cli(monkeypatch, capsys, "run", str(path), "--out", str(tmp_path / "out"))
    assert code == 2
    assert "bad.yaml:" in msg and "malformed YAML" in msg


def test_unknown_field_and_bad_value_name_the_field(tmp_path, monkeypatch, capsys) -> None:
    cfg = base_config(tmp_path)
    cfg["pretrain"]["train"]["steps"] = -3
    cfg["tokenizer"]["vocab"] = 10
    code, msg = run_cli(monkeypatch, capsys, "plan", str(write_yaml(tmp_path, cfg)), "--out", str(tmp_path / "out"))
    assert code == 2
    assert "pretrain.train.steps" in msg and "tokenizer.vocab" in msg


@pytest.mark.parametrize(
    "phases, expected",
    [
        ([{"until": 0.5, "weights": {"text": 1.0}}], "cover training"),
        ([{"until": 1.0, "weights": {"text": 1.2, "code": -0.2}}], "non-negative"),
        ([{"until": 1.0, "weights": {"text": 0.5, "code": 0.3}}], "sum to 1"),
        ([{"until": 1.0, "weights": {"txt": 1.0}}], "neither a group"),
    ],
)
def test_invalid_schedule_is_refused_before_training(tmp_path, monkeypatch, capsys, phases, expected) -> None:
    cfg = base_config(tmp_path)
    cfg["pretrain"]["arms"] = {"NL": {"schedule": "text_only"}, "CODE": {"phases": phases}}
    code, msg = run_cli(monkeypatch, capsys, "run", str(write_yaml(tmp_path, cfg)), "--out", str(tmp_path / "out"))
    assert code == 2
    assert "pretrain.arms.CODE" in msg and expected in msg
    assert not (tmp_path / "out" / "runs").exists()


def test_malformed_json_line_names_file_and_line(tmp_path, monkeypatch, capsys) -> None:
    bad = tmp_path / "corpus.jsonl"
    bad.write_text(json.dumps({"text": "fine document"}) + "\n" + '{"text": "broken\n')
    cfg = base_config(tmp_path)
    cfg["sources"]["nl"]["paths"] = [str(bad)]
    code, msg = run_cli(monkeypatch, capsys, "run", str(write_yaml(tmp_path, cfg)), "--out", str(tmp_path / "out"),
                        "--only", "tokenizer")
    assert code == 2
    assert "corpus.jsonl:2" in msg
    assert not (tmp_path / "out" / "tokenizer" / ".step.json").exists()


def test_missing_text_field_names_the_field(tmp_path, monkeypatch, capsys) -> None:
    bad = tmp_path / "corpus.jsonl.gz"
    with gzip.open(bad, "wt") as f:
        f.write(json.dumps({"content": "a document without the text field"}) + "\n")
    cfg = base_config(tmp_path)
    cfg["sources"]["nl"]["paths"] = [str(bad)]
    code, msg = run_cli(monkeypatch, capsys, "run", str(write_yaml(tmp_path, cfg)), "--out", str(tmp_path / "out"),
                        "--only", "tokenizer")
    assert code == 2
    assert "corpus.jsonl.gz:1" in msg and "text" in msg


def test_empty_source_is_an_error(tmp_path, monkeypatch, capsys) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cfg = base_config(tmp_path)
    cfg["sources"]["nl"]["paths"] = [str(empty)]
    code, msg = run_cli(monkeypatch, capsys, "run", str(write_yaml(tmp_path, cfg)), "--out", str(tmp_path / "out"),
                        "--only", "tokenizer", "--only", "store")
    assert code == 2
    assert "nl" in msg and ("empty" in msg or "no " in msg)
    assert not (tmp_path / "out" / "stores" / "nl" / ".step.json").exists()


def test_missing_source_path_is_an_error(tmp_path, monkeypatch, capsys) -> None:
    cfg = base_config(tmp_path)
    cfg["sources"]["nl"]["paths"] = [str(tmp_path / "nowhere" / "*.jsonl")]
    code, msg = run_cli(monkeypatch, capsys, "plan", str(write_yaml(tmp_path, cfg)), "--out", str(tmp_path / "out"))
    assert code == 2
    assert "nowhere" in msg


def test_eval_unknown_task(tmp_path, monkeypatch, capsys, micro_model_dir) -> None:
    code, msg = run_cli(monkeypatch, capsys, "eval", "--model", str(micro_model_dir), "--tasks", "logic,astrology",
                        "--out", str(tmp_path / "ev"))
    assert code == 2
    assert "astrology" in msg and "valid tasks" in msg
    assert not (tmp_path / "ev" / "results.json").exists()


def test_eval_model_path_that_is_not_a_model(tmp_path, monkeypatch, capsys) -> None:
    notmodel = tmp_path / "notmodel"
    notmodel.mkdir()
    (notmodel / "README.txt").write_text("hello")
    code, msg = run_cli(monkeypatch, capsys, "eval", "--model", str(notmodel), "--tasks", "legal", "--out", str(tmp_path / "ev"))
    assert code == 2
    assert "notmodel" in msg
    assert not (tmp_path / "ev" / "results.json").exists()


def test_eval_and_compare_on_a_model(tmp_path, monkeypatch, capsys, micro_model_dir) -> None:
    for name, seed in (("a", "0"), ("b", "1")):
        code, msg = run_cli(monkeypatch, capsys, "eval", "--model", str(micro_model_dir), "--tasks", "legal,code_reasoning",
                            "--sample", "6", "--seed", "0", "--device", "cpu", "--quiet", "--out", str(tmp_path / name))
        assert code == 0, msg
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert res["tasks"]["jecqa_kd"]["n"] == 6 and res["tasks"]["cosqa"]["n"] == 6
    # the model relative to the results' folder: no path of this machine in a file meant to be shared
    assert res["model"] == os.path.relpath(micro_model_dir, tmp_path / "a") and not Path(res["model"]).is_absolute()
    assert (tmp_path / "a" / res["model"]).resolve() == micro_model_dir.resolve()
    code, msg = run_cli(monkeypatch, capsys, "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(tmp_path / "cmp.json"))
    assert code == 0, msg
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    assert (cmp["a"], cmp["b"]) == ("a/items.jsonl", "b/items.jsonl")  # from the JSON's folder
    # The same model on the same items: no difference at all.
    assert cmp["tasks"]["jecqa_kd"]["diff"] == 0.0 and cmp["tasks"]["jecqa_kd"]["n"] == 6
    assert cmp["tasks"]["jecqa_kd"]["diff"] == 0.0 and "margin" in cmp["tasks"]["cosqa"]
    # Several seeds per side (comma-separated): items averaged over seeds, still paired by item.
    two = f"{tmp_path / 'a'},{tmp_path / 'b'}"
    code, msg = run_cli(monkeypatch, capsys, "compare", two, two, "--json", str(tmp_path / "cmp2.json"))
    assert code == 0, msg
    cmp2 = json.loads((tmp_path / "cmp2.json").read_text())
    assert cmp2["seeds"] == 2 and cmp2["tasks"]["cosqa"]["diff"] == 0.0 and cmp2["tasks"]["cosqa"]["n"] == 6
    assert cmp2["a"] == ["a/items.jsonl", "b/items.jsonl"]
    code, msg = run_cli(monkeypatch, capsys, "compare", two, str(tmp_path / "a"))
    assert code == 2 and "same number of runs" in msg


def test_tasks_list_names_the_split_each_task_would_evaluate(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, msg = run_cli(monkeypatch, capsys, "tasks", "list")
    assert code == 0, msg
    assert "ekar_zh * │ analogical │ accuracy │ validation │ 100 │ test, n=335 │ present" in msg
    assert "scienceqa * │ scientific │ accuracy │ test, text-only │ 194 │ test, n not stated │ present" in msg
    code, msg = run_cli(monkeypatch, capsys, "tasks", "list", "--data-dir", str(tmp_path))
    assert code == 0 and "ekar_zh * │ analogical │ accuracy │ — │ │ test, n=335 │ missing" in msg


@pytest.mark.parametrize("width", [100, 80])
def test_study_score_table_shows_every_header_and_score_whole(width) -> None:
    """A long run name folds; no domain header ("analog", "code-g") or score is cut to "…"."""
    from io import StringIO

    from rich.console import Console

    from codestage.domains import DOMAIN_TABLE, DOMAINS
    from codestage.results import RunResults, StudyResults, TaskResult

    cells = {d: TaskResult(task=d, metric="accuracy", value=100.0, n=10) for d in DOMAINS}
    names = ["NL", "seed1/stepwise_increase_then_decrease_at_half", "CC"]
    results = StudyResults(runs={n: RunResults(stage="mixing", tasks=cells) for n in names})
    console = Console(width=width, file=StringIO(), record=True)
    console.print(cli.summary_table(results))
    text = console.export_text()
    assert "…" not in text and max(map(len, text.splitlines())) <= width
    header = next(line for line in text.splitlines() if "run" in line)
    assert all(f" {DOMAIN_TABLE[d].short} " in header for d in DOMAINS), header
    assert text.count("100.0") == len(names) * len(DOMAINS)
    run_column = "".join(line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│"))
    assert run_column == "".join(names)  # the long name whole, over two lines
