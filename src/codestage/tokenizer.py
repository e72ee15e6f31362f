"""Train a byte-level BPE tokenizer, or load any Hugging Face tokenizer directory.

Both arms of the study share one tokenizer trained on a sample of *all* sources, so a difference
between NL and CODE models is the data, not the vocabulary (the paper's arms differed here).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from codestage.atomic import atomic_dir
from codestage.errors import DataError, ModelPathError

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def train_bpe(
    texts: Iterable[str], vocab_size: int, out_dir: Path, *, min_frequency: int = 2, max_length: int = 2048
) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on `texts` and save it as a HF tokenizer directory (atomically)."""
    if vocab_size < 300:
        raise DataError(f"tokenizer vocab_size must be at least 300 (256 bytes + merges), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    seen = False

    def _nonempty() -> Iterable[str]:
        nonlocal seen
        for t in texts:
            if t:
                seen = True
                yield t

    tok.train_from_iterator(_nonempty(), trainer=trainer)
    if not seen:
        raise DataError("tokenizer training got no text: every source sample was empty")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, model_max_length=max_length)
    with atomic_dir(Path(out_dir)) as tmp:
        fast.save_pretrained(tmp)
    return fast


def load_tokenizer(path: Path | str) -> PreTrainedTokenizerBase:
    """Load a HF tokenizer directory; make sure it has an EOS and a pad token."""
    path = Path(path)
    if not path.is_dir():
        raise ModelPathError(f"{path}: not a directory (expected a Hugging Face tokenizer or model directory)")
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # transformers raises many types for a bad directory
        raise ModelPathError(f"{path}: could not load a tokenizer from it ({type(exc).__name__}: {exc})") from exc
    if tok.eos_token is None:
        raise ModelPathError(f"{path}: tokenizer has no EOS token; set eos_token in its tokenizer_config.json")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tokenizer_hash(tok: PreTrainedTokenizerBase) -> str:
    """A content hash of the vocabulary and rules, so stores record which tokenizer made them."""
    backend = getattr(tok, "backend_tokenizer", None)
    blob = backend.to_str() if backend is not None else repr(sorted(tok.get_vocab().items()))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
