"""Do our per-item log-likelihoods equal lm-evaluation-harness 0.4.x's on the same model and prompts?

Both sides read the same prompts: our tasks are exported as lm-eval task YAMLs
(`codestage.eval.lmeval_export`), lm-eval scores them with its HF backend, and `codestage eval`
scores the same items; every (item, choice) log-likelihood is then compared, for the lm-eval
protocol and for the paper protocol (lm-eval's multiple-input form).

Criterion: |diff| <= 1e-4, or, for large sums, <= 4 float32 ulps of the value. lm-eval sums the
per-token log-probabilities in float32 (we sum in float64), so a 1,700-nat sum over 185 tokens
carries ~1.2e-4 of rounding on lm-eval's side alone (the float32 spacing at 1,700 is 1.2e-4). The
columns ours-fp64 / lmeval-fp64 show each side's largest error against an unbatched float64
forward pass on the first --fp64-items items per task.

lm-eval runs in a separate interpreter: the current one if it imports lm_eval, else a throwaway
venv (default ~/.cache/codestage/lmeval-venv) created with `pip install "lm-eval[hf]>=0.4,<0.5"`; that
venv sees this interpreter's site-packages through a .pth file, so torch is not downloaded twice.

Without --model a seeded random "tiny" model (8K BPE vocabulary trained on the bundled corpora,
context 2048 so nothing is truncated) is built in a temporary directory.

    python bench/eval_lmeval_match.py [--model DIR] [--tasks cosqa,logiqa_en] [--limit 40] [--shots 0]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import site
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from codestage.eval.harness import evaluate, export_lm_eval

DEFAULT_TASKS = "ceval_logic,logiqa_en,logiqa_zh,jecqa_kd,scienceqa,ekar_zh,cosqa"
SRC = Path(__file__).resolve().parents[1] / "src"


def build_model(out: Path, preset: str = "tiny") -> Path:
    """A seeded random model of `preset` with an 8K BPE tokenizer trained on the bundled corpora."""
    from codestage.data.sources import iter_documents, sample_texts
    from codestage.tokenizer import load_tokenizer, train_bpe
    from codestage.model import build_model as build, model_config, save_model
    from codestage.resources import bundled

    texts: list[str] = []
    for name in ("nl_en", "nl_zh", "code"):
        texts += sample_texts(iter_documents([bundled("corpora", f"{name}.jsonl.gz")], name), 300_000)
    train_bpe(texts, vocab_size=8192, out_dir=out / "tokenizer")
    tok = load_tokenizer(out / "tokenizer")
    cfg = model_config(preset, len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, max_position_embeddings=2048)
    save_model(build(cfg, seed=0), tok, out / "model")
    return out / "model"


def lm_eval_python(venv: Path) -> str:
    try:
        import lm_eval  # noqa: F401

        return sys.executable
    except ImportError:
        pass
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        target = subprocess.run([str(py), "-c", "import site; print(site.getsitepackages()[0])"], check=True, capture_output=True, text=True).stdout.strip()
        Path(target, "codestage_parent_site.pth").write_text("\n".join(site.getsitepackages()) + "\n")
        subprocess.run([str(py), "-m", "pip", "install", "-q", "lm-eval[hf]>=0.4,<0.5"], check=True)
    return str(py)


def run_lm_eval(python: str, model: Path, include: Path, tasks: list[str], limit: int, shots: int, batch: int, out: Path,
                dtype: str = "float32") -> dict[str, dict[int, list[float]]]:
    env = {**os.environ, "PYTHONPATH": f"{SRC}:{os.environ.get('PYTHONPATH', '')}", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [
        python, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={model},dtype={dtype}",
        "--device", "cpu", "--batch_size", str(batch), "--include_path", str(include), "--tasks", ",".join(tasks),
        "--limit", str(limit), "--num_fewshot", str(shots), "--log_samples", "--output_path", str(out),
    ]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    found: dict[str, dict[int, list[float]]] = {}
    for path in glob.glob(str(out / "**" / "samples_*.jsonl"), recursive=True):
        task = Path(path).name[len("samples_"):].rsplit("_", 1)[0]
        rows = {}
        for line in open(path, encoding="utf-8"):
            rec = json.loads(line)
            rows[int(rec["doc_id"])] = [float(r[0][0]) for r in rec["resps"]]
        found[task] = rows
    return found


def our_scorer(model: Path, batch: int, dtype: str):
    """One Scorer for both protocols (loading the model and probing it once)."""
    import torch

    from codestage.tokenizer import load_tokenizer
    from codestage.eval.scoring import Scorer
    from codestage.model import load_model

    return Scorer(load_model(model, dtype=getattr(torch, dtype)), load_tokenizer(model), batch_size=batch)


def ours(model: Path, tasks: list[str], limit: int, shots: int, protocol: str, out: Path,
         scorer) -> dict[str, dict[int, list[float]]]:
    evaluate(model, tasks, out, limit=limit, protocol=protocol, shots=shots, scorer=scorer)
    rows: dict[str, dict[int, list[float]]] = {}
    for line in open(out / "items.jsonl", encoding="utf-8"):
        rec = json.loads(line)
        rows.setdefault(rec["task"], {})[rec["doc_id"]] = rec["choice_logprobs"]
    return rows


def self_exemplars(task_name: str, shots: int) -> set[int]:
    """Items that are among their task's own first k exemplars. We skip an item as its own exemplar
    (using exemplar k + 1 instead); lm-eval's first_n sampler does not, so these items differ by design."""
    from codestage.eval.protocols import exemplar_order, exemplar_pool
    from codestage.eval.registry import get_task

    task = get_task(task_name)
    if shots == 0 or task.fewshot_pool() is not None:
        return set()
    items = task.load()
    return {e.doc_id for e in exemplar_order(task, exemplar_pool(task, items), 0)[:shots]}


