"""A micro ladder end to end through the CLI: `codestage run` of a ladder-only study trains every
rung with snapshots, evaluates each checkpoint, exports POINTS with per-item files, fits with the
largest rung held out, and the study report reads the prediction; `ladder points` and `ladder plan`
work on the same study."""

from __future__ import annotations

import csv
import json

import pytest

from codestage.resources import bundled

CONFIG = """
name: ladder-micro
seed: 0
sources:
  nl_en: {{paths: ["{corpora}/nl_en.jsonl.gz"], group: text, weight: 0.9}}
  nl_zh: {{paths: ["{corpora}/nl_zh.jsonl.gz"], group: text, weight: 0.1}}
  code: {{paths: ["{corpora}/code.jsonl.gz"], group: code}}
data: {{decontam: false, workers: 1}}
tokenizer: {{vocab_size: 512, sample_chars_per_source: 60000}}
pretrain:
  train: {{seq_len: 32, batch_size: 64, log_every: 5, compile: "off", tensorboard: false}}
  arms:
    NL: {{schedule: text_only}}
    CODE: {{schedule: constant, ratio: "2:1"}}
ladder:
  only: true
  sizes: [850, 6.7K, 21K]
  budgets: [1, 2]
  checkpoints: [0.5, 1.0]
  rule: {{aspect_ratio: 8, head_dim: 8, batch_multiple: 4, lr_scale: 0.2}}
  fit: {{bootstrap: 20, holdout: largest, step1_points: all, workers: 1}}
eval:
  tasks: [logic, code_reasoning, code_generation]
  sample: 12
  batch_size: 16
  generate: false
"""


@pytest.mark.slow  # 1-3 minutes on 2 cores
def test_micro_ladder_end_to_end_through_the_cli(tmp_path, cli_run):
    config = tmp_path / "ladder.yaml"
    config.write_text(CONFIG.format(corpora=bundled("corpora").as_posix()))
    out = tmp_path / "out"
    code, text = cli_run("ladder", "plan", config)
    assert code == 0 and "NL-21K-2x" in text and "CODE-856-1x" in text and "of one target run" in text

    code, text = cli_run("run", config, "--out", out, "--quiet")
    assert code == 0, text
    runs = [f"{arm}-{size}-{b}x" for arm in ("NL", "CODE") for size in ("856", "6.7K", "21K") for b in (1, 2)]
    for run in runs:  # a snapshot at 50% beside the final model, each evaluated
        rd = out / "ladder" / "runs" / run
        assert (rd / "model" / "config.json").is_file()
        [snap] = list((rd / "snapshots").iterdir())
        assert json.loads((snap / "snapshot.json").read_text())["fraction"] == 0.5
        for cp in ("0.5", "final"):
            assert (out / "ladder" / "eval" / run / cp / "ladder.json").is_file()

    points = out / "ladder" / "points" / "points.csv"
    rows = list(csv.DictReader(line for line in points.read_text().splitlines() if not line.startswith("#")))
    assert len(rows) == len(runs) * 2 * 3  # runs x checkpoints x tasks
    assert {r["task"] for r in rows} == {"ceval_logic", "cosqa", "mbpp_sanitized"}
    for r in rows:
        assert float(r["loss"]) > 0 and int(r["tokens"]) > 0
        assert (r["accuracy"] == "") == (r["task"] == "mbpp_sanitized")  # no generation: MBPP has a loss only
        items = [json.loads(x) for x in (points.parent / r["items"]).read_text().splitlines()]
        mine = [it for it in items if it["task"] == r["task"]]
        assert len(mine) == int(r["n_items"])
        assert abs(sum(it["bits"] for it in mine) / sum(it["bytes"] for it in mine) - float(r["loss"])) < 1e-6
    final = {r["run"]: int(r["tokens"]) for r in rows if r["fraction"] == "1"}
    assert final["NL-21K-2x"] > final["NL-21K-1x"] > 0

    fit = json.loads((out / "ladder" / "fit" / "fit.json").read_text())
    assert fit["arms"] == ["NL", "CODE"] and fit["holdout"]["spec"] == "largest"
    for task, entry in fit["tasks"].items():
        for arm in ("NL", "CODE"):
            pred = entry["arms"][arm]["prediction"]
            assert pred["loss"] > 0 and pred["loss_ci95"][0] <= pred["loss_ci95"][1]
            assert pred["backtest"]["loss_rel_error"] is not None  # the 21K rung predicted from the others
        assert entry["difference"]["loss"]["ci95"] is not None
    assert (out / "ladder" / "fit" / "report.md").is_file()
    report = (out / "report.md").read_text()
    assert "## Ladder: predictions at the target" in report and "task loss CODE - NL" in report

    code, text = cli_run("ladder", "points", out, "--to", tmp_path / "export" / "p.csv")
    assert code == 0 and "72 rows from 24 evaluations" in text
    assert sorted((tmp_path / "export" / "p.csv").read_text().splitlines()) == sorted(points.read_text().splitlines())

    code, text = cli_run("run", config, "--out", out, "--quiet")  # everything reused
    assert code == 0 and "▶" not in text
    (out / "ladder" / "fit" / ".step.json").unlink()  # `ladder run`: the jobs are done, the fit runs again here
    code, text = cli_run("ladder", "run", config, "--out", out, "--jobs", "2", "--quiet")
    assert code == 0 and "24 up to date" in text and "▶ ladder/fit" in text and "▶ ladder/pretrain" not in text
    assert json.loads((out / "ladder" / "fit" / "fit.json").read_text()) == fit  # same points, same seed: same fit
    assert set(json.loads((out / "ladder" / "timing.json").read_text())) == {"prep", "jobs", "tail"}


def test_ladder_plan_refuses_a_config_without_a_ladder(tmp_path, cli_run):
    config = tmp_path / "s.yaml"
    config.write_text("sources:\n  web: {paths: [x.jsonl]}\n")
    code, text = cli_run("ladder", "plan", config)
    assert code == 2 and "no ladder" in text
