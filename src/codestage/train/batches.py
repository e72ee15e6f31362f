"""Global batches, each rank's slice of them, and a prefetch thread that keeps the GPU fed.

Every rank runs the same (seeded, deterministic) batch source and draws the whole global batch
of a step, then keeps its own contiguous block of rows, cut into micro-batches. So ranks see
disjoint slices of one global batch, the loss is normalised by the global count of target
tokens (known on every rank without communication), and the sampler state is identical on all
ranks: rank 0's copy in a checkpoint resumes any world size with the same global batch.

The prefetch thread draws step s+1 (and s+2) while step s trains, pins the tensors for
asynchronous copies, and snapshots the source's state after each step's draw; a checkpoint
after step s stores that snapshot, never the state of batches drawn ahead.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

import torch

from codestage.config import TrainConfig
from codestage.errors import ConfigError


@dataclass(frozen=True)
class BatchPlan:
    micro_rows: int  # sequences per micro-batch per rank
    grad_accum: int  # micro-batches per optimizer step per rank
    world: int

    @property
    def global_rows(self) -> int:
        return self.micro_rows * self.grad_accum * self.world

    @classmethod
    def make(cls, cfg: TrainConfig, world: int) -> "BatchPlan":
        """From batch_size / grad_accum, or from global_batch_tokens (which then sets grad_accum)."""
        if cfg.global_batch_tokens is None:
            return cls(cfg.batch_size, cfg.grad_accum, world)
        rows, rem = divmod(cfg.global_batch_tokens, cfg.seq_len)
        per = cfg.batch_size * world
        if rem or rows % per:
            raise ConfigError(
                f"train.global_batch_tokens={cfg.global_batch_tokens} must be a multiple of seq_len x batch_size x "
                f"processes = {cfg.seq_len} x {cfg.batch_size} x {world} = {cfg.seq_len * per}"
            )
        return cls(cfg.batch_size, rows // per, world)


@dataclass
class StepBatch:
    step: int
    micro: list[dict[str, torch.Tensor]]  # this rank's micro-batches (pinned on CUDA)
    n_targets: int  # target tokens of the whole global batch
    tokens: int  # input tokens of the whole global batch
    state: dict[str, Any]  # the source's state after this step's draw
    tokens_per_source: dict[str, int]


def _trim(mb: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop padding columns that no row of this micro-batch uses (right padding only)."""
    mask = mb.get("attention_mask")
    if mask is None:
        return mb
    width = int(mask.sum(1).max())
    if width == mask.shape[1]:
        return mb
    return {k: v[:, :width].contiguous() for k, v in mb.items()}


def make_step(source: Any, step: int, total_steps: int, plan: BatchPlan, rank: int, pin: bool) -> StepBatch:
    batch = source.next_batch(step / total_steps, plan.global_rows)
    labels = batch["labels"]
    n_targets = int((labels[:, 1:] != -100).sum())
    tokens = int(batch["input_ids"].numel())
    lo = rank * plan.micro_rows * plan.grad_accum
    micro = []
    for i in range(plan.grad_accum):
        a = lo + i * plan.micro_rows
        mb = _trim({k: v[a : a + plan.micro_rows] for k, v in batch.items()})
        if pin:
            mb = {k: v.pin_memory() for k, v in mb.items()}
        micro.append(mb)
    return StepBatch(step, micro, n_targets, tokens, source.state(), dict(source.tokens_per_source()))


class Prefetcher:
    """Produces StepBatch for steps [start, stop) on a background thread, `depth` ahead."""

    def __init__(self, source: Any, *, start: int, stop: int, total_steps: int, plan: BatchPlan, rank: int,
                 pin: bool, depth: int = 2) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._halt = threading.Event()
        self._args = (source, total_steps, plan, rank, pin)
        self._thread = threading.Thread(target=self._run, args=(start, stop), name="codestage-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        """Hand `item` to the training thread; False once the loader is halted."""
        while not self._halt.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, start: int, stop: int) -> None:
        source, total, plan, rank, pin = self._args
        try:
            for step in range(start, stop):
                if not self._put(make_step(source, step, total, plan, rank, pin)):
                    return
        except BaseException as exc:  # handed to the training thread
            self._put(exc)

    def get(self) -> StepBatch:
        item = self._q.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._halt.set()
        self._thread.join(timeout=10)
