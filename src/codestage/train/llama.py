"""A compile-friendly Llama for training, weight-for-weight the Hugging Face `LlamaForCausalLM`.

Why our own module: fused QKV and gate/up projections (fewer, larger matmuls), SDPA with
`is_causal` (flash / cuDNN attention), RoPE tables computed once, SwiGLU as a Triton op on CUDA
(`swiglu.py`, via `use_triton_kernels`), `torch.compile` per block or of the whole decoder, and a
loss computed inside `forward` by the chunked linear + cross-entropy (`fused_ce.py`), so the full
[tokens x vocab] logits are never materialised. Checkpoints stay plain HF directories: weights go
through `from_hf_state_dict` / `to_hf_state_dict` (a split/concat of the fused matrices).

`supports(config)` says whether a HF config can take this path; anything else (another model
family, RoPE scaling, biases) trains through the generic HF path in `modules.py`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from codestage.train.fused_ce import linear_cross_entropy


def _rope_theta(config: Any) -> float | None:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    if isinstance(params, dict):
        if params.get("rope_type", "default") != "default":
            return None
        if "rope_theta" in params:
            return float(params["rope_theta"])
    theta = getattr(config, "rope_theta", None)
    return float(theta) if theta is not None else None


def supports(config: Any) -> bool:
    """True when `config` is a plain Llama this module reproduces exactly."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return (
        getattr(config, "model_type", None) == "llama"
        and getattr(config, "hidden_act", "silu") == "silu"
        and not getattr(config, "attention_bias", False)
        and not getattr(config, "mlp_bias", False)
        and getattr(config, "pretraining_tp", 1) == 1
        and head_dim * heads == config.hidden_size
        and _rope_theta(config) is not None
    )


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.qkv = nn.Linear(dim, (heads + 2 * kv_heads) * self.head_dim, bias=False)
        self.o = nn.Linear(heads * self.head_dim, dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        hd = self.head_dim
        qkv = self.qkv(x).view(b, t, self.heads + 2 * self.kv_heads, hd)
        q, k, v = qkv.split([self.heads, self.kv_heads, self.kv_heads], dim=2)
        # RoPE in the [batch, time, head, dim] layout the projection wrote, transposed for SDPA
        # only after: the backward then writes the q/k gradients back without a transposed copy.
        cos, sin = cos[:t, None].to(q.dtype), sin[:t, None].to(q.dtype)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                           enable_gqa=self.kv_heads != self.heads)
        return self.o(y.transpose(1, 2).reshape(b, t, self.heads * hd))


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for gate_up = [gate | up]; swiglu.py has the same as a fused CUDA kernel."""
    g, u = gate_up.chunk(2, dim=-1)
    return F.silu(g) * u


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)
        self.silu_mul = silu_mul  # FastLlama.use_triton_kernels() puts swiglu.py's kernel here

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.silu_mul(self.gate_up(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.norm1 = RMSNorm(dim, eps)
        self.attn = Attention(dim, heads, kv_heads)
        self.norm2 = RMSNorm(dim, eps)
        self.mlp = MLP(dim, hidden)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class FastLlama(nn.Module):
    """Llama decoder whose `forward(input_ids, labels)` returns the summed token loss."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        if not supports(config):
            raise ValueError("FastLlama: this config is not a plain Llama (see train/llama.py supports())")
        d, heads = config.hidden_size, config.num_attention_heads
        kv = getattr(config, "num_key_value_heads", None) or heads
        self.config = config
        self.tied = bool(getattr(config, "tie_word_embeddings", False))
        self.embed = nn.Embedding(config.vocab_size, d)
        self.blocks = nn.ModuleList(
            Block(d, heads, kv, config.intermediate_size, config.rms_norm_eps) for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(d, config.rms_norm_eps)
        self.lm_head = None if self.tied else nn.Linear(d, config.vocab_size, bias=False)
        self.register_buffer("cos", torch.empty(0), persistent=False)
        self.register_buffer("sin", torch.empty(0), persistent=False)
        self.reset_rope()
        self.compute_dtype: torch.dtype | None = None  # bf16 under mixed precision: the loss matmul's dtype
        self.checkpoint_blocks = False
        self.compile_loss = False  # compile the loss's per-chunk kernel (CUDA)

    def reset_rope(self) -> None:
        """(Re)compute the RoPE tables (after building on the meta device and `to_empty`)."""
        cfg, dev = self.config, self.embed.weight.device
        hd = cfg.hidden_size // cfg.num_attention_heads
        if dev.type == "meta":
            dev = torch.device("cpu")
        inv_freq = 1.0 / (_rope_theta(cfg) ** (torch.arange(0, hd, 2, dtype=torch.int64, device=dev).float() / hd))
        freqs = torch.arange(cfg.max_position_embeddings, dtype=torch.float32, device=dev)[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos, self.sin = emb.cos(), emb.sin()

    def use_triton_kernels(self) -> bool:
        """Run the MLPs' silu(gate) * up through swiglu.py's Triton kernels; False where Triton is missing."""
        try:
            from codestage.train.swiglu import silu_mul as fused
        except ImportError:
            return False
        for block in self.blocks:
            block.mlp.silu_mul = fused
        return True

    def output_weight(self) -> torch.Tensor:
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    def hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        # The residual stream stays fp32 even when the parameters are bf16 (a bf16 checkpoint trained
        # as is), as it is under autocast over fp32 weights: summing 24+ block outputs in bf16 loses
        # precision (on CPU, 0.55% loss deviation from fp32 parameters against 0.22% with this).
        x = self.embed(input_ids).float()
        cos, sin = self.cos, self.sin
        for block in self.blocks:
            if self.checkpoint_blocks and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, cos, sin, use_reentrant=False)
            else:
                x = block(x, cos, sin)
        return self.norm(x)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """With labels: the sum of next-token losses over labelled positions (-100 = none), fp32.

        Without: logits [batch, seq, vocab] (for tests and small evaluations only).
        """
        h = self.hidden(input_ids)
        w = self.output_weight()
        if labels is None:
            return h @ w.to(h.dtype).t()
        targets = F.pad(labels[:, 1:], (0, 1), value=-100)
        return linear_cross_entropy(h.flatten(0, 1), w, targets.flatten(), self.compute_dtype, compiled=self.compile_loss)

    # ------------------------------------------------------------------ HF weights
    def from_hf_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(self.hf_to_own(sd), strict=True)

    def hf_to_own(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Hugging Face Llama names -> this module's names (q/k/v and gate/up concatenated)."""
        own: dict[str, torch.Tensor] = {"embed.weight": sd["model.embed_tokens.weight"], "norm.weight": sd["model.norm.weight"]}
        if not self.tied:
            own["lm_head.weight"] = sd["lm_head.weight"]
        for i in range(len(self.blocks)):
            p = f"model.layers.{i}."
            a, m = p + "self_attn.", p + "mlp."
            own[f"blocks.{i}.attn.qkv.weight"] = torch.cat([sd[a + "q_proj.weight"], sd[a + "k_proj.weight"], sd[a + "v_proj.weight"]])
            own[f"blocks.{i}.attn.o.weight"] = sd[a + "o_proj.weight"]
            own[f"blocks.{i}.mlp.gate_up.weight"] = torch.cat([sd[m + "gate_proj.weight"], sd[m + "up_proj.weight"]])
            own[f"blocks.{i}.mlp.down.weight"] = sd[m + "down_proj.weight"]
            own[f"blocks.{i}.norm1.weight"] = sd[p + "input_layernorm.weight"]
            own[f"blocks.{i}.norm2.weight"] = sd[p + "post_attention_layernorm.weight"]
        return own

    def to_hf_state_dict(self, sd: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """HF key names; `sd` is this module's (full) state dict, by default the live one."""
        sd = self.state_dict() if sd is None else sd
        out = {"model.embed_tokens.weight": sd["embed.weight"], "model.norm.weight": sd["norm.weight"]}
        out["lm_head.weight"] = sd["embed.weight"] if self.tied else sd["lm_head.weight"]
        for i, block in enumerate(self.blocks):
            p = f"model.layers.{i}."
            att = block.attn
            q, k, v = sd[f"blocks.{i}.attn.qkv.weight"].split(
                [att.heads * att.head_dim, att.kv_heads * att.head_dim, att.kv_heads * att.head_dim])
            g, u = sd[f"blocks.{i}.mlp.gate_up.weight"].chunk(2)
            out.update({
                p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k, p + "self_attn.v_proj.weight": v,
                p + "self_attn.o_proj.weight": sd[f"blocks.{i}.attn.o.weight"],
                p + "mlp.gate_proj.weight": g, p + "mlp.up_proj.weight": u,
                p + "mlp.down_proj.weight": sd[f"blocks.{i}.mlp.down.weight"],
                p + "input_layernorm.weight": sd[f"blocks.{i}.norm1.weight"],
                p + "post_attention_layernorm.weight": sd[f"blocks.{i}.norm2.weight"],
            })
        return {k: v.contiguous() for k, v in out.items()}
