"""The ladder's rungs: each (arm, size, budget) as a model shape and a training recipe, by one size rule.

The rule (docs/ladder.md, "The size rule"):

- **Shape.** A rung of depth L has width d = aspect_ratio x L rounded to a multiple of head_dim,
  d / head_dim heads and a SwiGLU width of 8/3 d rounded up to a multiple of head_dim (with the
  default head dim of 64, the presets' rule).
  With the defaults (aspect ratio 64, head dim 64) depth = heads = d / 64, GPT-2 small's proportions.
  A size is a target count of non-embedding parameters N; the rung is the depth whose exact N is
  nearest in log scale.
- **Recipe** (Porian et al. 2024, as the OLMo ladder of Bhagia et al. 2024 and DataDecide set it):
  peak learning rate 0.0047 (N / 108M)^(-1/3); global batch 160 sequences of 2,048 tokens x
  (N / 108M)^(2/3), i.e. 327,680 (N / 108M)^(2/3) tokens, in rows of the study's seq_len rounded to a
  multiple of `batch_multiple`; linear warm-up over N tokens, cosine decay to 1% of the peak.
- **Budget.** tokens = budget x N, rounded to whole optimizer steps.

N counts every weight but the (tied) token embedding, computed from the model config itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from codestage.config import LadderConfig, LadderRuleConfig, StudyConfig, TrainConfig, parse_size
from codestage.errors import ConfigError
from codestage.model import model_config
from codestage.train.estimate import planned_parameters

LR_REF = 0.0047           # peak learning rate at N_REF (Porian et al. 2024; OLMo ladder scripts/ladder.py)
BATCH_REF_TOKENS = 160 * 2048  # global batch at N_REF: 160 sequences of 2,048 tokens
N_REF = 108e6
LADDER_PRESET = "micro"   # the base config a rung's overrides replace (every shape field is overridden)
_MAX_DEPTH = 256


@dataclass(frozen=True)
class Shape:
    """A Llama decoder's shape by the rule: `layers` blocks of `width` with `heads` heads and a SwiGLU of `ffn`."""

    layers: int
    width: int
    heads: int
    ffn: int

    def overrides(self, seq_len: int) -> dict[str, int]:
        """model.overrides for this shape (context = the training sequence length)."""
        return {"hidden_size": self.width, "num_hidden_layers": self.layers, "num_attention_heads": self.heads,
                "num_key_value_heads": self.heads, "intermediate_size": self.ffn, "max_position_embeddings": seq_len}


