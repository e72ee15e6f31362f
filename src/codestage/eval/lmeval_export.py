"""Write our tasks as lm-evaluation-harness (0.4.x) task YAMLs, so users can run them there too.

For each task whose data is present, the export holds the rendered documents (`data/*.jsonl`,
read by lm-eval through `dataset_path: json`) and two task files:
  codestage_<task>        the lm-eval protocol: question as context, choice texts as continuations
                          (`acc`, `acc_norm`); MBPP as `generate_until` with our BLEU and pass@1.
  codestage_<task>_paper  the paper protocol: each choice's context (candidate inside) scores the
                          shared evidence (lm-eval's multiple-input form, as Winogrande), or, for
                          E-KAR, the candidates after a shared context. lm-eval ranks by summed
                          log-likelihood; our paper protocol ranks by the mean per token, so the
                          per-item log-likelihoods agree while `acc` may differ on a few items.
Each task exports the split `codestage eval` evaluates on the same data (E-KAR: test when test.json
carries its answers, else validation); the YAML's first line and the README name it with its n.
Exemplars for `--num_fewshot k` are the `fewshot` split in our seeded order (sampler first_n), i.e.
the same k exemplars `codestage eval --shots k` uses. JEC-QA uses `utils.process_results_exact_set`
(correct iff the predicted set equals the gold set); MBPP's metrics import codestage, so install
codestage in the lm-eval environment for them.
"""

from __future__ import annotations

import json
from pathlib import Path

from codestage.atomic import write_text
from codestage.outputs import LMEVAL, LMEVAL_README_HEAD, check_output
from codestage.eval.protocols import choice_requests, exemplar_order, exemplar_pool, generation_prompt
from codestage.eval.registry import TASKS, resolve_tasks
from codestage.eval.tasks.base import ChoiceItem, GenerationTask, MultipleChoiceTask, Task, TaskDataMissing, split_note

UTILS = '''"""Helpers for the codestage task YAMLs (written by `codestage tasks export-lm-eval`)."""

import numpy as np


def process_results_exact_set(doc, results):
    """Correct iff the predicted option set equals the gold set (one prediction: single-answer items only)."""
    lls = np.array([r[0] for r in results], dtype=float)
    lengths = np.array([float(len(c)) for c in doc["choices"]]) if "choices" in doc else np.ones(len(lls))
    gold = list(doc["gold_set"])
    pred, pred_norm = int(np.argmax(lls)), int(np.argmax(lls / lengths))
    return {"acc": float(gold == [pred]), "acc_norm": float(gold == [pred_norm])}


def process_results_mbpp(doc, results):
    """Per item: BLEU sufficient statistics on codestage's code tokenization, and pass@1 in its sandbox."""
    from codestage.eval.generation import program_text
    from codestage.eval.metrics import bleu_stats, code_tokens
    from codestage.eval.sandbox import Job, run_program

    out = results[0]
    stats = bleu_stats(code_tokens(out), code_tokens(doc["reference"])).tolist()
    passed = run_program(Job(program_text(out), tuple(doc["tests"]), doc["setup"])).passed
    return {"bleu": stats, "pass_at_1": float(passed)}


def bleu_corpus(items):
    """Smoothed corpus BLEU-4 x 100 from summed per-item statistics (CodeXGLUE's compute_bleu)."""
    from codestage.eval.metrics import bleu_from_stats

    return 100.0 * float(bleu_from_stats(np.sum(np.array(items, dtype=float), axis=0)))
'''


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid YAML scalar


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _yaml(name: str, data: Path, fewshot: Path, lines: list[str], note: str) -> str:
    head = [
        f"# split: {note}",
        f"task: {name}",
        "tag:\n  - codestage",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {_q(str(data))}",
        f"    fewshot: {_q(str(fewshot))}",
        "test_split: test",
        "fewshot_split: fewshot",
        "fewshot_config:\n  sampler: first_n",
    ]
    return "\n".join(head + lines + ["metadata:\n  version: 1.0", ""])


def _gold_fields(item: ChoiceItem) -> dict:
    return {"gold": item.gold[0] if len(item.gold) == 1 else -1, "gold_set": list(item.gold)}


def _choice_metrics(task: MultipleChoiceTask) -> list[str]:
    lines = ["metric_list:", "  - metric: acc\n    aggregation: mean\n    higher_is_better: true",
             "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true"]
    if task.name == "jecqa_kd":
        lines.insert(0, "process_results: !function utils.process_results_exact_set")
    return lines


