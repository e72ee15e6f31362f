"""`codestage run --executor`: the micro study through every executor gives the inline results.

Each run is the real CLI in a process of its own on configs/micro.yaml (with absolute data paths):
`inline` once, then `local` with two seeds as one graph (seed 0 must equal the inline run, seed 1
gets seed 0's tokenizer and stores as hard links), `slurm` on the single-node cluster of
scripts/slurm_local.sh (skipped, with the reason, where it cannot start), a failing step and its
rerun, and a second coordinator refused by the lock.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from codestage.outputs import mark_study
from codestage.resources import bundled
from codestage.study.executors import coordinator_lock

pytestmark = pytest.mark.slow  # the micro study runs several times, a few minutes in all

ROOT = Path(__file__).resolve().parents[1]
# CPU steps only (this machine has no GPU, the Slurm node none either), one CPU and 2 GB per job.
CPU_EXECUTOR = {"gpus_per_step": {"pretrain": 0, "instruct": 0, "eval": 0},
                "slurm": {"cpus_per_step": 1, "mem_per_step_gb": 2, "time": "00:30:00"}}


def write_config(path: Path, **eval_over) -> Path:
    """configs/micro.yaml with absolute data paths (two instruction runs, to be quick)."""
    cfg = yaml.safe_load((ROOT / "configs" / "micro.yaml").read_text())

    def absolute(o):
        if isinstance(o, dict):
            return {k: absolute(v) for k, v in o.items()}
        if isinstance(o, list):
            return [absolute(v) for v in o]
        return str((ROOT / "configs" / o).resolve()) if isinstance(o, str) and o.startswith("../") else o

    cfg = absolute(cfg)
    cfg["instruct"]["runs"] = {k: cfg["instruct"]["runs"][k] for k in ("NN", "CC")}
    cfg["eval"].update(eval_over)
    cfg["executor"] = CPU_EXECUTOR
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def codestage(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return subprocess.run([sys.executable, "-m", "codestage.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=1200)


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def step_keys(folder: Path) -> dict[str, str]:
    """Every finished step's key, by its folder relative to the study's."""
    return {str(m.parent.relative_to(folder)): json.loads(m.read_text())["key"] for m in folder.rglob(".step.json")}


@pytest.fixture(scope="module")
def inline_run(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("inline")
    config = write_config(tmp / "micro.yaml")
    out = tmp / "out"
    proc = codestage("run", config, "--out", out, "--executor", "inline", "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return config, out


def test_local_with_two_seeds_equals_inline(inline_run, tmp_path: Path) -> None:
    config, inline = inline_run
    out = tmp_path / "local"
    proc = codestage("run", config, "--out", out, "--executor", "local", "--seeds", "0,1", "--max-parallel", "2",
                     "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "executor local:" in proc.stderr and "failed" not in proc.stderr
    assert results(out / "seed0") == results(inline)  # bitwise: every score, loss and count
    assert step_keys(out / "seed0") == step_keys(inline)
    # seed 1: its own models, seed 0's tokenizer and stores (keys without the seed) as hard links
    seed1 = results(out / "seed1")
    assert seed1["config"]["seed"] == 1 and seed1["runs"]["NL"] != results(inline)["runs"]["NL"]
    for f in (out / "seed0" / "tokenizer").iterdir():
        assert (out / "seed1" / "tokenizer" / f.name).stat().st_ino == f.stat().st_ino
    keys0, keys1 = step_keys(out / "seed0"), step_keys(out / "seed1")
    assert keys1["tokenizer"] == keys0["tokenizer"] and keys1["runs/NL"] != keys0["runs/NL"]
    # the same command again: everything up to date, nothing submitted
    again = codestage("run", config, "--out", out, "--executor", "local", "--seeds", "0,1", "--quiet")
    summary = next(line for line in again.stderr.splitlines() if line.startswith("executor local:"))
    assert again.returncode == 0 and summary.endswith("up to date") and " done" not in summary, summary


def test_slurm_equals_inline(slurm_cluster: None, inline_run, tmp_path: Path) -> None:
    config, inline = inline_run
    out = tmp_path / "slurm"
    proc = codestage("run", config, "--out", out, "--executor", "slurm", "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "slurm job" in proc.stderr
    assert results(out) == results(inline)
    assert step_keys(out) == step_keys(inline)


def test_failed_step_is_named_with_its_log_and_rerun_command(inline_run, tmp_path: Path) -> None:
    _, inline = inline_run
    data = tmp_path / "eval-data"
    shutil.copytree(bundled("eval"), data)
    good = (data / "ceval_logic" / "logic_val.csv").read_bytes()
    (data / "ceval_logic" / "logic_val.csv").write_text("id,question\n1,no answer column\n")  # a broken copy
    config = write_config(tmp_path / "micro.yaml", data_dir=str(data))
    out = tmp_path / "out"
    shutil.copytree(inline, out)  # trained models up to date: only decontamination and evaluation run
    proc = codestage("run", config, "--out", out, "--executor", "local", "--max-parallel", "2", "--quiet")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    text = proc.stderr
    assert "FAILED  eval/NL:" in text and "log:" in text and "no report yet" in text
    rerun = next(line.split("rerun:", 1)[1].strip() for line in text.splitlines()
                 if line.strip().startswith("rerun:") and "eval/NL" in line)
    assert rerun.startswith("codestage run ") and rerun.endswith("--only eval/NL")
    log = Path(next(line.split("log:", 1)[1].strip() for line in text.splitlines()
                    if line.strip().startswith("log:") and "eval" in line and "NL" in line))
    assert "logic_val.csv" in log.read_text()  # the step's own error, in its log
    assert (out / "runs" / "NN" / ".step.json").is_file()  # what did not depend on the failure is kept
    # fixed data: the rerun command runs the failed step, the whole run then finishes
    (data / "ceval_logic" / "logic_val.csv").write_bytes(good)
    fixed = codestage(*shlex.split(rerun)[1:])
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    done = codestage("run", config, "--out", out, "--executor", "local", "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    assert results(out)["runs"] == results(inline)["runs"]  # the same data, the same numbers


def test_second_run_on_the_same_folder_refuses(tmp_path: Path) -> None:
    config = write_config(tmp_path / "micro.yaml")
    out = tmp_path / "out"
    out.mkdir()
    mark_study(out)  # what a first run does before it takes the lock
    with coordinator_lock(out):
        proc = codestage("run", config, "--out", out, "--executor", "local", "--quiet")
    assert proc.returncode == 2
    assert "is in use by another codestage run" in proc.stderr
    assert not (out / "tokenizer").exists()


def test_a_training_step_with_two_gpus_runs_under_torchrun(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA: two CPU processes (gloo) stand in for two GPUs")
    config = write_config(tmp_path / "micro.yaml")
    out = tmp_path / "out"
    # the local executor hands out these two "GPUs"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CUDA_VISIBLE_DEVICES": "0,1"}
    proc = subprocess.run([sys.executable, "-m", "codestage.cli", "run", str(config), "--out", str(out), "--executor",
                           "local", "--gpus-per-step", "pretrain=2", "--only", "pretrain/NL", "--quiet"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pretrain/NL: local job" in proc.stderr and "on GPU 0,1" in proc.stderr
    log = (out / "logs" / "pretrain" / "NL.log").read_text()
    assert "--nproc-per-node=2" in log and "codestage.cli step" in log
    steps = [json.loads(line)["step"] for line in (out / "runs" / "NL" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4] and (out / "runs" / "NL" / ".step.json").is_file()
