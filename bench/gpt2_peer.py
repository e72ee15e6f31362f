"""The second peer of bench/train_throughput.py: a plain GPT-2-style PyTorch model, compiled per block.

Issue 4 takes the peer figure as the best of two plain baselines: Hugging Face LlamaForCausalLM +
torch.compile, and a GPT-2-style model written directly in PyTorch (the kind of nanoGPT-like
training script a user would otherwise run). This is the second one, at the same width, depth,
heads and sequence as a codestage preset: pre-LayerNorm blocks with biases, fused QKV, SDPA causal
attention, a 4d GELU MLP (the presets' SwiGLU width 8d/3 x 3 matrices holds the same weights as
4d x 2), learned positions, the output matrix tied to the token embedding, and a plain
cross-entropy over full bf16 logits. Nothing here is tuned beyond what such a script does.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class GPT2Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 4 * dim)
        self.out = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT2(nn.Module):
    """forward(input_ids) -> mean next-token cross-entropy over the batch."""

    def __init__(self, vocab: int, dim: int, layers: int, heads: int, max_len: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList(GPT2Block(dim, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        x = self.wte(input_ids) + self.wpe(torch.arange(t, device=input_ids.device))
        for block in self.blocks:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), input_ids[:, 1:].flatten())


def gpt2_like(conf: Any) -> GPT2:
    """The GPT-2-style model at a codestage preset's width, depth, heads and vocabulary."""
    return GPT2(conf.vocab_size, conf.hidden_size, conf.num_hidden_layers, conf.num_attention_heads,
                conf.max_position_embeddings)
