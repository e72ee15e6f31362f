"""Two CPU processes (torchrun, gloo) train exactly like one with the same global batch.

Runs bench/ddp_check.py: a world-size-1 reference, then DDP and FSDP2 on 2 processes, each
rank drawing its own disjoint slice of every global batch; each 2-process run is stopped after
step 3 (checkpoint with gathered full state) and resumed; a second 1-process run with half the
micro-batch gives the noise floor. Float32: losses equal within 1e-5. A checkpoint written by 2
processes resumes on 1, and one written by 1 resumes on 2, as if never interrupted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # two processes train, ~50 s
def test_two_processes_match_one_with_ddp_and_fsdp(tmp_path, tokenizer_dir):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, str(ROOT / "bench" / "ddp_check.py"), "--procs", "2", "--device", "cpu", "--dtype", "float32",
           "--preset", "micro", "--steps", "6", "--interrupt-at", "3", "--seq-len", "32", "--batch-size", "2", "--parallel", "ddp,fsdp",
           "--noise-floor", "--tokenizer", str(tokenizer_dir), "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "ddp_check.json").read_text())
    assert result["verdict"] == "PASS" and result["world"] == 2
    assert result["global_batch_tokens"] == 32 * 2 * 2 * 2
    ref = result["world1"]["loss"]
    assert len(ref) == 6
    for mode in ("ddp", "fsdp"):
        got = result["modes"][mode]["loss"]
        assert len(got) == 6 and max(abs(a - b) for a, b in zip(ref, got)) <= 1e-5
    # half the micro-batch on 1 process is the same maths: in float32 its losses match too
    assert 0 <= result["noise_floor"] <= 1e-5
    # each process logged nothing of its own: rank 0 alone writes the run folder
    assert sorted(p.name for p in (tmp_path / "world2-ddp").iterdir()) == ["metrics.jsonl", "mixture.json", "model"]


@pytest.mark.slow  # ~30 s each: the reference, then per mode N processes to step 3 and M processes to step 6
@pytest.mark.parametrize("procs,resume_procs", [(2, 1), (1, 2)])
def test_a_checkpoint_resumes_on_another_number_of_processes(tmp_path, tokenizer_dir, procs, resume_procs):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, str(ROOT / "bench" / "ddp_check.py"), "--procs", str(procs), "--device", "cpu", "--dtype", "float32",
           "--preset", "micro", "--steps", "6", "--interrupt-at", "3", "--resume-procs", str(resume_procs), "--seq-len", "32",
           "--batch-size", "2", "--global-batch-tokens", str(32 * 2 * 2 * 2), "--parallel", "ddp,fsdp",
           "--tokenizer", str(tokenizer_dir), "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # each mode was stopped after step 3 on `procs` processes and resumed from that checkpoint on `resume_procs`
    assert out.count("stopped at step 3; checkpoint saved") == 2 and out.count("resuming from step 3 (ckpt-000000003)") == 2
    result = json.loads((tmp_path / "ddp_check.json").read_text())
    assert result["verdict"] == "PASS" and (result["world"], result["resume_world"]) == (procs, resume_procs)
    ref = result["world1"]["loss"]
    assert len(ref) == 6
    for mode in ("ddp", "fsdp"):
        got = result["modes"][mode]
        assert len(got["loss"]) == 6 and max(abs(a - b) for a, b in zip(ref, got["loss"])) <= 1e-5
        assert got["same_data"]  # per-step tokens per source and mixture.json equal the uninterrupted run's
        run = tmp_path / f"world{procs}to{resume_procs}-{mode}"
        assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl", "mixture.json", "model"]


class _RecordingFSDP:
    """Records the FSDP2 switches grad_sync sets (the real module needs a process group)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    def set_requires_gradient_sync(self, value: bool) -> None:
        self.calls.append(("sync", value))

    def set_reshard_after_backward(self, value: bool) -> None:
        self.calls.append(("reshard", value))


def test_fsdp_keeps_weights_gathered_until_the_last_micro_batch_unless_told_not_to():
    from codestage.train.parallel import grad_sync

    net = _RecordingFSDP()
    for last in (False, False, True):
        with grad_sync(net, "fsdp", last):
            pass
    assert net.calls == [("sync", False), ("reshard", False)] * 2 + [("sync", True), ("reshard", True)]
    net = _RecordingFSDP()
    with grad_sync(net, "fsdp", False, keep_gathered=False):
        pass
    assert net.calls == [("sync", False), ("reshard", True)]
