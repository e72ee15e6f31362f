"""Held-out language-modelling loss: the continuous signal that separates NL from CODE models long
before reasoning accuracy leaves chance.

Documents of a source after its first `skip` (the ones a study left out of training with
`max_docs`) are concatenated with EOS between them, cut into windows of the model's context, and
scored. The result is in nats per token (depends on the tokenizer) and bits per byte (does not, so
models with different vocabularies compare).
"""

from __future__ import annotations

import itertools
import math

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from codestage.data.sources import expand_paths, iter_documents
from codestage.errors import DataError


def heldout_loss(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    paths: list[str],
    *,
    skip_docs: int = 0,
    max_tokens: int = 200_000,
    seq_len: int | None = None,
    batch_size: int = 8,
    text_field: str = "text",
) -> dict:
    """Mean next-token loss of an already loaded model on held-out documents (module docstring)."""
    seq_len = seq_len or int(getattr(model.config, "max_position_embeddings", 1024))
    files = expand_paths(paths)
    ids: list[int] = []
    n_bytes = 0
    docs_used = 0
    for doc in itertools.islice(iter_documents(files, "heldout", text_field=text_field), skip_docs, None):
        if len(ids) >= max_tokens:
            break
        full = tok(doc.text, add_special_tokens=False)["input_ids"]
        piece = full[: max_tokens - len(ids)]
        # bytes of exactly the tokens kept, so bits/byte is over the same text as the loss
        n_bytes += len((doc.text if len(piece) == len(full) else tok.decode(piece)).encode("utf-8"))
        ids.extend(piece + [tok.eos_token_id])
        docs_used += 1
    if docs_used == 0:
        raise DataError(f"held-out loss: no documents left after skipping {skip_docs} in {', '.join(map(str, files))}")
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
    return {
        "nats_per_token": total_nll / total_tokens,
        "bits_per_byte": total_nll / math.log(2) / max(1, n_bytes),
        "tokens": total_tokens,
        "bytes": n_bytes,
        "documents": docs_used,
        "skip_docs": skip_docs,
        "files": [str(f) for f in files],
        "seq_len": seq_len,
    }
