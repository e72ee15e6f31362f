"""bench/pangu_stages.sh runs the user's path end to end (here at micro size on the CPU) and records each stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # about a minute: five CLI processes
def test_stages_script_runs_every_stage_and_writes_stages_json(tmp_path):
    env = {**os.environ, "STAGES_CONFIG": "configs/micro.yaml", "STEPS": "2", "SAMPLE": "2", "EVAL_DATA": "",
           "STAGES_DIR": str(tmp_path / "study"), "PYTHON": sys.executable, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run(["bash", "bench/pangu_stages.sh", str(tmp_path / "out"), "micro"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    stages = json.loads((tmp_path / "out" / "stages.json").read_text())
    assert stages["preset"] == "micro"
    s = stages["stages"]
    assert list(s) == ["dry_run", "data", "pretrain", "instruct", "eval"]
    assert all(v["exit"] == 0 and v["wall_s"] > 0 for v in s.values())
    assert s["pretrain"]["steps"] == s["instruct"]["steps"] == 2  # STEPS applied to both
    assert s["eval"]["tasks"] == 9 and s["eval"]["items"] == 18  # every task, SAMPLE items each
    assert s["dry_run"]["estimate_gib"] is not None
    assert s["pretrain"]["peak_memory_gib"] is None  # CUDA only
    assert not list((ROOT / "configs").glob(".stages-*.yaml"))  # the derived config is removed
