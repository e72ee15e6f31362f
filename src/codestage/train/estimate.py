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
from codestage.train.fused_ce import chunk_rows, even_rows

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
    """Bytes per GPU at the training step's peak, by term (each a count of what is held, none a fitted factor).

    - params, grads, adam: fp32 weights, their fp32 gradients, AdamW's m and v (4 + 4 + 8 bytes a
      parameter). Fused AdamW and clipping (foreach) update in place: no full-size temporaries.
    - weights_bf16: under bf16 autocast every block matrix is cast to bf16 in the forward and the
      copy is saved for the backward (grad of the input = grad of the output x the bf16 weight):
      2 bytes a block parameter, all layers at once (one layer's with activation checkpointing).
      Seen in the forward graph torch.compile's partitioner keeps (bench/saved_activations.py).
    - activations: what autograd saves, counted the same way (CPU bf16 autocast, the whole
      decoder compiled as in training): per layer and token 7 d + 3 ff values in bf16 (both
      norms' outputs, q and k after RoPE, v, the attention output and the o projection's input,
      the gate/up output, the SwiGLU output), the fp32 residual stream at both norms (8 d bytes) and the
      attention's log-sum-exp (4 bytes a head); plus one bf16 d-vector a token after the last
      layer. With checkpointing: the fp32 block input of every layer plus one layer in full.
      The loss (fused_ce) adds its fp32 output-matrix gradient, the bf16 padded output matrix,
      one chunk of bf16 logits (their gradient overwrites them on CUDA) and the bf16 gradient of
      the hidden states.
    - The peak is the larger of the end of the forward (activations + weights_bf16) and of the
      backward. Gradients: with grad_accum 1 they do not exist during the forward (zero_grad
      sets them to None), so they only compete with the forward's transients; with grad_accum > 1
      they are held throughout, and the whole-decoder graph returns the next micro-batch's block
      gradients (4 bytes a block parameter) all at once before they are added in.

    Checked against the measured peaks in bench/RESULTS.md (these are `max_memory_allocated` of
    bench/train_throughput.py, which until this estimate was written also kept the HF model's
    fp32 weights on the GPU beside ours: 4 bytes a parameter more than `codestage pretrain`
    holds): pangu-2.6b at 4 x 1024, accumulation 4: 57.5 GiB + 9.9 GiB (HF copy) = 67.4 against
    69.15 measured; 1.3b at 8 x 1024: 37.2 + 4.9 = 42.1 against 42.9-43.3; 760m, 350m, 125m
    (compiled per block then): 26.9, 22.2, 8.5 against 28.0, 23.3, 9.5 (the smaller, the more
    of the peak is outside these terms: allocator rounding, compiled-graph workspaces).
    FSDP2 (`sharded`) shards params, grads and Adam, except while it accumulates micro-batches:
    the unsharded fp32 gradients are held until the last one, and with `keep_gathered`
    (train.fsdp_keep_gathered) the gathered fp32 weights too (the sharded terms are not measured
    against a GPU).
    """
    d, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    heads, vocab = config.num_attention_heads, config.vocab_size
    tied = bool(getattr(config, "tie_word_embeddings", False))
    # The blocks' matrices (what the casts copy): all but the embedding / output matrix and the norms.
    n_block = max(n_params - vocab * d * (1 if tied else 2) - d * (2 * layers + 1), 0)
    shard = world if sharded else 1
    states = n_params * 4 / shard
    tokens = micro_batch * seq_len
    act_bytes = 2 if mixed else 4
    per_layer = tokens * ((7 * d + 3 * ff) * act_bytes + 2 * d * 4 + heads * 4)
    if activation_checkpointing:
        acts = tokens * d * 4 * layers + per_layer
        weights = 2 * n_block / max(layers, 1) if mixed else 0.0
    else:
        acts = per_layer * layers
        weights = 2 * n_block if mixed else 0.0
    v_pad = vocab + (-vocab % 128)
    loss_rows = even_rows(tokens, min(tokens, chunk_rows(vocab)))
    acts += tokens * d * act_bytes + v_pad * d * (4 + act_bytes) + loss_rows * v_pad * act_bytes + tokens * d * act_bytes
    accumulating = grad_accum > 1
    gathered = n_params * 4 if sharded and accumulating and keep_gathered else (2 * n_params * 4 / max(layers, 1) if sharded else 0.0)
    grads = n_params * 4 if sharded and accumulating else states
    forward = acts + weights
    if accumulating:
        transient = max(forward, 4 * n_block / shard)  # held grads + the next micro-batch's, returned by the graph
        held = grads
    else:
        transient = max(forward, grads)  # grads appear as the forward's saved tensors are freed
        held = 0.0
    out = {"params": states + gathered, "grads": grads, "adam": 2 * states, "weights_bf16": float(weights),
           "activations": float(acts)}
    out["total"] = out["params"] + held + out["adam"] + transient
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
