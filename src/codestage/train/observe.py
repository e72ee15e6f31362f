"""Where training metrics go: metrics.jsonl (always), TensorBoard (when installed), on rank 0."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

_NOTED = {"tb": False}


class MetricsLog:
    """One JSON object per logged step; the same numbers as TensorBoard scalars under run_dir/tb."""

    def __init__(self, path: Path, tb_dir: Path, *, enabled: bool, tensorboard: bool, console: Console) -> None:
        self.enabled = enabled
        self.fh = open(path, "a", encoding="utf-8") if enabled else None
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(tb_dir))
            except ImportError:
                if not _NOTED["tb"]:
                    console.print("[dim]TensorBoard is not installed (pip install tensorboard); "
                                  "metrics go to metrics.jsonl only[/]")
                    _NOTED["tb"] = True

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        assert self.fh is not None
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()
        if self.tb is not None:
            step = record["step"]
            for key in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu", "tokens"):
                if record.get(key) is not None:
                    self.tb.add_scalar(f"train/{key}", record[key], step)
            for src, n in record.get("tokens_per_source", {}).items():
                self.tb.add_scalar(f"tokens_per_source/{src}", n, step)

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None
