"""Numbers known before training starts: parameters, FLOPs per token, memory, tokens per source.

FLOPs per token follow the PaLM convention: 6 N (forward + backward of every weight matrix; the
tied input/output embedding counted once) plus 12 L d T for attention (L layers, width d,
sequence T). MFU = FLOPs per token x tokens per second / peak FLOP/s.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from codestage.mixing import Schedule, flatten
from codestage.model import count_parameters
from codestage.train.fused_ce import chunk_rows

# Dense bf16 tensor-core peaks (TFLOP/s, vendor datasheets) for MFU in logs; the benchmark
# measures its own ceiling instead. Matched by substring of torch.cuda.get_device_name().
PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "H800": 989.4, "GH200": 989.4, "B200": 2250.0, "A100": 312.0,
               "A800": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "4090": 165.2, "3090": 71.0}


def planned_parameters(config: Any) -> int:
    """Parameters of a causal LM with this HF config, counted without allocating it (on the meta device)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return count_parameters(model)


def flops_per_token(config: Any, n_params: int, seq_len: int) -> float:
    return 6.0 * n_params + 12.0 * config.num_hidden_layers * config.hidden_size * seq_len


def device_peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tf in PEAK_TFLOPS.items():
        if key in name:
            return tf
    return None


def memory_estimate(config: Any, n_params: int, *, micro_batch: int, seq_len: int, world: int = 1, sharded: bool = False,
                    activation_checkpointing: bool = False, mixed: bool = True, grad_accum: int = 1,
                    keep_gathered: bool = True) -> dict[str, float]:
    """Rough bytes per GPU: fp32 params + grads + Adam (m, v), plus activations of one micro-batch.

    Activations per layer and token: ~ (10 d + 3 ff) values in bf16 (norm inputs, q/k/v, attention
    out, MLP in/out; flash attention keeps no T x T matrix) plus the fp32 residual stream at both
    norms; with checkpointing one d-vector per layer plus one layer in full. Against the peaks
    measured on an H200 (bench/RESULTS.md: 9.5, 23.3, 28.0, 43.3 GiB for 125m..1.3b at micro-batch
    16, 16, 8, 8 x 1024) this gives 9.1, 22.9, 24.7, 37.3 GiB. The loss adds one chunk of logits
    and their gradient (at most 1 GB, fused_ce.chunk_rows). FSDP2 (`sharded`) shards params,
    grads and Adam, except while it accumulates micro-batches: the unsharded fp32 gradients are
    held until the last one, and with `keep_gathered` (train.fsdp_keep_gathered) the gathered
    fp32 weights too.
    """
    d, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    shard = world if sharded else 1
    states = n_params * 4 / shard
    tokens = micro_batch * seq_len
    act_bytes = 2 if mixed else 4
    per_layer = tokens * ((10 * d + 3 * ff) * act_bytes + 2 * d * 4)  # + the fp32 residual saved at both norms
    acts = (tokens * d * act_bytes * layers + per_layer) if activation_checkpointing else per_layer * layers
    loss_rows = min(tokens, chunk_rows(config.vocab_size))
    acts += tokens * d * 4 * 2 + 2 * loss_rows * config.vocab_size * 2  # one chunk's bf16 logits and their gradient
    accumulating = sharded and grad_accum > 1
    gathered = n_params * 4 if accumulating and keep_gathered else (2 * n_params * 4 / max(layers, 1) if sharded else 0.0)
    out = {"params": states + gathered, "grads": n_params * 4 if accumulating else states, "adam": 2 * states,
           "activations": float(acts)}
    out["total"] = sum(out.values())
    return out


def planned_tokens(schedule: Schedule, groups: Mapping[str, Mapping[str, float]], *, steps: int, rows_per_step: int,
                   seq_len: int) -> dict[str, float]:
    """Expected tokens per source over the run (the sampler meets these to within one row per phase)."""
    out: dict[str, float] = {}
    for step in range(steps):
        fraction = step / steps
        phase = schedule.phases[schedule.phase_index(fraction)]
        for src, w in flatten(phase.weights_at(fraction), groups).items():
            out[src] = out.get(src, 0.0) + w * rows_per_step * seq_len
    return out
