"""The training loop shared by pretraining and instruction tuning.

It knows nothing about where batches come from: a `BatchSource` hands it token ids and labels
(-100 = no loss) and can save/restore its position. The loop owns the optimizer (AdamW with
decoupled weight decay), the LR schedule, gradient accumulation with a loss averaged over all
target tokens of the step, clipping, logging, atomic checkpoints and exact resume.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from codestage.atomic import atomic_dir, write_json
from codestage.config import TrainConfig
from codestage.errors import TrainingError
from codestage.model import resolve_device, save_model
from codestage.train.schedule import lr_factor

CHECKPOINT = "checkpoint"
COMPLETE = "COMPLETE"


class BatchSource(Protocol):
    """Where training rows come from; must be resumable and account for what it served."""

    def next_batch(self, fraction: float, rows: int) -> dict[str, torch.Tensor]:
        """`rows` sequences for the step at training `fraction`: input_ids, labels[, attention_mask]."""

    def state(self) -> dict[str, Any]: ...

    def load(self, state: dict[str, Any]) -> None: ...

    def report(self, total_steps: int) -> dict[str, Any]:
        """The run's mixture.json content."""

    def tokens_per_source(self) -> dict[str, int]: ...


@dataclass
class TrainResult:
    model_dir: Path
    steps: int
    final_loss: float
    tokens: int
    seconds: float


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only; norms, biases and (tied) embeddings' 1-D params are not decayed."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _autocast(device: torch.device, dtype: str):
    use_bf16 = dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop log lines written after the checkpoint we resume from, so the log reads as one run."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and json.loads(ln)["step"] <= last_step]
    path.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")


def checkpoint_step(run_dir: Path) -> int | None:
    """The step of the last complete checkpoint in `run_dir`, or None."""
    ck = Path(run_dir) / CHECKPOINT
    if not (ck / COMPLETE).is_file():
        return None
    return int(json.loads((ck / "trainer_state.json").read_text())["step"])


def _save_checkpoint(run_dir: Path, model, tokenizer, optimizer, step: int, tokens: int, source: BatchSource, total_steps: int) -> None:
    with atomic_dir(run_dir / CHECKPOINT) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        torch.save({"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}, tmp / "optimizer.pt")
        write_json(tmp / "trainer_state.json", {"step": step, "tokens": tokens, "source": source.state()})
        (tmp / COMPLETE).write_text("ok\n")
    write_json(run_dir / "mixture.json", source.report(total_steps))


def _load_checkpoint(run_dir: Path, model, optimizer, source: BatchSource) -> tuple[int, int]:
    from safetensors.torch import load_file

    ck = run_dir / CHECKPOINT
    state = load_file(str(ck / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if "lm_head" in k}
    if set(missing) - tied or unexpected:
        raise TrainingError(f"{ck}: checkpoint does not match the model (missing {sorted(missing)[:3]}, unexpected {unexpected[:3]})")
    model.tie_weights()
    extra = torch.load(ck / "optimizer.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(extra["optimizer"])
    torch.set_rng_state(extra["torch_rng"])
    trainer = json.loads((ck / "trainer_state.json").read_text())
    source.load(trainer["source"])
    return int(trainer["step"]), int(trainer["tokens"])


def train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    source: BatchSource,
    cfg: TrainConfig,
    run_dir: Path,
    *,
    name: str = "run",
    resume: bool = True,
    progress: bool = True,
) -> TrainResult:
    """Train `model` for `cfg.steps` optimizer steps; write run_dir/model (HF) and logs."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model.to(device)
    model.train()
    model.config.use_cache = False
    optimizer = torch.optim.AdamW(
        _param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8,
        fused=device.type == "cuda",
    )
    metrics_path = run_dir / "metrics.jsonl"
    start, tokens_seen = 0, 0
    if resume and checkpoint_step(run_dir) is not None:
        start, tokens_seen = _load_checkpoint(run_dir, model, optimizer, source)
        _truncate_metrics(metrics_path, start)
    elif metrics_path.exists():
        metrics_path.unlink()

    rows = cfg.batch_size
    loss_value = float("nan")
    t0 = time.perf_counter()
    t_log, tok_log = t0, tokens_seen
    columns = [TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
               TextColumn("{task.fields[tps]} tok/s"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=False) as bar, open(metrics_path, "a", encoding="utf-8") as log:
        task = bar.add_task(name, total=cfg.steps, completed=start, loss="-", tps="-")
        for step in range(start, cfg.steps):
            lr = cfg.lr * lr_factor(step, total_steps=cfg.steps, warmup_steps=cfg.warmup_steps, min_lr_ratio=cfg.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            fraction = step / cfg.steps
            micro = [source.next_batch(fraction, rows) for _ in range(cfg.grad_accum)]
            targets = sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro)
            if targets == 0:
                raise TrainingError(f"{name}: step {step} has no target tokens (every label is masked); check the data/template")
            step_loss = torch.zeros((), device=device)
            for b in micro:
                b = {k: v.to(device, non_blocking=True) for k, v in b.items()}
                with _autocast(device, cfg.dtype):
                    out = model(**b, num_items_in_batch=targets, use_cache=False)
                out.loss.backward()
                step_loss += out.loss.detach()
                tokens_seen += int(b["input_ids"].numel())
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            done = step + 1
            last = done == cfg.steps
            save_now = bool(cfg.checkpoint_every) and done % cfg.checkpoint_every == 0 and not last
            if done % cfg.log_every == 0 or last or done == 1 or save_now:
                loss_value = float(step_loss)
                if not math.isfinite(loss_value):
                    raise TrainingError(
                        f"{name}: loss became {loss_value} at step {done}; the last good checkpoint (if any) is in "
                        f"{run_dir / CHECKPOINT}. Lower the learning rate (train.lr={cfg.lr}) or raise warmup_steps."
                    )
                now = time.perf_counter()
                tps = (tokens_seen - tok_log) / max(now - t_log, 1e-9)
                t_log, tok_log = now, tokens_seen
                record = {"step": done, "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm),
                          "tokens": tokens_seen, "tokens_per_s": round(tps, 1), "elapsed_s": round(now - t0, 3),
                          "tokens_per_source": source.tokens_per_source()}
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.update(task, loss=f"{loss_value:.3f}", tps=f"{tps:,.0f}")
            bar.update(task, completed=done)
            if save_now:
                _save_checkpoint(run_dir, model, tokenizer, optimizer, done, tokens_seen, source, cfg.steps)

    model.config.use_cache = True
    model.eval()
    save_model(model, tokenizer, run_dir / "model")
    write_json(run_dir / "mixture.json", source.report(cfg.steps))
    shutil.rmtree(run_dir / CHECKPOINT, ignore_errors=True)
    return TrainResult(run_dir / "model", cfg.steps, loss_value, tokens_seen, time.perf_counter() - t0)
