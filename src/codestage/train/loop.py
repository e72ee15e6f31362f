"""The training loop shared by pretraining and instruction tuning.

It knows nothing about where batches come from: a `BatchSource` hands it token ids and labels
(-100 = no loss) and can save/restore its position. The loop owns the optimizer (AdamW with
decoupled weight decay; fused on CUDA), the LR schedule, bf16 mixed precision, gradient
accumulation with a loss averaged over all target tokens of the global step, clipping, DDP /
FSDP2 through torchrun, logging (JSONL, TensorBoard, progress bar), atomic checkpoints and exact
resume, and the guards (non-finite loss, out of memory, disk full, SIGTERM / Ctrl-C).

No host-device synchronisation happens inside a step: the loss is summed on the device and read
(one `.tolist()`) only on log and checkpoint steps.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from codestage.atomic import atomic_dir, write_json
from codestage.config import TrainConfig
from codestage.errors import ConfigError, TrainingError
from codestage.model import count_parameters, cuda_peak_gib, reset_cuda_peak
from codestage.train import checkpoint as ckpt
from codestage.train import float8
from codestage.train import parallel
from codestage.train import snapshots
from codestage.train.batches import BatchPlan, Prefetcher
from codestage.train.estimate import device_peak_tflops, flops_per_token
from codestage.train.modules import Trainable, read_hf_weights
from codestage.train.observe import MetricsLog
from codestage.train.schedule import lr_factor

checkpoint_step = ckpt.checkpoint_step  # public: the runner and the CLI ask it


class BatchSource(Protocol):
    """Where training rows come from; must be resumable and account for what it served.

    A source may set `fixed_width = True` when every batch is rows x seq_len with no padding
    (pretraining): one compiled graph of the whole decoder then never recompiles, and
    train.compile_scope: auto uses it.
    """

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
    """Decay matrices only; norms and biases (1-D) are not decayed."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _mixed(cfg: TrainConfig, device: torch.device) -> bool:
    return cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and device.type == "cuda")


def _oom_message(name: str, step: int, cfg: TrainConfig, plan: BatchPlan) -> str:
    return (
        f"{name}: out of GPU memory at step {step} (micro-batch {plan.micro_rows} x {cfg.seq_len} tokens, grad_accum "
        f"{plan.grad_accum}, activation_checkpointing={cfg.activation_checkpointing}). Lower train.batch_size (and raise "
        f"train.grad_accum, or set train.global_batch_tokens, to keep the same global batch), or set "
        f"train.activation_checkpointing: true, or lower train.seq_len; with several GPUs, train.parallel: fsdp shards "
        f"the weights and optimizer states (with train.fsdp_keep_gathered: false if grad_accum > 1)."
    )