def float64_reference(model_dir: Path, task_name: str, protocol: str, shots: int, doc_ids: list[int]) -> dict[int, list[float]]:
    """Per-choice log-likelihoods from one unbatched float64 forward pass per request: the ground
    truth both implementations approximate in float32."""
    import torch

    from codestage.tokenizer import load_tokenizer
    from codestage.eval.protocols import choice_requests, exemplar_picker
    from codestage.eval.registry import get_task
    from codestage.eval.scoring import Scorer
    from codestage.model import load_model

    global _FP64
    if "_FP64" not in globals() or _FP64[0] != model_dir:
        model = load_model(model_dir, dtype=torch.float64)
        _FP64 = (model_dir, Scorer(model, load_tokenizer(model_dir), pack=False))
    scorer = _FP64[1]
    task = get_task(task_name)
    items = task.load()
    pick = exemplar_picker(task, items, shots, 0)
    out = {}
    for i in doc_ids:
        lls = []
        for ctx, cont in scorer.encode_pairs(choice_requests(task, items[i], protocol, pick(items[i]))):
            ids = torch.tensor([ctx + cont])
            with torch.no_grad():
                logp = torch.log_softmax(scorer.model(ids).logits[0], dim=-1)
            lls.append(float(sum(logp[len(ctx) + j - 1, t] for j, t in enumerate(cont))))
        out[i] = lls
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--tasks", default=DEFAULT_TASKS)
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--shots", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--fp64-items", type=int, default=5, help="items per task also scored in float64 as ground truth")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                    help="both sides run the model in this dtype; float64 removes float32 rounding, so the "
                         "criterion becomes |diff| <= tolerance for every pair")
    ap.add_argument("--venv", type=Path, default=Path.home() / ".cache" / "codestage" / "lmeval-venv")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="codestage-lmeval-match-"))
    model = args.model or build_model(work / "built")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    include = work / "export"
    export_lm_eval(include, tasks=tasks)
    python = lm_eval_python(args.venv)
    version = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('lm_eval'))"], capture_output=True, text=True).stdout.strip()
    print(f"model {model}\nlm-eval {version} ({python})\ntasks {', '.join(tasks)}; first {args.limit} items; {args.shots}-shot; batch {args.batch_size}")
    worst_abs, worst_ulp, failures = 0.0, 0.0, 0
    scorer = our_scorer(model, args.batch_size, args.dtype)
    for protocol, suffix in (("lm-eval", ""), ("paper", "_paper")):
        names = [f"codestage_{t}{suffix}" for t in tasks]
        theirs = run_lm_eval(python, model, include, names, args.limit, args.shots, args.batch_size, work / f"lmeval{suffix}", args.dtype)
        mine = ours(model, tasks, args.limit, args.shots, protocol, work / f"ours{suffix}", scorer)
        print(f"\nprotocol {protocol}")
        print(f"{'task':<14}{'items':>6}{'choices':>9}{'max |diff|':>12}{'max ulps':>10}{'>1e-4':>7}{'fail':>6}"
              f"{'ours-fp64':>12}{'lmeval-fp64':>12}")
        for t in tasks:
            a, b = mine.get(t, {}), theirs.get(f"codestage_{t}{suffix}", {})
            excluded = self_exemplars(t, args.shots) & set(a)
            ids = sorted((set(a) & set(b)) - excluded)
            pairs = [(x, y) for i in ids for x, y in zip(a[i], b[i], strict=True)]
            if not pairs:
                print(f"{t:<14}{0:>6}  (no items on one side)")
                continue
            diffs = np.array([abs(x - y) for x, y in pairs])
            ulps = diffs / np.array([np.spacing(np.float32(abs(y))) for _, y in pairs], dtype=np.float64)
            fails = int(np.sum(diffs > args.tolerance)) if args.dtype == "float64" else int(np.sum((diffs > args.tolerance) & (ulps > 4)))
            failures += fails
            worst_abs, worst_ulp = max(worst_abs, float(diffs.max())), max(worst_ulp, float(ulps.max()))
            over = int(np.sum(diffs > args.tolerance))
            note = f"  (items {sorted(excluded)} skipped: their own exemplar)" if excluded else ""
            ref = float64_reference(model, t, protocol, args.shots, ids[: args.fp64_items]) if args.dtype == "float32" else {}
            ours_err = max((abs(x - y) for i in ref for x, y in zip(a[i], ref[i])), default=float("nan"))
            their_err = max((abs(x - y) for i in ref for x, y in zip(b[i], ref[i])), default=float("nan"))
            print(f"{t:<14}{len(ids):>6}{len(diffs):>9}{diffs.max():>12.2e}{ulps.max():>10.2f}{over:>7}{fails:>6}"
                  f"{ours_err:>12.1e}{their_err:>12.1e}{note}")
    verdict = "PASS" if failures == 0 else "FAIL"
    print(f"\nworst |diff| {worst_abs:.2e} nats, worst {worst_ulp:.2f} float32 ulps; "
          f"pairs over 1e-4 and over 4 ulps: {failures}: {verdict}")
    sys.exit(0 if verdict == "PASS" else 1)


if __name__ == "__main__":
    main()
