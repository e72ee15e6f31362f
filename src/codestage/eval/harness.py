"""The evaluation entry points the CLI and the study runner call: evaluate, compare, export, list.

`evaluate` loads a model once, runs every requested task (missing data -> a null cell with the
reason), and writes `results.json` (an `EvalResults`: per task a `TaskResult` with metric, value in
percent, n, 95% interval, protocol, shots, data hashes, subsample) and `items.jsonl` (one line per
item) atomically.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Sequence

import torch

from codestage.atomic import write_json, write_text
from codestage.errors import ConfigError
from codestage.model import cuda_peak_gib, reset_cuda_peak
from codestage.eval.compare import compare
from codestage.eval.generation import evaluate_generation_task
from codestage.eval.identity import with_identity
from codestage.eval.lmeval_export import export_lm_eval
from codestage.eval.multiple_choice import evaluate_choice_task
from codestage.eval.protocols import check_protocol
from codestage.eval.registry import DOMAIN_DEFAULT, TASKS, get_task, resolve_tasks
from codestage.eval.sandbox import Limits
from codestage.eval.scoring import Scorer
from codestage.eval.tasks.base import GenerationTask, Item, MultipleChoiceTask, Task, TaskDataMissing, split_note
from codestage.hashing import sha256_json, sha256_file
from codestage.outputs import EVAL, check_output
from codestage.relpaths import recorded
from codestage.results import EvalResults, TaskResult

__all__ = ["evaluate", "compare", "export_lm_eval", "list_tasks", "load_scorer"]


def list_tasks(data_dir: Path | str | None = None) -> list[dict]:
    """One row per task: name, domain, kind, metric, language, the split its data under `data_dir`
    (bundled data by default) would give with its n, the paper's split and n, and whether the data
    is present (`missing` says why not). Each task's data is read to find its split."""
    rows = []
    for name, cls in TASKS.items():
        task = cls(Path(data_dir) if data_dir is not None else None)
        try:
            n: int | None = len(task.load())
        except TaskDataMissing as exc:
            n, missing = None, str(exc)
        split = task.split
        rows.append(
            {
                "name": name,
                "domain": cls.domain,
                "domain_default": DOMAIN_DEFAULT.get(cls.domain) == name,
                "kind": cls.kind,
                "metric": cls.metric,
                "language": cls.language,
                "split": split.label if split else None,
                "n": n,
                "split_note": split_note(split, n, n, cls.paper_split, cls.paper_n) if split and n is not None else None,
                "paper_split": cls.paper_split,
                "paper_n": cls.paper_n,
                "description": cls.description,
                "data_present": n is not None,
                **({"missing": missing} if n is None else {}),
            }
        )
    return rows


def load_scorer(model_dir: Path | str, *, device: str = "auto", batch_size: int = 16) -> Scorer:
    """Model + tokenizer from a HF directory, bf16 on CUDA (when supported), float32 otherwise."""
    from codestage.tokenizer import load_tokenizer
    from codestage.model import check_model_dir, load_model, resolve_device

    path = check_model_dir(model_dir)
    dev = resolve_device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    tokenizer = load_tokenizer(path)
    model = load_model(path, device=dev, dtype=dtype)
    return Scorer(model, tokenizer, batch_size=batch_size)


def _select(items: list[Item], limit: int | None, sample: int | None, seed: int) -> tuple[list[Item], dict | None]:
    for name, value in (("limit", limit), ("sample", sample)):
        if value is not None and value < 1:
            raise ConfigError(f"{name}: must be a positive number of items, got {value}")
    chosen = items[:limit] if limit is not None else items
    if sample is not None and sample < len(chosen):
        keep = sorted(random.Random(seed).sample(range(len(chosen)), sample))
        return [chosen[i] for i in keep], {"n": sample, "of": len(chosen), "seed": seed}
    return chosen, None


def _provenance(task: Task) -> dict:
    files = {}
    for path in task.files():
        if path.is_file():
            files[f"{path.parent.name}/{path.name}"] = sha256_file(path)
    return {"files": files, "data_sha256": sha256_json(files)}


def _missing(task: Task, reason: str, protocol: str, shots: int) -> TaskResult:
    return TaskResult(task=task.name, domain=task.domain, metric=task.metric, value=None, n=0, ci95=None,
                      protocol=protocol, shots=shots, paper_split=task.paper_split, paper_n=task.paper_n, missing=reason)


