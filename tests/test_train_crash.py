"""Crashes: kill -9 during a step and during a checkpoint write, disk full while saving.

A real training subprocess (the smoke job: bundled text, micro model) is stopped in the middle of
a step (after the first of two micro-batches), killed with SIGKILL while a checkpoint's files are
being written, and made to fail a checkpoint write with ENOSPC. Each time the next run continues
from the last complete checkpoint, and the final loss sequence equals an uninterrupted run's.
The pauses and the disk-full error are injected by the driver below (monkeypatching torch.save
and the loss call inside that subprocess); the training code has no test hooks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codestage.train import checkpoint as ckpt
import smoke  # bench/smoke.py (tests/conftest.py puts bench/ on the path)

DRIVER = r'''
import errno, os, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from codestage.config import TrainConfig
from codestage.errors import CodestageError
from codestage.tokenizer import load_tokenizer
import smoke
from codestage.train.modules import Trainable

mode, run, tok_dir, arg = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
cfg = TrainConfig(steps=8, batch_size=2, grad_accum=2, seq_len=32, lr=3e-3, warmup_steps=2, log_every=1,
                  checkpoint_every=2, tensorboard=False)

if mode == "pause_in_step":  # stall in the second micro-batch of step `arg`: gradients half accumulated
    real_loss, calls = Trainable.loss_sum, {"n": 0}
    def loss_sum(self, net, batch):
        calls["n"] += 1
        if calls["n"] == 2 * (arg - 1) + 2:
            print("PAUSED", flush=True); time.sleep(600)
        return real_loss(self, net, batch)
    Trainable.loss_sum = loss_sum

if mode in ("pause_in_save", "enospc"):  # act on the optimizer file of checkpoint `arg`
    real_save = torch.save
    def save(obj, f, *a, **k):
        if Path(f).name == "optimizer.pt" and f".ckpt-{arg:09d}" in str(f):
            if mode == "enospc":
                raise OSError(errno.ENOSPC, "No space left on device", str(f))
            real_save(obj, f, *a, **k)
            print("SAVING", flush=True); time.sleep(600)
        return real_save(obj, f, *a, **k)
    torch.save = save

try:
    smoke.job(load_tokenizer(tok_dir), cfg, run)
except CodestageError as exc:
    print(f"error: {exc}", file=sys.stderr, flush=True)
    sys.exit(2)
'''


def _start(tmp: Path, mode: str, run: Path, tok: Path, arg: int = 0) -> subprocess.Popen:
    driver = tmp / "driver.py"
    driver.write_text(DRIVER)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(Path(smoke.__file__).parent), os.environ.get("PYTHONPATH")])))
    return subprocess.Popen([sys.executable, str(driver), mode, str(run), str(tok), str(arg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _kill_at(proc: subprocess.Popen, marker: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    assert proc.stdout is not None
    while time.time() < deadline:
        line = proc.stdout.readline()
        if line.strip() == marker:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"driver ended before {marker}: {proc.stderr.read() if proc.stderr else ''}")
    proc.kill()
    raise AssertionError(f"no {marker} within {timeout}s")


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=180)
    return proc.returncode, err


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tokenizer_dir) -> tuple[Path, list]:
    tmp = tmp_path_factory.mktemp("ref")
    rc, err = _finish(_start(tmp, "plain", tmp / "run", tokenizer_dir))
    assert rc == 0, err
    return tmp / "run", smoke.losses(tmp / "run")


@pytest.mark.slow  # three killed runs, ~50 s
def test_kill_during_step_then_during_checkpoint_write_then_disk_full(tmp_path, tokenizer_dir, reference):
    ref_run, ref_losses = reference
    run = tmp_path / "run"

    # 1. SIGKILL in the middle of step 5 (checkpoints every 2 steps): step 4's checkpoint survives.
    _kill_at(_start(tmp_path, "pause_in_step", run, tokenizer_dir, 5), "PAUSED")
    assert ckpt.checkpoint_step(run) == 4
    assert smoke.losses(run) == ref_losses[:4]

    # 2. Resumed, then SIGKILL while step 6's checkpoint is being written (files half there).
    _kill_at(_start(tmp_path, "pause_in_save", run, tokenizer_dir, 6), "SAVING")
    partial = run / ".ckpt-000000006.tmp"
    assert (partial / "optimizer.pt").is_file() and not (partial / ckpt.COMPLETE).exists()
    assert ckpt.checkpoint_step(run) == 4  # the half-written one is not taken

    # 3. Resumed, then the disk fills up while step 6's checkpoint is written: clear error, exit 2.
    rc, err = _finish(_start(tmp_path, "enospc", run, tokenizer_dir, 6))
    assert rc == 2
    assert "disk full" in err and "step 6" in err and "ckpt-000000004" in err and "intact" in err
    assert ckpt.checkpoint_step(run) == 4 and not partial.exists()

    # 4. A plain rerun resumes from step 4 and ends exactly like the uninterrupted run.
    rc, err = _finish(_start(tmp_path, "plain", run, tokenizer_dir))
    assert rc == 0, err
    assert smoke.losses(run) == ref_losses
    from safetensors.torch import load_file

    a, b = load_file(str(ref_run / "model" / "model.safetensors")), load_file(str(run / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert json.loads((run / "mixture.json").read_text())["tokens_total"] == json.loads((ref_run / "mixture.json").read_text())["tokens_total"]
