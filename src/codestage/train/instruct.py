"""Instruction tuning: a prompt template, loss on response tokens only, schedule-mixed sets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from codestage.config import TrainConfig
from codestage.data.instructions import Example
from codestage.errors import ConfigError
from codestage.mixing import Accounting, DocCursor, MixturePicker, Schedule, mixture_report
from codestage.train.loop import TrainResult, train

TEMPLATES: dict[str, tuple[str, str]] = {
    # (with input, without input); the response follows the prompt directly.
    "alpaca": (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Response:\n",
    ),
    "plain": (
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
        "### Instruction:\n{instruction}\n\n### Response:\n",
    ),
}


def render_prompt(example: Example, template: str) -> str:
    if template not in TEMPLATES:
        raise ConfigError(f"instruct.template: unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")
    with_input, without_input = TEMPLATES[template]
    fmt = with_input if example.input.strip() else without_input
    return fmt.format(instruction=example.instruction, input=example.input)


@dataclass(frozen=True)
class Encoded:
    """Token ids of prompt + response + EOS, and how many leading tokens are prompt (no loss)."""

    ids: tuple[int, ...]
    n_prompt: int


def encode_example(example: Example, tokenizer: PreTrainedTokenizerBase, template: str, max_len: int) -> Encoded:
    """Tokenize; if too long, cut the prompt's start first (keep at least half for the response)."""
    prompt = tokenizer(render_prompt(example, template), add_special_tokens=False)["input_ids"]
    response = tokenizer(example.output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if len(prompt) + len(response) > max_len:
        keep_prompt = max(max_len - len(response), max_len // 2)
        prompt = prompt[-keep_prompt:]
        response = response[: max_len - len(prompt)]
    return Encoded(tuple(prompt + response), len(prompt))


class InstructSource:
    """BatchSource over instruction sets: one example per row, padded to the longest in the batch."""

    fixed_width = False  # padding is trimmed per batch, so widths vary

    def __init__(self, sets: Mapping[str, Sequence[Encoded]], schedule: Schedule,
                 groups: Mapping[str, Mapping[str, float]], *, pad_id: int, seed: int) -> None:
        empty = [n for n, xs in sets.items() if not xs]
        if empty:
            raise ConfigError(f"instruction sets with no examples: {', '.join(empty)}")
        self.sets = {n: list(xs) for n, xs in sets.items()}
        self.schedule, self.groups, self.pad_id = schedule, groups, pad_id
        self.picker = MixturePicker(schedule, groups, list(self.sets))
        self.cursors = {n: DocCursor(n, len(xs), seed) for n, xs in self.sets.items()}
        self.accounting = Accounting()

    def next_batch(self, fraction: float, rows: int) -> dict[str, torch.Tensor]:
        chosen: list[Encoded] = []
        for _ in range(rows):
            name, phase = self.picker.draw(fraction)
            ex = self.sets[name][self.cursors[name].next_index()]
            self.accounting.add(phase, name, len(ex.ids), examples=1)
            chosen.append(ex)
        width = max(len(e.ids) for e in chosen)
        input_ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        labels = torch.full((rows, width), -100, dtype=torch.long)
        attention = torch.zeros((rows, width), dtype=torch.long)
        for r, e in enumerate(chosen):
            ids = torch.tensor(e.ids, dtype=torch.long)
            input_ids[r, : len(ids)] = ids
            labels[r, e.n_prompt : len(ids)] = ids[e.n_prompt :]
            attention[r, : len(ids)] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}

    def epochs(self) -> dict[str, float]:
        return {n: round((c.epoch * c.n_items + c.pos) / c.n_items, 4) for n, c in self.cursors.items()}

    def state(self) -> dict[str, Any]:
        return {"picker": self.picker.state(), "cursors": {n: c.state() for n, c in self.cursors.items()},
                "accounting": self.accounting.state()}

    def load(self, state: dict[str, Any]) -> None:
        self.picker.load(state["picker"])
        for n, c in self.cursors.items():
            c.load(state["cursors"][n])
        self.accounting.load(state["accounting"])

    def report(self, total_steps: int) -> dict[str, Any]:
        return mixture_report(self.schedule, self.groups, self.accounting, self.epochs(),
                              total_steps=total_steps, unit="examples")

    def tokens_per_source(self) -> dict[str, int]:
        return self.accounting.totals()


def instruct_tune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sets: Mapping[str, Sequence[Example]],
    groups: Mapping[str, Mapping[str, float]],
    schedule: Schedule,
    cfg: TrainConfig,
    run_dir: Path,
    *,
    template: str,
    name: str,
    progress: bool = True,
) -> TrainResult:
    """Instruction-tune `model` on schedule-mixed sets, loss on responses only."""
    max_len = min(cfg.seq_len, model.config.max_position_embeddings)
    encoded = {n: [encode_example(e, tokenizer, template, max_len) for e in xs] for n, xs in sets.items()}
    source = InstructSource(encoded, schedule, groups, pad_id=tokenizer.pad_token_id, seed=cfg.seed)
    return train(model, tokenizer, source, cfg, run_dir, name=name, progress=progress)