def _export_choice(task: MultipleChoiceTask, items: list[ChoiceItem], pool: list, out: Path, note: str) -> list[Path]:
    written = []
    # lm-eval protocol
    docs = [{"doc_id": it.doc_id, "query": task.lmeval_query(it), "choices": task.lmeval_choices(it), **_gold_fields(it)} for it in items]
    shots = [{"doc_id": -1, "query": task.lmeval_query(e), "choices": task.lmeval_choices(e), **_gold_fields(e)} for e in pool]
    data, few = out / "data" / f"{task.name}.jsonl", out / "data" / f"{task.name}.fewshot.jsonl"
    write_text(data, _jsonl(docs))
    write_text(few, _jsonl(shots))
    lines = [
        "output_type: multiple_choice",
        "doc_to_text: query",
        "doc_to_choice: choices",
        "doc_to_target: gold",
        f"target_delimiter: {_q(task.target_delimiter)}",
        f"fewshot_delimiter: {_q(chr(10) * 2)}",
        *_choice_metrics(task),
    ]
    path = out / f"codestage_{task.name}.yaml"
    write_text(path, _yaml(f"codestage_{task.name}", data, few, lines, note))
    written.append(path)

    # paper protocol: shared evidence -> multiple-input form; shared context -> plain form
    def paper_doc(it: ChoiceItem, doc_id: int) -> dict:
        reqs = choice_requests(task, it, "paper", [])
        spans = {r.continuation for r in reqs}
        if len(spans) == 1:
            return {"doc_id": doc_id, "contexts": [r.context for r in reqs], "span": reqs[0].continuation, **_gold_fields(it)}
        return {"doc_id": doc_id, "query": reqs[0].context, "choices": [r.continuation for r in reqs], **_gold_fields(it)}

    pdocs = [paper_doc(it, it.doc_id) for it in items]
    pshots = [paper_doc(e, -1) for e in pool]
    multiple_input = all("contexts" in d for d in pdocs + pshots)
    if not multiple_input and not all("query" in d for d in pdocs + pshots):
        return written
    data, few = out / "data" / f"{task.name}_paper.jsonl", out / "data" / f"{task.name}_paper.fewshot.jsonl"
    write_text(data, _jsonl(pdocs))
    write_text(few, _jsonl(pshots))
    form = ["doc_to_text: gold", "doc_to_choice: contexts", "doc_to_target: span"] if multiple_input else [
        "doc_to_text: query", "doc_to_choice: choices", "doc_to_target: gold"]
    lines = ["output_type: multiple_choice", *form, 'target_delimiter: ""', f"fewshot_delimiter: {_q(chr(10))}", *_choice_metrics(task)]
    path = out / f"codestage_{task.name}_paper.yaml"
    write_text(path, _yaml(f"codestage_{task.name}_paper", data, few, lines, note))
    written.append(path)
    return written


def _export_generation(task: GenerationTask, items: list, pool: list, out: Path, note: str) -> list[Path]:
    written = []
    for protocol, suffix in (("lm-eval", ""), ("paper", "_paper")):
        def doc(it, doc_id: int) -> dict:
            return {"doc_id": doc_id, "task_id": it.meta.get("task_id"), "prompt": generation_prompt(task, it, protocol, []),
                    "target": task.target(it, protocol), "reference": it.reference, "tests": list(it.tests), "setup": it.test_setup}

        data, few = out / "data" / f"{task.name}{suffix}.jsonl", out / "data" / f"{task.name}{suffix}.fewshot.jsonl"
        write_text(data, _jsonl([doc(it, it.doc_id) for it in items]))
        write_text(few, _jsonl([doc(e, -1) for e in pool]))
        until = "\n".join(f"    - {_q(s)}" for s in task.stop(protocol))
        lines = [
            "output_type: generate_until",
            "doc_to_text: prompt",
            "doc_to_target: target",
            'target_delimiter: ""',
            f"fewshot_delimiter: {_q(chr(10) * 2)}",
            "unsafe_code: true",
            "process_results: !function utils.process_results_mbpp",
            "metric_list:",
            "  - metric: bleu\n    aggregation: !function utils.bleu_corpus\n    higher_is_better: true",
            "  - metric: pass_at_1\n    aggregation: mean\n    higher_is_better: true",
            f"generation_kwargs:\n  until:\n{until}\n  do_sample: false\n  max_gen_toks: 128",
        ]
        path = out / f"codestage_{task.name}{suffix}.yaml"
        write_text(path, _yaml(f"codestage_{task.name}{suffix}", data, few, lines, note))
        written.append(path)
    return written


def export_lm_eval(out_dir: Path | str, *, data_dir: Path | str | None = None, tasks: list[str] | None = None, seed: int = 0) -> list[Path]:
    """Write task YAMLs + data + utils.py for lm-evaluation-harness into `out_dir`; returns the YAML
    paths. Run with: lm_eval --include_path OUT_DIR --tasks codestage_<task> (or the tag codestage)."""
    out = check_output(out_dir, LMEVAL, inputs=[data_dir], option="OUT").resolve()
    names = resolve_tasks(tasks) if tasks else list(TASKS)
    written: list[Path] = []
    skipped: list[str] = []
    sets: list[str] = []
    for name in names:
        task: Task = TASKS[name](Path(data_dir) if data_dir is not None else None)
        try:
            items = task.load_items()
        except TaskDataMissing as exc:
            skipped.append(f"{name}: {exc}")
            continue
        assert task.split is not None  # set by load()
        note = split_note(task.split, len(items), len(items), task.paper_split, task.paper_n)
        sets.append(f"- {name}: {note}")
        pool = exemplar_order(task, exemplar_pool(task, items), seed)
        if isinstance(task, MultipleChoiceTask):
            written += _export_choice(task, items, pool, out, note)
        elif isinstance(task, GenerationTask):
            written += _export_generation(task, items, pool, out, note)
    write_text(out / "utils.py", UTILS)
    readme = [
        LMEVAL_README_HEAD,
        "",
        "Written by `codestage tasks export-lm-eval`. Run, for example:",
        "",
        f"    lm_eval --model hf --model_args pretrained=MODEL_DIR --include_path {out} --tasks codestage_cosqa",
        "",
        "Tasks: " + ", ".join(p.stem for p in written),
        "",
        "Splits exported (the paper's beside):",
        *sets,
        "",
        "MBPP tasks execute generated code and import codestage (install it in the lm-eval environment",
        "and pass --confirm_run_unsafe_code).",
    ]
    if skipped:
        readme += ["", "Not exported (data missing):", *[f"- {s}" for s in skipped]]
    write_text(out / "README.md", "\n".join(readme) + "\n")
    return written
