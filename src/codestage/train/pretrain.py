"""Pretraining: packed sequences from token stores, mixed by a schedule, through the shared loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from codestage.config import TrainConfig
from codestage.data.store import TokenStore
from codestage.errors import ConfigError
from codestage.mixing import Schedule, SequenceSampler
from codestage.train.loop import TrainResult, train


class PretrainSource:
    """BatchSource over token stores: every row is `seq_len` tokens of one source; loss on all."""

    fixed_width = True

    def __init__(self, sampler: SequenceSampler) -> None:
        self.sampler = sampler

    def next_batch(self, fraction: float, rows: int) -> dict[str, torch.Tensor]:
        ids = np.stack([self.sampler.sample(fraction)[1] for _ in range(rows)])
        input_ids = torch.from_numpy(ids)
        return {"input_ids": input_ids, "labels": input_ids.clone()}

    def state(self) -> dict[str, Any]:
        return self.sampler.state()

    def load(self, state: dict[str, Any]) -> None:
        self.sampler.load(state)

    def report(self, total_steps: int) -> dict[str, Any]:
        return self.sampler.report(total_steps)

    def tokens_per_source(self) -> dict[str, int]:
        return self.sampler.accounting.totals()


def pretrain(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    stores: Mapping[str, TokenStore],
    groups: Mapping[str, Mapping[str, float]],
    schedule: Schedule,
    cfg: TrainConfig,
    run_dir: Path,
    *,
    name: str,
    progress: bool = True,
) -> TrainResult:
    """Pretrain `model` on a schedule-weighted mixture of `stores`."""
    if model.config.max_position_embeddings < cfg.seq_len:
        raise ConfigError(
            f"pretrain.train.seq_len={cfg.seq_len} exceeds the model's context ({model.config.max_position_embeddings})"
        )
    sampler = SequenceSampler(stores, schedule, groups, seq_len=cfg.seq_len, seed=cfg.seed)
    return train(model, tokenizer, PretrainSource(sampler), cfg, run_dir, name=name, progress=progress)
