"""Generation for any HF causal LM: left-padded batches, greedy or seeded sampling, cut at stop strings."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList


@torch.inference_mode()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    batch_size: int,
    max_length: int,
    prefix_token_id: int,
    max_new_tokens: int = 128,
    stop: Sequence[str] = (),
    num_samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 0.95,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[list[str]]:
    """Continuations per prompt (greedy when temperature == 0), cut at the first stop sequence.
    Prompts keep their last `max_length - max_new_tokens` tokens; a batch holds `batch_size` sequences."""
    if not prompts:
        return []
    device = next(model.parameters()).device
    max_prompt = max(1, max_length - max_new_tokens)
    encoded = [ids[-max_prompt:] or [prefix_token_id] for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    sample = temperature > 0
    num_samples = num_samples if sample else 1
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    options = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if sample else dict(do_sample=False)
    cfg = GenerationConfig(
        max_new_tokens=max_new_tokens,
        num_return_sequences=num_samples,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad_id,
        **options,
    )
    results: list[list[str]] = [[] for _ in prompts]
    step = max(1, batch_size // max(1, num_samples))
    for b, start in enumerate(range(0, len(order), step)):
        idx = order[start : start + step]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), cfg.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):  # left padding: every prompt ends at the same column
            ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
            attn[row, width - len(encoded[i]):] = 1
        if sample:
            torch.manual_seed(seed * 1_000_003 + b)
        criteria = StoppingCriteriaList([_StopOnText(tokenizer, width, list(stop), len(idx) * num_samples)]) if stop else None
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=attn.to(device),
            generation_config=cfg,
            stopping_criteria=criteria,
        )
        texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        for row, i in enumerate(idx):
            results[i] = [cut_at_stop(t, stop) for t in texts[row * num_samples : (row + 1) * num_samples]]
        if progress:
            progress(len(idx))
    return results


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to the earliest stop sequence."""
    cut = len(text)
    for s in stop:
        at = text.find(s)
        if at != -1:
            cut = min(cut, at)
    return text[:cut]


class _StopOnText(StoppingCriteria):
    """Per-row stop once any stop string appears in that row's generated text."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_width: int, stop: list[str], rows: int) -> None:
        self.tokenizer, self.width, self.stop = tokenizer, prompt_width, stop
        self.done = torch.zeros(rows, dtype=torch.bool)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None = None, **kwargs) -> torch.BoolTensor:
        todo = (~self.done).nonzero().flatten().tolist()
        if todo:
            texts = self.tokenizer.batch_decode(input_ids[todo, self.width:], skip_special_tokens=True)
            for row, text in zip(todo, texts):
                if any(s in text for s in self.stop):
                    self.done[row] = True
        return self.done.to(input_ids.device).clone()
