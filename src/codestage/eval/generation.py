"""Evaluate one code-generation task: generate, BLEU against the reference, execute the tests,
and score the reference's bits per byte (a continuous signal for models that cannot pass tests yet).
With `generate=False` only the reference's bits per byte is scored (no BLEU, no pass@k): the
result's `value` is null and `missing` says why."""

from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np

from codestage.eval.metrics import bleu_statistic, bleu_stats, code_tokens, pass_at_k
from codestage.eval.protocols import exemplar_picker, generation_prompt
from codestage.eval.sandbox import Job, Limits, run_many
from codestage.eval.requests import Request
from codestage.eval.scoring import Scorer
from codestage.eval.stats import bootstrap_ci
from codestage.eval.task_loss import aggregate, gold_loss, loss_notes
from codestage.eval.tasks.base import GenerationItem, GenerationTask, Protocol

NOT_GENERATED = "not generated (eval.generate: false): bits per byte of the reference only"
_FENCE = re.compile(r"```[a-zA-Z0-9_+-]*\n?(.*?)(?:```|$)", re.S)


def program_text(output: str) -> str:
    """The code to execute from a generation: the first fenced block if there is one, else all of it."""
    m = _FENCE.search(output)
    return (m.group(1) if m else output).rstrip() + "\n"


def _pct(point_lo_hi: tuple[float, float, float]) -> dict:
    p, lo, hi = point_lo_hi
    return {"value": 100.0 * p, "ci95": [100.0 * lo, 100.0 * hi]}


def evaluate_generation_task(
    task: GenerationTask,
    items: Sequence[GenerationItem],
    all_items: Sequence[GenerationItem],
    scorer: Scorer | None,
    *,
    protocol: Protocol,
    shots: int,
    seed: int,
    max_new_tokens: int,
    execute: bool,
    check_references: bool,
    generate: bool = True,
    samples: int = 1,
    temperature: float = 0.8,
    limits: Limits = Limits(),
    progress: Callable[[int], None] | None = None,
) -> tuple[dict, list[dict]]:
    """(summary fields, item records). With `check_references` the reference solutions stand in for
    model output (a self-test of data and sandbox: clean data passes 100%). Without `generate`
    (and without `check_references`) nothing is generated: only the reference is scored."""
    pick = exemplar_picker(task, all_items, shots, seed)
    prompts = [generation_prompt(task, it, protocol, pick(it)) for it in items]
    if not generate and not check_references:
        if scorer is None:
            raise ValueError("generate=False scores the reference and needs a model")
        records = [{"task": task.name, "doc_id": it.doc_id, "task_id": it.meta.get("task_id"), "gold": it.reference}
                   for it in items]
        summary = {"metric": task.metric, "value": None, "n": len(items), "ci95": None, "missing": NOT_GENERATED,
                   "chance": None, **_reference_loss(prompts, items, records, scorer, seed)}
        return summary, records
    if check_references or scorer is None:
        outputs = [it.reference for it in items]
    else:
        outputs = [o[0] for o in scorer.generate(prompts, max_new_tokens=max_new_tokens, stop=task.stop(protocol), progress=progress)]
    stats = np.array([bleu_stats(code_tokens(o), code_tokens(it.reference)) for o, it in zip(outputs, items)])
    records = [
        {
            "task": task.name,
            "doc_id": it.doc_id,
            "task_id": it.meta.get("task_id"),
            "output": o,
            "prediction": o,
            "gold": it.reference,
            "bleu_stats": row.tolist(),
        }
        for it, o, row in zip(items, outputs, stats)
    ]
    bleu = bootstrap_ci(stats, bleu_statistic, seed=seed)
    summary: dict = {"metric": "bleu", **_pct(bleu), "n": len(items), "chance": None, "bleu_tokenization": "codestage.eval.metrics.code_tokens"}
    summary["check_references"] = check_references
    if execute:
        results = run_many([Job(program_text(o), it.tests, it.test_setup) for o, it in zip(outputs, items)], limits)
        for rec, res in zip(records, results):
            rec.update(passed=res.passed, tests=res.tests, exec_status=res.status, exec_detail=res.detail)
        passed = np.array([r.passed for r in results], dtype=np.float64)
        summary["pass@1"] = _pct(bootstrap_ci(passed, seed=seed))
        summary["exec_status"] = {s: sum(r.status == s for r in results) for s in sorted({r.status for r in results})}
        summary["sandbox"] = {"timeout_s": limits.timeout_s, "memory_mb": limits.memory_mb, "output_bytes": limits.output_bytes}
        if samples > 1 and scorer is not None and not check_references:
            summary["pass@k"] = _sampled_pass_at_k(task, items, prompts, records, scorer, protocol, samples, temperature, seed, max_new_tokens, limits)
    summary.update(_reference_loss(prompts, items, records, scorer, seed) if scorer is not None else {"bits_per_byte": None})
    return summary, records


def _reference_loss(prompts: list[str], items: Sequence[GenerationItem], records: list[dict], scorer: Scorer, seed: int) -> dict:
    """Score each reference program after its prompt: the records get gold_bits/gold_bytes/gold_bpb,
    the summary `bits_per_byte` (and `notes` when some reference was cut to fit the model)."""
    scored = scorer.loglikelihood([[Request(p, it.reference)] for p, it in zip(prompts, items)], truncation="left")
    for rec, ss in zip(records, scored):
        rec.update(gold_loss(ss))
    out: dict = {"bits_per_byte": aggregate(records, seed)}
    if notes := loss_notes(records, len(records)):
        out["notes"] = notes
    return out


def _sampled_pass_at_k(
    task: GenerationTask,
    items: Sequence[GenerationItem],
    prompts: list[str],
    records: list[dict],
    scorer: Scorer,
    protocol: Protocol,
    samples: int,
    temperature: float,
    seed: int,
    max_new_tokens: int,
    limits: Limits,
) -> dict:
    """Unbiased pass@k for k in 1, 5, 10 (up to n samples per item), from n sampled programs per item."""
    sampled = scorer.generate(prompts, max_new_tokens=max_new_tokens, stop=task.stop(protocol), num_samples=samples, temperature=temperature, seed=seed)
    jobs = [Job(program_text(o), it.tests, it.test_setup) for outs, it in zip(sampled, items) for o in outs]
    results = run_many(jobs, limits)
    counts = [sum(r.passed for r in results[i * samples : (i + 1) * samples]) for i in range(len(items))]
    for rec, c in zip(records, counts):
        rec.update(samples=samples, samples_passed=c)
    out = {"n_samples": samples, "temperature": temperature}
    for k in (1, 5, 10):
        if k <= samples:
            per_item = np.array([pass_at_k(samples, c, k) for c in counts])
            out[f"pass@{k}"] = _pct(bootstrap_ci(per_item, seed=seed))
    return out
