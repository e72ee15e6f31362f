"""A small, self-contained pretraining job on the bundled corpora.

Real tokenizer (byte-level BPE trained on the bundled text), real documents, the real sampler and
the real loop; only the token stores are held in memory instead of on disk. Used by
bench/ddp_check.py (1 vs N processes), bench/fsdp_profile.py, the training, crash and float8
tests (tests/conftest.py puts bench/ on the path), and as a quick check that a machine trains at all:

    python bench/smoke.py --out /tmp/smoke --steps 20
    torchrun --nproc_per_node 2 bench/smoke.py --out /tmp/smoke2 --steps 20 --global-batch-tokens 4096
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run as a script from a checkout

from codestage.config import TrainConfig  # noqa: E402
from codestage.resources import bundled  # noqa: E402

SOURCES = {"nl_en": "text", "code": "code"}


class ArrayStore:
    """Token ids of whole documents in memory: the two members the sampler reads of a TokenStore."""

    def __init__(self, docs: list[np.ndarray]) -> None:
        self.docs = docs

    @property
    def n_docs(self) -> int:
        return len(self.docs)

    def doc(self, i: int) -> np.ndarray:
        return self.docs[i]


def bundled_texts(name: str, max_docs: int, max_chars: int = 6000) -> list[str]:
    with gzip.open(bundled("corpora", f"{name}.jsonl.gz"), "rt", encoding="utf-8") as fh:
        out = []
        for line in fh:
            out.append(json.loads(line)["text"][:max_chars])
            if len(out) >= max_docs:
                break
    return out


def get_tokenizer(folder: Path, vocab_size: int = 1024):
    """Load the tokenizer in `folder`, training it on the bundled corpora first if it is not there."""
    from codestage.tokenizer import load_tokenizer, train_bpe

    folder = Path(folder)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun rank 0 trains it; the others wait
        deadline = time.time() + 300
        while not (folder / "tokenizer.json").is_file() and time.time() < deadline:
            time.sleep(0.2)
    if not (folder / "tokenizer.json").is_file():
        texts = [t for n in SOURCES for t in bundled_texts(n, 120)]
        train_bpe(texts, vocab_size, folder)
    return load_tokenizer(folder)


def stores(tok: Any, max_docs: int = 48) -> dict[str, ArrayStore]:
    out = {}
    for name in SOURCES:
        docs = []
        for text in bundled_texts(name, max_docs):
            ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            docs.append(np.asarray(ids, dtype=np.uint16))
        out[name] = ArrayStore(docs)
    return out


def job(tok: Any, cfg: TrainConfig, run_dir: Path, *, preset: str = "micro", ratio: str = "2:1",
        on_step: Callable[[int], None] | None = None, progress: bool = False, resume: bool = True):
    """Pretrain a fresh `preset` model (seed = cfg.seed) on text:code = `ratio` for cfg.steps steps."""
    from codestage.mixing import SequenceSampler, preset_schedule
    from codestage.model import build_model, model_config
    from codestage.train.loop import train
    from codestage.train.pretrain import PretrainSource

    model = build_model(model_config(preset, len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id), seed=cfg.seed)
    groups = {g: {n: 1.0} for n, g in SOURCES.items()}
    sampler = SequenceSampler(stores(tok), preset_schedule("constant", ratio=ratio), groups, seq_len=cfg.seq_len, seed=cfg.seed)
    return train(model, tok, PretrainSource(sampler), cfg, run_dir, name=f"smoke {preset}", resume=resume,
                 progress=progress, on_step=on_step)


def losses(run_dir: Path) -> list[tuple[int, float]]:
    """(step, loss) of every line of run_dir/metrics.jsonl."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, filter(str.strip, lines))]


def _args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="run folder (metrics.jsonl, checkpoints, model/)")
    ap.add_argument("--tokenizer", type=Path, default=None, help="tokenizer folder (default: OUT/../smoke-tokenizer)")
    ap.add_argument("--preset", default="micro")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--global-batch-tokens", type=int, default=None)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--parallel", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--compile", default="auto")
    ap.add_argument("--checkpoint-every", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=1)
    ap.add_argument("--no-resume", action="store_true")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--float8", action="store_true", help="float8 matmuls in the blocks (torchao, CUDA 8.9+)")
    return ap.parse_args(argv)


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    return TrainConfig(steps=a.steps, batch_size=a.batch_size, grad_accum=a.grad_accum, seq_len=a.seq_len,
                       global_batch_tokens=a.global_batch_tokens, lr=a.lr, warmup_steps=min(max(1, a.steps // 10), a.steps - 1),
                       parallel=a.parallel, device=a.device, dtype=a.dtype, compile=a.compile,
                       checkpoint_every=a.checkpoint_every, log_every=a.log_every, tensorboard=False, float8=a.float8)


def main(argv: list[str] | None = None) -> None:
    a = _args(argv)
    tok = get_tokenizer(a.tokenizer or a.out.parent / "smoke-tokenizer")
    res = job(tok, config_from_args(a), a.out, preset=a.preset, progress=a.progress, resume=not a.no_resume)
    print(json.dumps({"steps": res.steps, "final_loss": res.final_loss, "tokens": res.tokens, "seconds": round(res.seconds, 2)}))


if __name__ == "__main__":
    main()
