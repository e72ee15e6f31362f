"""Rebuild the small data slice shipped inside the package (src/codestage/resources/data).

Seeded and deterministic: run from the repo root with the staged data beside it:
    python scripts/make_bundle.py ../shared/data
Upstream formats are kept unchanged, so the same loaders read the slice and a user's full copy.
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
import sys
from pathlib import Path

DEST = Path("src/codestage/resources/data")
SEED = 20240101
CHAR_BUDGET = {"nl_en": 2_000_000, "code": 2_000_000, "nl_zh": 500_000}
MAX_DOC_CHARS = 20_000


def _cut(text: str, limit: int) -> tuple[str, bool]:
    """Cut a long document at a paragraph (or line) boundary below `limit` characters."""
    if len(text) <= limit:
        return text, False
    cut = text.rfind("\n\n", 0, limit)
    if cut < limit // 2:
        cut = text.rfind("\n", 0, limit)
    if cut < limit // 2:
        cut = limit
    return text[:cut], True


def slice_corpus(src: Path, dst: Path, budget: int) -> None:
    with gzip.open(src, "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    random.Random(SEED).shuffle(docs)
    out, used = [], 0
    for doc in docs:
        if used >= budget:
            break
        text, truncated = _cut(doc["text"], MAX_DOC_CHARS)
        if truncated:
            doc = {**doc, "text": text, "meta": {**doc.get("meta", {}), "truncated": True}}
        out.append(doc)
        used += len(text)
    dst.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the gzip bytes identical across rebuilds.
    with open(dst, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        for doc in out:
            gz.write((json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8"))
    print(f"{dst}: {len(out)} docs, {used:,} chars")


def copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def slice_scienceqa(src: Path, dst: Path) -> None:
    """Keep every test problem present in the partial file plus 40 train problems for few-shot."""
    problems = json.loads((src / "problems.json").read_text(encoding="utf-8"))
    splits = json.loads((src / "pid_splits.json").read_text(encoding="utf-8"))
    test = [p for p in splits["test"] if p in problems]
    train = [p for p in splits["train"] if p in problems and problems[p]["image"] is None][:40]
    keep = set(test) | set(train)
    dst.mkdir(parents=True, exist_ok=True)
    sliced = {pid: problems[pid] for pid in problems if pid in keep}
    (dst / "problems.json").write_text(json.dumps(sliced, ensure_ascii=False), encoding="utf-8")
    (dst / "pid_splits.json").write_text(json.dumps({"train": train, "test": test}), encoding="utf-8")
    print(f"{dst}: {len(test)} test + {len(train)} train problems")


def _seeded_lines(path: Path, k: int, salt: str) -> list[str]:
    """A seeded k of a JSON-lines file's records, each line byte for byte, in file order."""
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines(keepends=True) if ln.strip()]
    keep = sorted(random.Random(f"{SEED}:{salt}").sample(range(len(lines)), k))
    return [lines[i] for i in keep]


EKAR_VALIDATION, EKAR_TRAIN = 100, 40


def slice_ekar(src: Path, dst: Path) -> None:
    """100 of the 165 validation records (the labelled split the demo evaluates) and 40 train records
    (k-shot exemplars). The test split is blind in this release, so nothing test-like is bundled."""
    dst.mkdir(parents=True, exist_ok=True)
    for name, k in (("validation.json", EKAR_VALIDATION), ("train.json", EKAR_TRAIN)):
        (dst / name).write_text("".join(_seeded_lines(src / name, k, name)), encoding="utf-8")
    upstream = (src / "SOURCE.md").read_text(encoding="utf-8")
    (dst / "SOURCE.md").write_text(
        "# E-KAR Chinese: bundled slice\n\n"
        f"A seeded slice (seed {SEED}, `scripts/make_bundle.py`) of the staged E-KAR Chinese v1.0 files:\n"
        f"`validation.json` holds {EKAR_VALIDATION} of the 165 validation records and `train.json` {EKAR_TRAIN} of\n"
        "the 1155 train records (few-shot exemplars), each line unchanged, in file order. No test data\n"
        "(the release's test files are blind), so `ekar_zh` evaluates this validation slice.\n\n"
        "Licence: Academic Free License 3.0 (afl-3.0), as declared on the dataset card of the Hugging Face\n"
        "dataset jiangjiechen/ekar_chinese. Chen et al., \"E-KAR: A Benchmark for Rationalizing Natural\n"
        "Language Analogical Reasoning\", Findings of ACL 2022.\n\n"
        "The staged copy's notice follows (its file table describes the full staged files).\n\n"
        + "\n".join("> " + ln if ln else ">" for ln in upstream.splitlines()) + "\n",
        encoding="utf-8",
    )
    print(f"{dst}: {EKAR_VALIDATION} validation + {EKAR_TRAIN} train records")


