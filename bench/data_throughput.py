"""Store-build throughput against the Hugging Face tokenizers' own batch encoding, same texts, same cores.

  python bench/data_throughput.py [--mb 6] [--workers N] [--repeat 3] [--corpora DIR]

Takes the first MB of each shared corpus (--corpora, default ../shared/data/corpora/small beside the
repository or $CODESTAGE_SHARED_DATA/corpora/small: *.jsonl.gz, lines copied unchanged into gzip
files), trains a byte-level BPE tokenizer on them, then times:
  baseline   Tokenizer.encode_batch over all texts already in memory (Rust thread pool, N threads)
  build      codestage.data.build end to end: read gzip, parse, tokenize in N worker processes, write
             the store (tokens, offsets, per-document records, manifest with sha256 of the inputs)
Reported: tokens/s per core (EOS excluded), best of --repeat interleaved runs, and build/baseline.
Heavy imports live inside main() so the spawned workers do not re-import them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import tempfile
import time
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from codestage.resources import SHARED_DATA_ENV, shared_data  # noqa: E402  (light: no torch)


def slice_corpora(corpora: Path, out: Path, mb: float) -> tuple[list[Path], list[str]]:
    """The first mb/3 MB of text of each corpus, lines unchanged; returns the files and the texts."""
    files, texts = [], []
    budget = int(mb * 1_000_000 / 3)
    for src in sorted(corpora.glob("*.jsonl.gz")):
        dst = out / src.name
        used = 0
        with gzip.open(src, "rb") as fi, gzip.open(dst, "wb", compresslevel=6) as fo:
            for line in fi:
                if used >= budget:
                    break
                text = json.loads(line)["text"]
                fo.write(line)
                texts.append(text)
                used += len(text)
        files.append(dst)
    return files, texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=6.0, help="characters of text in total, in millions")
    ap.add_argument("--workers", type=int, default=0, help="cores to use (default: all)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--corpora", type=Path, default=shared_data("corpora", "small"), help="folder of *.jsonl.gz corpora")
    args = ap.parse_args()
    if args.corpora is None or not any(args.corpora.glob("*.jsonl.gz")):
        ap.error(f"no *.jsonl.gz corpora in {args.corpora or '../shared/data/corpora/small'}: pass --corpora or set "
                 f"${SHARED_DATA_ENV}")

    from codestage.data.build import BuildSpec, build, default_workers

    cores = args.workers or default_workers()
    os.environ["RAYON_NUM_THREADS"] = str(cores)  # before the Rust thread pool first starts
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    from codestage.tokenizer import train_bpe

    tmp = Path(tempfile.mkdtemp(prefix="cs-bench-"))
    try:
        files, texts = slice_corpora(args.corpora, tmp, args.mb)
        chars = sum(map(len, texts))
        train_bpe((t[:20000] for t in texts), args.vocab, tmp / "tok")

        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tmp / "tok" / "tokenizer.json"))
        base, runs, n_base, n_build = [], [], 0, 0
        for _ in range(args.repeat):  # interleaved, so load from other jobs hits both alike
            t0 = time.perf_counter()
            enc = tok.encode_batch(texts, add_special_tokens=False)
            base.append(time.perf_counter() - t0)
            n_base = sum(len(e.ids) for e in enc)
            del enc
            out = tmp / "store"
            t0 = time.perf_counter()
            m = build(files, tmp / "tok", out, BuildSpec("bench", workers=cores))
            runs.append(time.perf_counter() - t0)
            n_build = m["tokens"] - m["documents"]
            shutil.rmtree(out)
        assert n_build == n_base, (n_build, n_base)

        b, r = min(base), min(runs)
        result = {
            "cores": cores, "documents": len(texts), "chars": chars, "tokens": n_base, "vocab": args.vocab,
            "baseline_encode_batch_tok_s_per_core": round(n_base / b / cores),
            "build_end_to_end_tok_s_per_core": round(n_build / r / cores),
            "build_over_baseline": round(b / r, 3),
            "baseline_s": [round(x, 3) for x in base], "build_s": [round(x, 3) for x in runs],
            "loadavg_1min_after": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(result, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
