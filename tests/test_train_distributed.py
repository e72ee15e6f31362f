"""Two CPU processes (torchrun, gloo) train exactly like one with the same global batch.

Runs bench/ddp_check.py: a world-size-1 reference, then DDP and FSDP2 on 2 processes, each
rank drawing its own disjoint slice of every global batch; each 2-process run is stopped after
step 3 (checkpoint with gathered full state) and resumed. Float32: losses equal within 1e-5.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_two_processes_match_one_with_ddp_and_fsdp(tmp_path, tokenizer_dir):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, str(ROOT / "bench" / "ddp_check.py"), "--procs", "2", "--device", "cpu", "--dtype", "float32",
           "--preset", "micro", "--steps", "6", "--interrupt-at", "3", "--seq-len", "32", "--batch-size", "2", "--parallel", "ddp,fsdp",
           "--tokenizer", str(tokenizer_dir), "--out", str(tmp_path)]
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
    # each process logged nothing of its own: rank 0 alone writes the run folder
    assert sorted(p.name for p in (tmp_path / "world2-ddp").iterdir()) == ["metrics.jsonl", "mixture.json", "model"]
