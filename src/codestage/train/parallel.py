"""Processes and GPUs: torchrun environment, DDP / FSDP2 wrapping, gradient sync, full state dicts.

Everything goes through torch.distributed (launched by torchrun; nothing home-made). With one
process and no torchrun environment, every helper here is a no-op and no process group exists.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from codestage.errors import ConfigError
from codestage.model import resolve_device

AUTO_FSDP_PARAMS = 3_000_000_000  # 'auto' shards models above this; DDP below (faster while it fits)


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1 and dist.is_initialized()


def setup(device_name: str = "auto") -> World:
    """Join the torchrun job (if any) and pick this process's device."""
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if env_world > 1 or dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, timeout=timedelta(minutes=int(os.environ.get("CODESTAGE_DIST_TIMEOUT_MIN", "60"))),
                                    **({"device_id": device} if device.type == "cuda" else {}))
        return World(dist.get_rank(), dist.get_world_size(), local, device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return World(0, 1, 0, device)


def choose(mode: str, world: World, n_params: int) -> str:
    """'none' | 'ddp' | 'fsdp' for TrainConfig.parallel ('auto' decides by world size and model size)."""
    if mode == "auto":
        if world.size == 1:
            return "none"
        return "fsdp" if n_params > AUTO_FSDP_PARAMS else "ddp"
    if mode in ("ddp", "fsdp") and not world.distributed:
        if world.size == 1:
            return "none"  # one process: nothing to replicate or shard
    if mode not in ("none", "ddp", "fsdp"):
        raise ConfigError(f"train.parallel: {mode!r} is not one of auto, none, ddp, fsdp")
    if mode == "none" and world.size > 1:
        raise ConfigError("train.parallel: 'none' with several processes would train unsynchronised copies; use ddp or fsdp")
    return mode


def wrap(module: nn.Module, mode: str, world: World, *, blocks: list[nn.Module]) -> nn.Module:
    """The module that forward/backward run through (DDP wrapper, or the FSDP2-sharded module).

    FSDP2 gathers the fp32 parameters and leaves bf16 to autocast, as one GPU and DDP do. Why not
    `param_dtype=bf16` (half the all-gather bytes): the forward then also sees the vector parameters
    and the embedding in bf16, which autocast keeps fp32; RMSNorm gains near 1.0 are rounded to
    steps of 2^-7 (0.8%), coarser than several Adam updates. On 2 H200s at 350m that drifted the
    loss 1.0-3.3% from the 1-GPU run over 60 steps (five runs), against 0.1-0.6% with fp32 gathers
    (three runs) and 0.3% between two 1-GPU runs of the same maths (bench/RESULTS.md).
    """
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [world.device.index] if world.device.type == "cuda" else None
        with warnings.catch_warnings():  # newer torch renames broadcast_buffers; the meaning we want is the same
            warnings.simplefilter("ignore", FutureWarning)
            return DDP(module, device_ids=ids, broadcast_buffers=False, gradient_as_bucket_view=True)
    if mode == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(param_dtype=None, reduce_dtype=torch.float32)
        for block in blocks:
            fully_shard(block, mp_policy=mp)
        fully_shard(module, mp_policy=mp)
        return module
    return module


@contextmanager
def grad_sync(net: nn.Module, mode: str, sync: bool, *, keep_gathered: bool = True) -> Iterator[None]:
    """Skip the gradient all-reduce / reduce-scatter on all but the last micro-batch of a step.

    FSDP2 with `keep_gathered`: the weights gathered for a micro-batch stay gathered until the last
    one; the next forward needs them again, so resharding after each backward only re-runs the
    all-gathers (1.17-1.26x -> 1.56x scaling at 350m on 2 GPUs, 2 micro-batches each).
    """
    if mode == "ddp" and not sync:
        with net.no_sync():  # type: ignore[operator]
            yield
    elif mode == "fsdp":
        net.set_requires_gradient_sync(sync)  # type: ignore[operator]
        net.set_reshard_after_backward(sync or not keep_gathered)  # type: ignore[operator]
        yield
    else:
        with nullcontext():
            yield


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip by the global norm; works on plain tensors and FSDP2's sharded DTensors alike."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads, foreach=True)
    if hasattr(total, "full_tensor"):
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total, foreach=True)
    return total


def all_sum(x: torch.Tensor, world: World) -> torch.Tensor:
    if world.distributed:
        x = x.clone()
        dist.all_reduce(x)
    return x


def any_flag(flag: bool, world: World) -> bool:
    """True on every rank if it is true on any (used for stop requests)."""
    if not world.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=world.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def gather_objects(obj: Any, world: World) -> list[Any]:
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, world: World) -> Any:
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def full_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Full (unsharded, CPU) model and optimizer state dicts keyed by parameter name.

    A collective under FSDP2: every rank must call it; the result is meant for rank 0.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(module, options=opts), get_optimizer_state_dict(module, optimizer, options=opts)


def load_full_state(module: nn.Module, optimizer: torch.optim.Optimizer, model_sd: dict[str, torch.Tensor],
                    optim_sd: dict[str, Any]) -> None:
    """Load full state dicts (as written by `full_state`) into a plain, DDP or FSDP2 module."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, strict=True)
    set_model_state_dict(module, model_sd, options=opts)
    set_optimizer_state_dict(module, optimizer, optim_state_dict=optim_sd, options=opts)


def shutdown(world: World, created: bool) -> None:
    if created and dist.is_initialized():
        dist.destroy_process_group()
