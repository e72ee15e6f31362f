"""Held-out language-modelling loss: the continuous signal that separates NL from CODE models long
before reasoning accuracy leaves chance.

Held-out documents (the study passes a source's documents after the ones it trained on) are
concatenated with EOS between them, cut into windows of the model's context, and scored. The
result is in nats per token (depends on the tokenizer) and bits per byte (does not, so models with
different vocabularies compare). Reading the documents is the caller's job: evaluation takes texts.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from codestage.errors import DataError
from codestage.results import HeldoutLoss


def heldout_loss(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    texts: Iterable[str],
    *,
    max_tokens: int = 200_000,
    seq_len: int | None = None,
    batch_size: int = 8,
    origin: str = "the held-out texts",
) -> HeldoutLoss:
    """Mean next-token loss of an already loaded model on held-out texts (module docstring);
    `origin` names where the texts came from in the error raised when there are none."""
    seq_len = seq_len or int(getattr(model.config, "max_position_embeddings", 1024))
    ids: list[int] = []
    n_bytes = 0
    docs_used = 0
    for text in texts:
        if len(ids) >= max_tokens:
            break
        full = tok(text, add_special_tokens=False)["input_ids"]
        piece = full[: max_tokens - len(ids)]
        # bytes of exactly the tokens kept, so bits/byte is over the same text as the loss
        n_bytes += len((text if len(piece) == len(full) else tok.decode(piece)).encode("utf-8"))
        ids.extend(piece + [tok.eos_token_id])
        docs_used += 1
    if docs_used == 0:
        raise DataError(f"held-out loss: no documents left in {origin}")
    windows = [ids[i : i + seq_len] for i in range(0, len(ids) - 1, seq_len)]
    windows = [w for w in windows if len(w) > 1]
    total_nll, total_tokens = 0.0, 0
    dev = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            batch = windows[start : start + batch_size]
            width = max(len(w) for w in batch)
            x = torch.full((len(batch), width), tok.eos_token_id, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            for r, w in enumerate(batch):
                x[r, : len(w)] = torch.tensor(w)
                labels[r, : len(w)] = torch.tensor(w)
            logits = model(input_ids=x.to(dev)).logits.float()
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1).to(dev), ignore_index=-100, reduction="sum"
            )
            total_nll += float(nll)
            total_tokens += int((labels[:, 1:] != -100).sum())
    return HeldoutLoss(nats_per_token=total_nll / total_tokens, bits_per_byte=total_nll / math.log(2) / max(1, n_bytes),
                       tokens=total_tokens, bytes=n_bytes, documents=docs_used, seq_len=seq_len)