def evaluate(
    model_dir: Path | str | None,
    tasks: list[str],
    out_dir: Path | str,
    *,
    data_dir: Path | str | None = None,
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
    protocol: str = "paper",
    shots: int = 0,
    batch_size: int = 16,
    device: str = "auto",
    max_new_tokens: int = 128,
    execute: bool = True,
    generate: bool = True,
    check_references: bool = False,
    samples: int = 1,
    temperature: float = 0.8,
    timeout_s: float = 10.0,
    scorer: Scorer | None = None,
    progress: bool = False,
    lenient: bool = False,
) -> EvalResults:
    """Evaluate a HF causal-LM directory on tasks (task or domain names); write and return results.

    `limit` keeps the first N items, `sample` a seeded random N of them (recorded in the result);
    `samples` > 1 adds sampled pass@k for generation tasks. Without `generate`, generation tasks
    score only the reference's bits per byte (no BLEU or pass@k; `value` null, `missing` says why).
    A pre-built `scorer` may be passed to reuse a loaded model. With `check_references` (and only
    generation tasks) no model is needed.
    Duplicate records in a task file are an error, or with `lenient` scored once and noted.
    """
    proto = check_protocol(protocol)
    names = resolve_tasks(list(tasks))
    out = check_output(out_dir, EVAL, inputs=[model_dir, data_dir])
    instances = [get_task(n, data_dir) for n in names]
    needs_model = any(isinstance(t, MultipleChoiceTask) for t in instances) or not check_references
    reset_cuda_peak()
    if scorer is None and needs_model:
        if model_dir is None:
            raise ConfigError("model: a model directory is needed (only --check-references on code tasks runs without one)")
        scorer = load_scorer(model_dir, device=device, batch_size=batch_size)
    limits = Limits(timeout_s=timeout_s)
    # relative to `out`, so the folder can move with what it names (codestage.relpaths)
    results = EvalResults(model=recorded(model_dir, out) if model_dir is not None else None, protocol=proto, shots=shots,
                          seed=seed, data_dir=recorded(data_dir, out) if data_dir is not None else "bundled", lenient=lenient,
                          tasks={})
    lines: list[str] = []
    for task in instances:
        started = time.perf_counter()
        try:
            all_items = task.load_items(lenient=lenient)
        except TaskDataMissing as exc:
            results.tasks[task.name] = _missing(task, str(exc), proto, shots)
            continue
        items, subsample = _select(all_items, limit, sample, seed)
        bar = _Progress(task.name, len(items)) if progress else None
        if isinstance(task, MultipleChoiceTask):
            summary, records = evaluate_choice_task(
                task, items, all_items, scorer, protocol=proto, shots=shots, seed=seed, progress=bar.advance if bar else None
            )
        else:
            assert isinstance(task, GenerationTask)
            summary, records = evaluate_generation_task(
                task, items, all_items, scorer, protocol=proto, shots=shots, seed=seed, max_new_tokens=max_new_tokens,
                execute=execute or check_references, check_references=check_references, generate=generate, samples=samples,
                temperature=temperature, limits=limits, progress=bar.advance if bar else None,
            )
        if bar:
            bar.close()
        split = task.split
        assert split is not None  # set by load()
        task_notes = list(getattr(task, "notes", [])) + summary.pop("notes", [])
        results.tasks[task.name] = TaskResult.from_json({
            "task": task.name,
            "domain": task.domain,
            **summary,
            "protocol": proto,
            "shots": shots,
            "split": split.label,
            "split_source": split.source,
            "split_n": len(all_items),
            "paper_split": task.paper_split,
            "paper_n": task.paper_n,
            "split_note": split_note(split, summary["n"], len(all_items), task.paper_split, task.paper_n),
            "limit": limit,
            "subsample": subsample,
            **_provenance(task),
            "notes": task_notes,
            "seconds": round(time.perf_counter() - started, 3),
        })
        lines.extend(json.dumps({**r, "split": split.label}, ensure_ascii=False) for r in with_identity(records, items))
    peak = cuda_peak_gib()
    if peak is not None:
        results.peak_memory_gib = peak
    write_text(out / "items.jsonl", "".join(line + "\n" for line in lines))
    write_json(out / "results.json", results.to_json())
    return results


class _Progress:
    """A transient rich progress bar for one task (counts requests scored or items generated)."""

    def __init__(self, name: str, total: int) -> None:
        from rich.progress import Progress

        self._p = Progress(transient=True)
        self._p.start()
        self._task = self._p.add_task(f"{name} ({total} items)", total=None)

    def advance(self, n: int) -> None:
        self._p.advance(self._task, n)

    def close(self) -> None:
        self._p.stop()


def summary_rows(results: EvalResults) -> Sequence[tuple[str, str, str, str, str]]:
    """(task, value, ci95, bits per byte [95% CI], split and n) strings for a one-screen summary."""
    rows = []
    for name, r in results.tasks.items():
        bpb = r.bits_per_byte
        bpb_txt = "—" if bpb is None or bpb.value is None else f"{bpb.value:.4f} [{bpb.ci95[0]:.4f}, {bpb.ci95[1]:.4f}]"
        if r.value is None:
            rows.append((name, "—", r.missing or "", bpb_txt, r.split_note or str(r.n)))
        else:
            lo, hi = r.ci95
            rows.append((name, f"{r.value:.2f} {r.metric}", f"[{lo:.2f}, {hi:.2f}]", bpb_txt, r.split_note or str(r.n)))
    return rows