def shape_at(depth: int, rule: LadderRuleConfig) -> Shape:
    width = max(1, round(rule.aspect_ratio * depth / rule.head_dim)) * rule.head_dim
    ffn = math.ceil(8 * width / 3 / rule.head_dim) * rule.head_dim
    return Shape(depth, width, width // rule.head_dim, ffn)


def count_params(shape: Shape, vocab_size: int, seq_len: int) -> tuple[int, int]:
    """(non-embedding, total) parameters of the model this shape builds, counted on the meta device."""
    conf = model_config(LADDER_PRESET, vocab_size, eos_token_id=0, pad_token_id=1, **shape.overrides(seq_len))
    total = planned_parameters(conf)
    embedding = vocab_size * shape.width * (1 if conf.tie_word_embeddings else 2)
    return total - embedding, total


def non_embedding(shape: Shape) -> int:
    """Non-embedding parameters of a rule shape: per block q, k, v, o (4 d^2), gate, up, down (3 d f) and
    two norms (2 d), plus the final norm (tested against the counted model)."""
    d, f = shape.width, shape.ffn
    return shape.layers * (4 * d * d + 3 * d * f + 2 * d) + d


def shape_for(target: float, rule: LadderRuleConfig) -> Shape:
    """The rule's shape whose non-embedding parameters are nearest `target` in log scale."""
    best, best_gap = None, math.inf
    for depth in range(1, _MAX_DEPTH + 1):
        shape = shape_at(depth, rule)
        gap = abs(math.log(non_embedding(shape) / target))
        if gap < best_gap:
            best, best_gap = shape, gap
        elif non_embedding(shape) > target:
            break
    assert best is not None
    return best


def learning_rate(n: float, rule: LadderRuleConfig) -> float:
    return rule.lr_scale * LR_REF * (n / N_REF) ** (-1 / 3)


def batch_rows(n: float, seq_len: int, rule: LadderRuleConfig) -> int:
    """Global batch in rows of seq_len: 327,680 (N / 108M)^(2/3) tokens, to a multiple of batch_multiple."""
    m = rule.batch_multiple
    return max(m, m * round(BATCH_REF_TOKENS * (n / N_REF) ** (2 / 3) / seq_len / m))


def micro_rows(rows: int, cap: int) -> int:
    """Rows per micro-batch: the largest divisor of the global rows within the study's train.batch_size."""
    return max(r for r in range(1, min(rows, cap) + 1) if rows % r == 0)


def size_label(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2g}{unit}" if n / scale < 10 else f"{n / scale:.0f}{unit}"
    return f"{n:.0f}"


def budget_label(budget: float) -> str:
    return f"{budget:g}x"


@dataclass(frozen=True)
class Rung:
    """One ladder run: an arm at a size and budget, with the model and training recipe the rule gives."""

    arm: str
    size: str            # the rung's label by its non-embedding parameters, e.g. 3.2M
    budget: float        # tokens per non-embedding parameter asked for
    shape: Shape
    params: int          # non-embedding
    total_params: int    # with the token embedding (tied: once)
    seq_len: int
    rows: int            # global batch, sequences
    micro: int           # sequences per micro-batch
    steps: int
    warmup_steps: int
    lr: float
    min_lr_ratio: float
    snapshots: tuple[float, ...]  # checkpoint fractions below 1 (the final model is the last)

    @property
    def run(self) -> str:
        return f"{self.arm}-{self.size}-{budget_label(self.budget)}"

    @property
    def batch_tokens(self) -> int:
        return self.rows * self.seq_len

    @property
    def tokens(self) -> int:
        return self.steps * self.batch_tokens

    @property
    def flops(self) -> float:
        """6 N D with N non-embedding (Kaplan et al.; the compute a ladder's law is read against)."""
        return 6.0 * self.params * self.tokens

    def snapshot_steps(self) -> list[int]:
        return [max(1, round(f * self.steps)) for f in self.snapshots]

    def checkpoint_tokens(self) -> list[tuple[float, int, int]]:
        """(fraction, step, tokens seen) of every evaluated checkpoint, the final model last."""
        pts = [(f, s, s * self.batch_tokens) for f, s in zip(self.snapshots, self.snapshot_steps())]
        return pts + [(1.0, self.steps, self.tokens)]

    def train_config(self, base: TrainConfig) -> TrainConfig:
        """The study's pretraining settings with this rung's batch, schedule and snapshots (validated)."""
        data = base.model_dump()
        data.update(steps=self.steps, batch_size=self.micro, grad_accum=1, global_batch_tokens=self.batch_tokens,
                    lr=self.lr, warmup_steps=self.warmup_steps, min_lr_ratio=self.min_lr_ratio,
                    snapshots=list(self.snapshots))
        try:
            return TrainConfig.model_validate(data)
        except ValueError as exc:
            raise ConfigError(f"ladder rung {self.run}: {exc}") from None

    def model_overrides(self) -> dict[str, int]:
        return self.shape.overrides(self.seq_len)

    def describe(self) -> dict[str, Any]:
        return {"arm": self.arm, "run": self.run, "size": self.size, "budget": self.budget, "layers": self.shape.layers,
                "width": self.shape.width, "heads": self.shape.heads, "ffn": self.shape.ffn, "params": self.params,
                "total_params": self.total_params, "tokens": self.tokens, "steps": self.steps, "batch_rows": self.rows,
                "micro_rows": self.micro, "seq_len": self.seq_len, "warmup_steps": self.warmup_steps, "lr": self.lr,
                "min_lr_ratio": self.min_lr_ratio, "flops": self.flops}


@dataclass(frozen=True)
class LadderPlan:
    rungs: tuple[Rung, ...]
    target: tuple[float, float]
    vocab_size: int

    @property
    def flops(self) -> float:
        return sum(r.flops for r in self.rungs)

    @property
    def target_flops(self) -> float:
        return 6.0 * self.target[0] * self.target[1]

    def largest_tokens(self, arm: str) -> int:
        return max(r.tokens for r in self.rungs if r.arm == arm)


def plan_ladder(cfg: StudyConfig, vocab_size: int | None = None) -> LadderPlan:
    """Every rung of the study's ladder, arm by arm, size by size, budget by budget."""
    lc: LadderConfig | None = cfg.ladder
    if lc is None:
        raise ConfigError("no ladder: the study config has no `ladder:` section (docs/ladder.md)")
    vocab = vocab_size or cfg.tokenizer.vocab_size
    base = cfg.pretrain.train
    shapes: dict[Shape, str] = {}
    for raw in lc.sizes:
        shape = shape_for(parse_size(raw), lc.rule)
        if shape in shapes:
            near = ", ".join(f"{s.layers} x {s.width}: {size_label(non_embedding(s))}"
                             for s in (shape_at(d, lc.rule) for d in range(max(1, shape.layers - 2), shape.layers + 3)))
            raise ConfigError(f"ladder.sizes: {shapes[shape]!r} and {raw!r} give the same rung ({shape.layers} layers x "
                              f"{shape.width}, {non_embedding(shape):,} non-embedding parameters); the rule's shapes "
                              f"near it (layers x width: N) are {near}")
        shapes[shape] = str(raw)
    ordered = sorted(shapes, key=non_embedding)
    labels = [size_label(non_embedding(s)) for s in ordered]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"ladder.sizes: two rungs share the label {labels}; choose sizes further apart")
    snapshots = tuple(f for f in lc.checkpoints if f < 1.0)
    rungs = []
    for arm in lc.arms or []:
        for shape in ordered:
            n, total = count_params(shape, vocab, base.seq_len)
            rows = batch_rows(n, base.seq_len, lc.rule)
            for budget in lc.budgets:
                steps = max(1, round(budget * n / (rows * base.seq_len)))
                warmup = min(round(lc.rule.warmup_tokens_per_param * n / (rows * base.seq_len)), steps - 1)
                rung = Rung(arm=arm, size=size_label(n), budget=budget, shape=shape, params=n, total_params=total,
                            seq_len=base.seq_len, rows=rows, micro=micro_rows(rows, base.batch_size), steps=steps,
                            warmup_steps=warmup, lr=learning_rate(n, lc.rule), min_lr_ratio=lc.rule.min_lr_ratio,
                            snapshots=snapshots)
                rung.train_config(base)  # refuse now what the trainer would refuse later (e.g. too few steps)
                rungs.append(rung)
    return LadderPlan(tuple(rungs), (lc.target.params, lc.target.tokens), vocab)


__all__ = ["LADDER_PRESET", "LadderPlan", "Rung", "Shape", "batch_rows", "count_params", "learning_rate", "non_embedding", "plan_ladder",
           "shape_at", "shape_for"]