class _StopRequests:
    """SIGTERM / Ctrl-C ask the loop to stop after the current step (and checkpoint); a second
    Ctrl-C stops at once (then the last periodic checkpoint is the one to resume from)."""

    def __init__(self) -> None:
        self.requested = False
        self._prev: dict[int, Any] = {}

    def __enter__(self) -> "_StopRequests":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._prev[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, prev in self._prev.items():
            signal.signal(sig, prev)


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop log lines written after the checkpoint we resume from, so the log reads as one run."""
    if not path.exists():
        return
    keep = []
    for ln in path.read_text(encoding="utf-8").splitlines():
        try:
            if ln.strip() and json.loads(ln)["step"] <= last_step:
                keep.append(ln)
        except (ValueError, KeyError):
            continue  # a line cut by a kill
    path.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")


def _progress_columns(name: str) -> list[Any]:
    return [TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tps]} tok/s"), TextColumn("MFU {task.fields[mfu]}"), TimeElapsedColumn(),
            TimeRemainingColumn()]


class _Throughput:
    """Tokens per second (and MFU) between two log lines, and when training began (`t0`)."""

    def __init__(self, t0: float, tokens: int) -> None:
        self.t0, self._t, self._tokens = t0, t0, tokens
        self.tps, self.mfu = 0.0, None

    def update(self, tokens: int, flops_per_token: float, peak_tflops: float | None, world_size: int) -> float:
        now = time.perf_counter()
        self.tps = (tokens - self._tokens) / max(now - self._t, 1e-9)
        self._t, self._tokens = now, tokens
        self.mfu = self.tps * flops_per_token / (peak_tflops * 1e12 * world_size) if peak_tflops else None
        return now


def _rng_state() -> dict[str, Any]:
    out: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


_compiled_for: list[tuple] = []  # the kind of run the process's compile caches were built for


def compile_scope(cfg: TrainConfig, world_size: int, source: BatchSource) -> str:
    """train.compile_scope with auto resolved: the whole decoder as one graph where it pays and
    never recompiles (one process, fixed-width batches, no activation checkpointing), else per block."""
    if cfg.compile_scope != "auto":
        return cfg.compile_scope
    whole = world_size == 1 and bool(getattr(source, "fixed_width", False)) and not cfg.activation_checkpointing
    return "decoder" if whole else "blocks"


def _fresh_compile_caches(model: PreTrainedModel, source: BatchSource, cfg: TrainConfig, scope: str) -> None:
    """Reset torch.compile's caches when this run's shapes differ from the last compiled run's.

    Why: every run in a process shares one compiled Block.forward and one compiled loss chunk. A
    run with other shapes (another model size, or instruction batches whose width varies) makes
    their guards dynamic, and later runs then get dynamic-shape kernels: on an H200 the 125m
    preset trained at 273K instead of 398K tokens/s after another size had been compiled.
    """
    c = model.config
    dims = tuple(getattr(c, k, None) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"))
    kind = (type(model).__name__, *dims, cfg.seq_len, cfg.batch_size, type(source).__name__, cfg.float8, scope)
    if _compiled_for and _compiled_for[0] != kind:
        torch._dynamo.reset()
    _compiled_for[:] = [kind]


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
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train `model` for `cfg.steps` optimizer steps; write run_dir/model (HF) and logs.

    Under torchrun every process calls this with the same arguments; rank 0 alone writes.
    `on_step(step)` runs after each optimizer step (a KeyboardInterrupt from it stops the run
    cleanly, with a checkpoint, as SIGTERM does).
    """
    had_group = dist.is_available() and dist.is_initialized()
    world = parallel.setup(cfg.device)
    try:
        return _Run(model, tokenizer, source, cfg, Path(run_dir), world, name=name, resume=resume,
                    progress=progress, on_step=on_step).run()
    finally:
        parallel.shutdown(world, created=not had_group)


class _Run:
    """One training run, read top to bottom: build (model, parallel wrapper, optimizer), then `run`:
    resume or start, train the remaining steps, write the final model. Checkpoints come last."""

    def __init__(self, model, tokenizer, source, cfg: TrainConfig, run_dir: Path, world: parallel.World, *, name: str,
                 resume: bool, progress: bool, on_step) -> None:
        self.cfg, self.run_dir, self.world, self.name = cfg, run_dir, world, name
        self.tokenizer, self.source, self.on_step = tokenizer, source, on_step
        self.resume, self.progress = resume, progress and world.main
        self.device = world.device
        self.console = Console(stderr=True)
        torch.manual_seed(cfg.seed)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.mixed = _mixed(cfg, self.device)
        reset_cuda_peak()  # this run's peak (several runs may share a process)
        self._build(model)
        self.plan = BatchPlan.make(cfg, world.size)
        self.fpt = flops_per_token(model.config, self.n_params, cfg.seq_len)
        self.peak = cfg.peak_tflops or device_peak_tflops(self.device)

    def _build(self, model: PreTrainedModel) -> None:
        """The trainable module (compiled per block or whole, float8), its DDP/FSDP2 wrapper and AdamW."""
        cfg, world = self.cfg, self.world
        compile_on = cfg.compile == "on" or (cfg.compile == "auto" and self.device.type == "cuda")
        if cfg.float8:
            float8.check_available(self.device)
        self.scope = compile_scope(cfg, world.size, self.source)
        if compile_on:
            _fresh_compile_caches(model, self.source, cfg, self.scope)
        self.tm = Trainable(model, self.device, mixed=self.mixed, compile=self.scope if compile_on else None,
                            activation_checkpointing=cfg.activation_checkpointing, float8=cfg.float8)
        self.n_params = count_parameters(self.tm.module)
        self.mode = parallel.choose(cfg.parallel, world, self.n_params)
        if self.scope == "decoder" and self.mode != "none":
            raise ConfigError(f"train.compile_scope: decoder is for one process, and this run uses {self.mode} over "
                              f"{world.size} processes; set train.compile_scope: blocks (the per-block graphs let "
                              "gradient communication overlap the backward pass)")
        self.net = parallel.wrap(self.tm.module, self.mode, world, blocks=self.tm.blocks)
        self.params = [p for p in self.tm.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            _param_groups(self.tm.module, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8,
            fused=self.device.type == "cuda",
        )

    def run(self) -> TrainResult:
        start, tokens_seen, loss_value = self._resume_or_start()
        log = MetricsLog(self.run_dir / "metrics.jsonl", self.run_dir / "tb", enabled=self.world.main,
                         tensorboard=self.cfg.tensorboard, console=self.console)
        prefetch = Prefetcher(self.source, start=start, stop=self.cfg.steps, total_steps=self.cfg.steps, plan=self.plan,
                              rank=self.world.rank, pin=self.device.type == "cuda")
        t0 = time.perf_counter()
        try:
            tokens_seen, loss_value = self._train(prefetch, log, start, tokens_seen, loss_value, t0)
        finally:
            prefetch.close()
            log.close()
        self._write_final_model()
        peak = cuda_peak_gib() if self.device.type == "cuda" else None
        if peak is not None and self.world.main:
            self.console.print(f"{self.name}: peak GPU memory {peak:.2f} GiB (max_memory_allocated, rank 0)")
        self.tm.hf.config.use_cache = True
        self.tm.hf.eval()
        return TrainResult(self.run_dir / "model", self.cfg.steps, loss_value, tokens_seen, time.perf_counter() - t0)

    def _resume_or_start(self) -> tuple[int, int, float]:
        """(step, tokens seen, loss) to continue from: the last complete checkpoint, or a clean start."""
        world, run_dir = self.world, self.run_dir
        metrics_path = run_dir / "metrics.jsonl"
        if world.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.clean_partial(run_dir)
        parallel.barrier(world)
        start, tokens_seen, loss_value = 0, 0, float("nan")
        if self.resume and ckpt.latest(run_dir) is not None:
            start, tokens_seen, loss_value = self._load()
            if world.main:
                _truncate_metrics(metrics_path, start)
                snapshots.prune_after(run_dir, start)  # later ones are reached and written again
                self.console.print(f"[dim]{self.name}: resuming from step {start} ({ckpt.latest(run_dir)[1].name})[/]")
        elif world.main:
            ckpt.remove_all(run_dir)
            snapshots.prune_after(run_dir, 0)
            metrics_path.unlink(missing_ok=True)
        parallel.barrier(world)
        return start, tokens_seen, loss_value

    def _train(self, prefetch: Prefetcher, log: MetricsLog, start: int, tokens_seen: int, loss_value: float,
               t0: float) -> tuple[int, float]:
        """Steps start..cfg.steps: optimizer step, stop requests, logging, periodic checkpoints.
        Returns (tokens seen, last logged loss)."""
        cfg, world = self.cfg, self.world
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.mixed)
        meter = _Throughput(t0, tokens_seen)
        nonfinite = torch.zeros((), device=self.device)
        snapshot_at = dict(zip(cfg.snapshot_steps(), cfg.snapshots))  # step -> fraction
        stop = _StopRequests()
        # Redrawn twice a second, not Rich's default 10: the redraw thread takes the GIL from the
        # thread that launches the GPU's kernels, and a step's figures change once a step anyway.
        with stop, Progress(*_progress_columns(self.name), console=self.console, disable=not self.progress, transient=False,
                            refresh_per_second=2) as bar:
            task = bar.add_task(self.name, total=cfg.steps, completed=start, loss="-", tps="-", mfu="-")
            for step in range(start, cfg.steps):
                item = prefetch.get()
                lr = cfg.lr * lr_factor(step, total_steps=cfg.steps, warmup_steps=cfg.warmup_steps, min_lr_ratio=cfg.min_lr_ratio)
                step_loss, grad_norm = self._optimizer_step(item, step, lr, autocast)
                nonfinite += (~torch.isfinite(step_loss)).float()
                done = step + 1
                tokens_seen += item.tokens
                last = done == cfg.steps
                save_now = bool(cfg.checkpoint_every) and done % cfg.checkpoint_every == 0 and not last
                snap = done in snapshot_at
                if self.on_step is not None:
                    try:
                        self.on_step(done)
                    except KeyboardInterrupt:
                        stop.requested = True
                check_stop = not world.distributed or done % cfg.log_every == 0 or save_now
                stopping = parallel.any_flag(stop.requested, world) if check_stop else False
                if done % cfg.log_every == 0 or last or done == 1 or save_now or stopping or snap:
                    loss_value = self._log(log, done, item, step_loss, nonfinite, grad_norm, lr, tokens_seen, meter)
                    bar.update(task, loss=f"{loss_value:.3f}", tps=f"{meter.tps:,.0f}",
                               mfu="-" if meter.mfu is None else f"{meter.mfu:.1%}")
                bar.update(task, completed=done)
                if snap:
                    self._snapshot(done, tokens_seen, snapshot_at[done], loss_value)
                if stopping:
                    self._save(done, tokens_seen, item.state, item.tokens_per_source, loss_value)
                    if world.main:
                        self.console.print(f"[yellow]{self.name}: stopped at step {done}; checkpoint saved, rerun to resume[/]")
                    raise KeyboardInterrupt
                if save_now:
                    self._save(done, tokens_seen, item.state, item.tokens_per_source, loss_value)
        return tokens_seen, loss_value

    def _optimizer_step(self, item: Any, step: int, lr: float, autocast: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward/backward over the step's micro-batches, clipping and AdamW: (loss sum, grad norm),
        both left on the device (reading them would wait for the GPU)."""
        cfg, device, net = self.cfg, self.device, self.net
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if item.n_targets == 0:
            raise TrainingError(f"{self.name}: step {step} has no target tokens (every label is masked); check the data/template")
        scale = self.world.size / item.n_targets
        step_loss = torch.zeros((), device=device)
        try:
            for i, mb in enumerate(item.micro):
                b = {k: v.to(device, non_blocking=True) for k, v in mb.items()}
                with parallel.grad_sync(net, self.mode, i == len(item.micro) - 1, keep_gathered=cfg.fsdp_keep_gathered):
                    with autocast:
                        loss_sum = self.tm.loss_sum(net, b)
                    (loss_sum * scale).backward()
                step_loss += loss_sum.detach()
            grad_norm = parallel.clip_grad_norm(self.params, cfg.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        except torch.OutOfMemoryError as exc:
            raise TrainingError(_oom_message(self.name, step + 1, cfg, self.plan)) from exc
        return step_loss, grad_norm

    def _log(self, log: MetricsLog, done: int, item: Any, step_loss: torch.Tensor, nonfinite: torch.Tensor,
             grad_norm: torch.Tensor, lr: float, tokens_seen: int, meter: "_Throughput") -> float:
        """Read the step's loss (the one host-device sync), refuse a non-finite one, write a metrics line."""
        world = self.world
        vals = parallel.all_sum(torch.stack([step_loss, nonfinite, grad_norm.float() / world.size]), world)
        loss_sum_v, bad, gnorm = vals.tolist()
        loss_value = loss_sum_v / item.n_targets
        if bad or loss_value != loss_value or abs(loss_value) == float("inf"):
            raise self._non_finite(done, loss_value)
        now = meter.update(tokens_seen, self.fpt, self.peak, world.size)
        log.write({"step": done, "loss": loss_value, "lr": lr, "grad_norm": gnorm, "tokens": tokens_seen,
                   "tokens_per_s": round(meter.tps, 1), "mfu": None if meter.mfu is None else round(meter.mfu, 4),
                   "elapsed_s": round(now - meter.t0, 3), "tokens_per_source": item.tokens_per_source,
                   **({"peak_memory_gib": cuda_peak_gib()} if self.device.type == "cuda" else {})})
        return loss_value

    def _non_finite(self, done: int, loss_value: float) -> TrainingError:
        good = ckpt.latest(self.run_dir)
        where = f"{good[1]} (step {good[0]})" if good else "none was written yet"
        return TrainingError(
            f"{self.name}: the loss became non-finite (by step {done}; loss {loss_value}); the last good "
            f"checkpoint is {where}. Lower the learning rate (train.lr={self.cfg.lr}), raise "
            f"train.warmup_steps, or lower train.grad_clip, then resume or start over."
        )

    def _hf_weights(self) -> dict[str, torch.Tensor] | None:
        """The model's full weights under HF names on the CPU, on the main rank (None elsewhere); every rank
        calls it (a collective under FSDP2)."""
        tm = self.tm
        sd, _ = parallel.full_state(tm.module, self.optimizer) if self.mode == "fsdp" else (tm.module.state_dict(), None)
        return tm.to_hf({k: v.detach().to("cpu") for k, v in sd.items()}) if self.world.main else None

    def _snapshot(self, step: int, tokens: int, fraction: float, loss: float) -> None:
        """run_dir/snapshots/step-N: the model as it is after `step` (train.snapshots), atomically."""
        hf_sd = self._hf_weights()
        if self.world.main:
            snapshots.write(self.run_dir, step, tokens, fraction, loss,
                            lambda tmp: self.tm.write_hf_dir(tmp, hf_sd, self.tokenizer))
        parallel.barrier(self.world)

    def _write_final_model(self) -> None:
        """run_dir/model (an HF directory, atomically) and mixture.json; the checkpoints go."""
        tm, world = self.tm, self.world
        hf_sd = self._hf_weights()
        if world.main:
            with atomic_dir(self.run_dir / "model") as tmp:
                tm.write_hf_dir(tmp, hf_sd, self.tokenizer)
            tm.load_into_hf(hf_sd)
            write_json(self.run_dir / "mixture.json", self.source.report(self.cfg.steps))
            ckpt.remove_all(self.run_dir)
        parallel.barrier(world)

    # ------------------------------------------------------------------ checkpoints
    def _save(self, step: int, tokens: int, batch_state: dict[str, Any], tokens_per_source: dict[str, int], loss: float) -> None:
        sd, osd = parallel.full_state(self.tm.module, self.optimizer)
        rngs = parallel.gather_objects(_rng_state(), self.world)
        error = None
        if self.world.main:
            trainer = {"step": step, "tokens": tokens, "loss": loss, "tokens_per_source": tokens_per_source,
                       "source": batch_state, "global_rows": self.plan.global_rows, "seq_len": self.cfg.seq_len,
                       "world_size": self.world.size, "parallel": self.mode}

            def writer(tmp: Path) -> None:
                self.tm.write_hf_dir(tmp, self.tm.to_hf(sd), self.tokenizer)
                torch.save({"optimizer": osd, "rng": rngs}, tmp / "optimizer.pt")
                (tmp / "trainer_state.json").write_text(json.dumps(trainer, indent=1), encoding="utf-8")

            try:
                ckpt.write(self.run_dir, step, writer, keep=self.cfg.keep_checkpoints)
            except TrainingError as exc:
                error = f"{self.name}: {exc}"
        error = parallel.broadcast_object(error, self.world)
        if error:
            raise TrainingError(error)

    def _load(self) -> tuple[int, int, float]:
        found = ckpt.latest(self.run_dir)
        assert found is not None
        step, folder = found
        trainer = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
        if trainer["global_rows"] != self.plan.global_rows or trainer["seq_len"] != self.cfg.seq_len:
            raise TrainingError(
                f"{self.name}: the checkpoint in {folder} was trained with a global batch of {trainer['global_rows']} x "
                f"{trainer['seq_len']} tokens, this run has {self.plan.global_rows} x {self.cfg.seq_len}; resuming would "
                "change the data order. Set train.global_batch_tokens (or batch_size / grad_accum) to match, or start over."
            )
        extra = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=False)
        try:
            own = self.tm.from_hf(read_hf_weights(folder))
            parallel.load_full_state(self.tm.module, self.optimizer, own, extra["optimizer"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise TrainingError(f"{self.name}: {folder} does not match this model/optimizer ({type(exc).__name__}: {exc})") from exc
        rngs = extra["rng"]
        mine = rngs[self.world.rank] if len(rngs) == self.world.size else rngs[0]
        torch.set_rng_state(mine["torch"])
        if "cuda" in mine and self.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda"])
        self.source.load(trainer["source"])
        return step, int(trainer["tokens"]), float(trainer.get("loss", float("nan")))
