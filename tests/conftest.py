"""Shared fixtures: a real byte-level BPE tokenizer trained on the bundled corpora and a micro model.

Both are real objects (no mocks): the tokenizer is trained by `codestage.tokenizer`, the model
is a randomly initialised Llama-style HF model saved as a normal HF directory. bench/ goes on the
path: the tests drive its helpers (the smoke training job, the GPT-2 peer) as they are.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from codestage.data.sources import iter_documents, sample_texts
from codestage.tokenizer import load_tokenizer, train_bpe
from codestage.model import build_model, model_config, save_model
from codestage.resources import bundled


def _corpus_sample(chars_per_source: int) -> list[str]:
    texts: list[str] = []
    for name in ("nl_en", "nl_zh", "code"):
        docs = iter_documents([bundled("corpora", f"{name}.jsonl.gz")], name)
        texts.extend(sample_texts(docs, chars_per_source))
    return texts


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_bpe(_corpus_sample(150_000), vocab_size=1024, out_dir=out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir: Path):
    return load_tokenizer(tokenizer_dir)


def save_micro_model(out: Path, tokenizer, seed: int) -> Path:
    """A randomly initialised micro Llama with `tokenizer`, saved as a HF directory at `out`."""
    cfg = model_config("micro", len(tokenizer), eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    save_model(build_model(cfg, seed=seed), tokenizer, out)
    return out


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    """A randomly initialised micro Llama (seed 0) with the fixture tokenizer, as a HF directory."""
    return save_micro_model(tmp_path_factory.mktemp("model") / "micro", tokenizer, seed=0)


@pytest.fixture(scope="session")
def bundled_data() -> Path:
    return bundled()




@pytest.fixture(scope="session")
def triton_interpreted() -> Callable[[str, Any, Path], Any]:
    """run(code, inputs, folder): `code` in a child Python under TRITON_INTERPRET=1, which must be set
    before Triton is first imported (Triton kernels then run on CPU tensors). The child loads the
    inputs from sys.argv[1] and saves its outputs to sys.argv[2]; run returns those outputs."""

    def run(code: str, inputs: Any, folder: Path) -> Any:
        torch.save(inputs, folder / "in.pt")
        env = dict(os.environ, TRITON_INTERPRET="1")
        subprocess.run([sys.executable, "-c", code, str(folder / "in.pt"), str(folder / "out.pt")], env=env, check=True,
                       timeout=300)
        return torch.load(folder / "out.pt", weights_only=False)

    return run


@pytest.fixture
def cli_run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> Callable[..., tuple[int, str]]:
    """cli_run(*args): `codestage ARGS` in this process -> (exit status, its stdout and stderr with
    whitespace runs joined, so messages rich wrapped at the terminal width read as one line)."""
    from codestage import cli

    def run(*args: Any) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["codestage", *map(str, args)])
        with pytest.raises(SystemExit) as exc:
            cli.main()
        captured = capsys.readouterr()
        return int(exc.value.code or 0), " ".join((captured.err + captured.out).split())

    return run
