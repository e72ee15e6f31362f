"""Study.execute, the one way a step runs: markers, reuse, --force, and a cut-off run's checkpoint
(continued with resume, refused without it, discarded by force); `codestage pretrain` goes through it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from codestage.config import load_config
from codestage.errors import ConfigError
from codestage.resources import DATA_DIR
from codestage.study.runner import MARKER, Step, Study, StepOutcome
from codestage.train import checkpoint as ckpt


def micro_study(tmp: Path) -> Path:
    cfg = {
        "sources": {"nl": {"paths": [str(DATA_DIR / "corpora/nl_en.jsonl.gz")], "group": "text", "max_docs": 20},
                    "code": {"paths": [str(DATA_DIR / "corpora/code.jsonl.gz")], "group": "code", "max_docs": 20}},
        "data": {"decontam": False, "workers": 1},
        "tokenizer": {"vocab_size": 300, "sample_chars_per_source": 5000},
        "model": {"preset": "micro"},
        "pretrain": {"train": {"steps": 2, "warmup_steps": 1, "batch_size": 1, "seq_len": 16, "log_every": 1, "tensorboard": False}},
    }
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_steps_name_what_they_read(tmp_path) -> None:
    study = Study(load_config(micro_study(tmp_path)), tmp_path / "out", progress=False)
    assert study.steps["tokenizer"].deps == ()
    assert study.steps["store/nl"].deps == ("tokenizer",)
    assert study.steps["pretrain/NL"].deps == ("tokenizer", "store/code", "store/nl")
    assert study.steps["eval/CODE"].deps == ("pretrain/CODE",)
    assert [study.state(n) for n in ("tokenizer", "pretrain/NL")] == ["to run", "to run"]


def test_execute_runs_once_then_reuses_and_force_reruns(tmp_path) -> None:
    study = Study(load_config(micro_study(tmp_path)), tmp_path / "out", progress=False)
    first = study.execute("tokenizer")
    assert first.status == "ran" and first.seconds is not None
    marker = json.loads((study.steps["tokenizer"].out / MARKER).read_text())
    assert marker["key"] == study.steps["tokenizer"].key and study.state("tokenizer") == "up to date"
    assert study.execute("tokenizer") == StepOutcome("tokenizer", "up_to_date")
    assert study.execute("tokenizer", force=True).status == "ran"


def _training_step(study: Study, out: Path, seen: list[int | None], cut: dict[str, bool]) -> Step:
    """A resumable step that records the checkpoint it starts from; while `cut["next"]` is set it
    writes a complete checkpoint at step 3 and is cut off (as a killed training run is)."""

    def action(folder: Path) -> None:
        seen.append(ckpt.checkpoint_step(folder))
        if cut.pop("next", False):
            ckpt.write(folder, 3, lambda tmp: (tmp / "state.json").write_text("{}"))
            raise KeyboardInterrupt

    step = Step("train/cut", out, "k1", action)
    study.steps[step.name] = step
    return step


def test_a_cut_off_run_resumes_only_when_asked_and_force_starts_over(tmp_path) -> None:
    study = Study(load_config(micro_study(tmp_path)), tmp_path / "out", progress=False)
    seen: list[int | None] = []
    cut = {"next": True}
    step = _training_step(study, tmp_path / "out" / "cut", seen, cut)
    with pytest.raises(KeyboardInterrupt):
        study.execute(step.name)
    assert study.state(step.name) == "to run" and study.checkpoint(step.name) == 3
    with pytest.raises(ConfigError, match="checkpoint at step 3 .* pass --resume"):
        study.execute(step.name, resume=False)
    step.key = "k2"  # other inputs: the cut-off run is not this step's to continue
    assert study.checkpoint(step.name) is None
    step.key = "k1"
    assert study.execute(step.name).status == "ran" and seen == [None, 3]  # continued from its checkpoint
    cut["next"] = True
    with pytest.raises(KeyboardInterrupt):
        study.execute(step.name, force=True)
    assert seen[-1] is None and study.checkpoint(step.name) == 3  # force: started over in a clean folder
    assert study.execute(step.name, force=True).status == "ran" and seen[-1] is None


def test_pretrain_command_goes_through_execute(tmp_path, monkeypatch, capsys) -> None:
    from test_cli import run_cli

    config, out = micro_study(tmp_path), tmp_path / "out"
    code, msg = run_cli(monkeypatch, capsys, "pretrain", str(config), "--out", str(out), "--arm", "NL", "--quiet")
    assert code == 0, msg
    study = Study(load_config(config), out, progress=False)
    assert [study.state(n) for n in ("tokenizer", "store/nl", "store/code", "pretrain/NL", "pretrain/CODE")] == \
        ["up to date"] * 4 + ["to run"]
    assert (out / "runs" / "NL" / "model" / "config.json").is_file()
    assert study.execute("pretrain/NL").status == "up_to_date"
    code, msg = run_cli(monkeypatch, capsys, "pretrain", str(config), "--out", str(out), "--arm", "NL", "--quiet")
    assert code == 0 and "pretrain/NL: up to date" in msg