def main(root: Path) -> None:
    if DEST.exists():
        shutil.rmtree(DEST)
    corpora = root / "corpora"
    for name, budget in CHAR_BUDGET.items():
        slice_corpus(corpora / "small" / f"{name}_small.jsonl.gz", DEST / "corpora" / f"{name}.jsonl.gz", budget)
    copy(corpora / "SOURCES.md", DEST / "corpora" / "SOURCES.md")

    ins = root / "instruct"
    for rel in [
        "alpaca_en/alpaca_en_demo.json", "alpaca_en/SOURCE.md",
        "alpaca_zh/alpaca_zh_demo.json", "alpaca_zh/SOURCE.md",
        "code_alpaca/code_alpaca_2k.json", "code_alpaca/SOURCE.md", "code_alpaca/DATA_LICENSE",
    ]:
        copy(ins / rel, DEST / "instruct" / rel)

    ev = root / "eval"
    for rel in [
        "ceval_logic/logic_val.csv", "ceval_logic/logic_dev.csv", "ceval_logic/SOURCE.md",
        "logiqa/logiqa-en.jsonl", "logiqa/logiqa-zh.jsonl", "logiqa/SOURCE.md", "logiqa/AGIEval-data-LICENSE.txt",
        "jecqa/jec-qa-kd.jsonl", "jecqa/SOURCE.md", "jecqa/AGIEval-data-LICENSE.txt",
        "cosqa/cosqa-dev.json", "cosqa/SOURCE.md",
        "mbpp/mbpp.jsonl", "mbpp/sanitized-mbpp-427.jsonl", "mbpp/SOURCE.md",
        "scienceqa/SOURCE.md", "scienceqa/LICENSE-DATA",
    ]:
        copy(ev / rel, DEST / "eval" / rel)
    slice_scienceqa(ev / "scienceqa", DEST / "eval" / "scienceqa")
    slice_ekar(ev / "ekar_chinese", DEST / "eval" / "ekar_chinese")
    copy(root.parent / "paper" / "reported_results.json", DEST / "paper" / "reported_results.json")
    (DEST / "README.md").write_text(
        "# Bundled data slice\n\n"
        "A small seeded slice of the staged data, for the demo and the tests; rebuilt by\n"
        "`scripts/make_bundle.py`. Formats are the upstream ones. Each folder keeps its SOURCE.md /\n"
        "licence notice; `corpora/SOURCES.md` is the attribution notice for the corpus slices\n"
        "(documents keep `meta.license`). Long documents are cut at a paragraph boundary\n"
        f"({MAX_DOC_CHARS:,} characters; `meta.truncated`). ScienceQA: the test problems of the\n"
        "partial upstream file and 40 text-only train problems for few-shot exemplars. E-KAR Chinese:\n"
        f"a seeded {EKAR_VALIDATION} of the 165 validation records and {EKAR_TRAIN} train records for exemplars\n"
        "(licence AFL-3.0, see `eval/ekar_chinese/SOURCE.md`); its test split is blind in the staged\n"
        "release and is not bundled, so the demo's analogical cells are on validation.\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"))
