"""Bits per byte of the gold answer (eval/task_loss.py): per item from the accuracy's own scores,
checked by hand against one forward pass of the micro model for each kind of task; the task
aggregate equals its items and what the ladder's POINTS reader computes from them; code tasks
without generation; compare on bits per byte."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from codestage.eval.compare import compare
from codestage.eval.generation import NOT_GENERATED, evaluate_generation_task
from codestage.eval.harness import evaluate, load_scorer
from codestage.eval.multiple_choice import evaluate_choice_task
from codestage.eval.protocols import choice_requests, generation_prompt
from codestage.eval.registry import get_task
from codestage.eval.requests import Request
from codestage.eval.scoring import Scorer
from codestage.eval.task_loss import points_items, points_row
from codestage.results import EvalResults
from codestage.study.ladder.points import load_points
from conftest import save_micro_model

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


@pytest.fixture(scope="module")
def scorer(micro_model_dir: Path) -> Scorer:
    return load_scorer(micro_model_dir, device="cpu", batch_size=8)


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    """A second micro model (seed 1): another run to pair with."""
    return save_micro_model(tmp_path_factory.mktemp("model") / "micro_seed1", tokenizer, seed=1)


@torch.no_grad()
def by_hand(scorer: Scorer, context: str, continuation: str) -> tuple[float, int]:
    """(bits, bytes) of `continuation` after `context` from one plain forward pass: lm-eval's split
    (the context's trailing whitespace belongs to the continuation), float64 log-softmax."""
    kept = context.rstrip()
    scored = context[len(kept):] + continuation
    tok = scorer.tokenizer
    ctx_ids = tok(kept, add_special_tokens=False)["input_ids"]
    ids = tok(kept + scored, add_special_tokens=False)["input_ids"]
    assert len(ids) <= scorer.max_length + 1, "the hand check needs an item that fits the model"
    logp = torch.log_softmax(scorer.model(torch.tensor([ids[:-1]])).logits[0].double(), dim=-1)
    nats = sum(float(logp[j - 1, ids[j]]) for j in range(len(ctx_ids), len(ids)))
    return -nats / math.log(2), len(scored.encode("utf-8"))


def _item(task_name: str, doc_id: int):
    task = get_task(task_name)
    items = task.load()
    return task, items, next(it for it in items if it.doc_id == doc_id)


@pytest.mark.parametrize("task_name, protocol, doc_id", [
    ("logiqa_en", "paper", 181),     # the gold span follows "...question: ": its space is scored, so counted
    ("cosqa", "lm-eval", 74),        # the gold choice text " no" after the question
    ("jecqa_kd", "paper", 248),      # three correct options: pooled over all three
    ("jecqa_kd", "lm-eval", 248),
])
def test_multiple_choice_gold_bits_by_hand(scorer: Scorer, task_name: str, protocol: str, doc_id: int) -> None:
    task, items, item = _item(task_name, doc_id)
    summary, (rec,) = evaluate_choice_task(task, [item], items, scorer, protocol=protocol, shots=0, seed=0)
    requests = choice_requests(task, item, protocol, [])
    bits, n_bytes = map(sum, zip(*(by_hand(scorer, requests[g].context, requests[g].continuation) for g in item.gold)))
    assert rec["gold_bits"] == pytest.approx(bits, rel=1e-6)
    assert rec["gold_bytes"] == n_bytes and rec["gold_bpb"] == pytest.approx(bits / n_bytes, rel=1e-6)
    assert rec["gold_tokens"] == sum(rec["choice_tokens"][g] for g in item.gold) and "gold_truncated" not in rec
    # the same log-likelihoods the decision used: gold bits are the gold choices' summed log-probs in bits
    assert rec["gold_bits"] == pytest.approx(-sum(rec["choice_logprobs"][g] for g in item.gold) / math.log(2), rel=1e-12)
    assert summary["bits_per_byte"]["value"] == pytest.approx(bits / n_bytes, rel=1e-6) and summary["bits_per_byte"]["n"] == 1
    if task_name == "logiqa_en":
        assert n_bytes == len((" " + item.question).encode("utf-8"))
    if task_name == "jecqa_kd":
        assert len(item.gold) == 3 and not rec["correct"]


def test_the_protocols_score_different_gold_texts(scorer: Scorer) -> None:
    """paper: the question after the gold candidate; lm-eval: the gold choice text after the question."""
    task, items, item = _item("logiqa_en", 181)
    (g,) = item.gold
    recs = {p: evaluate_choice_task(task, [item], items, scorer, protocol=p, shots=0, seed=0)[1][0] for p in ("paper", "lm-eval")}
    assert recs["paper"]["gold_bytes"] == len((" " + item.question).encode("utf-8"))
    assert recs["lm-eval"]["gold_bytes"] == len((" " + item.choices[g]).encode("utf-8"))
    assert recs["paper"]["gold_bytes"] != recs["lm-eval"]["gold_bytes"]
    assert recs["paper"]["gold_bpb"] != pytest.approx(recs["lm-eval"]["gold_bpb"], rel=1e-2)


def test_mbpp_reference_bits_by_hand_without_generation(scorer: Scorer) -> None:
    task, items, item = _item("mbpp", 124)
    summary, (rec,) = evaluate_generation_task(task, [item], items, scorer, protocol="paper", shots=0, seed=0,
                                               max_new_tokens=8, execute=True, check_references=False, generate=False)
    bits, n_bytes = by_hand(scorer, generation_prompt(task, item, "paper", []), item.reference)
    assert n_bytes == len(("\n" + item.reference).encode("utf-8"))  # the prompt's last newline is scored with it
    assert rec["gold_bits"] == pytest.approx(bits, rel=1e-6) and rec["gold_bytes"] == n_bytes
    assert "output" not in rec and "bleu_stats" not in rec and "passed" not in rec
    assert summary["value"] is None and summary["ci95"] is None and summary["missing"] == NOT_GENERATED
    assert summary["n"] == 1 and summary["bits_per_byte"]["value"] == pytest.approx(bits / n_bytes, rel=1e-6)


def test_an_item_without_gold_has_no_loss_and_is_noted(scorer: Scorer) -> None:
    task, items, item = _item("jecqa_kd", 211)  # upstream's item with an empty label list
    _, other, second = _item("jecqa_kd", 248)
    summary, (rec, rec2) = evaluate_choice_task(task, [item, second], items, scorer, protocol="paper", shots=0, seed=0)
    assert item.gold == () and "gold_bits" not in rec and rec2["gold_bits"] > 0
    assert summary["bits_per_byte"]["n"] == 1 and summary["bits_per_byte"]["value"] == pytest.approx(rec2["gold_bpb"])
    assert summary["notes"] == ["bits per byte: 1 of 2 items have no gold answer to score and are left out"]


def test_a_cut_continuation_counts_the_bytes_it_scored(scorer: Scorer) -> None:
    request = Request("x = 1\n", "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n")
    short = Scorer(scorer.model, scorer.tokenizer, max_length=12)
    ((whole,),) = scorer.loglikelihood([[request]])
    ((right,),) = short.loglikelihood([[request]], truncation="right")  # the paper's: keeps the beginning
    ((left,),) = short.loglikelihood([[request]], truncation="left")  # lm-eval's: keeps the end
    cont = scorer.encode_pairs([request])[0][1]
    assert whole.cut_tokens == 0 and whole.n_tokens == len(cont) and whole.n_bytes == len(("\n" + request.continuation).encode())
    decode = lambda ids: len(scorer.tokenizer.decode(ids, clean_up_tokenization_spaces=False).encode())  # noqa: E731
    assert right.cut_tokens == len(cont) - right.n_tokens > 0 and right.n_bytes == decode(cont[: right.n_tokens])
    assert left.cut_tokens == len(cont) - left.n_tokens > 0 and left.n_bytes == decode(cont[-left.n_tokens:])
    assert 0 < right.n_bytes < whole.n_bytes and 0 < left.n_bytes < whole.n_bytes


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory, micro_model_dir: Path, other_model_dir: Path, scorer: Scorer) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("runs")
    tasks = ["cosqa", "jecqa_kd", "ceval_logic", "mbpp"]
    evaluate(micro_model_dir, tasks, base / "A", limit=8, scorer=scorer, max_new_tokens=8, execute=False)
    evaluate(other_model_dir, tasks, base / "B", limit=8, device="cpu", max_new_tokens=8, execute=False)
    return base / "A", base / "B"


def _items(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "items.jsonl").read_text().splitlines()]


def test_task_value_is_summed_bits_over_summed_bytes_of_its_items(two_runs: tuple[Path, Path]) -> None:
    run = two_runs[0]
    res = EvalResults.read(run / "results.json")
    items = _items(run)
    for name, r in res.tasks.items():
        recs = [x for x in items if x["task"] == name]
        assert all(x["gold_bpb"] == pytest.approx(x["gold_bits"] / x["gold_bytes"], rel=1e-12) for x in recs)
        want = math.fsum(x["gold_bits"] for x in recs) / math.fsum(x["gold_bytes"] for x in recs)
        b = r.bits_per_byte
        assert b.value == pytest.approx(want, rel=1e-12) and b.n == len(recs) == 8 and b.unit == "bits per byte"
        assert b.ci95[0] < b.value < b.ci95[1]
    assert res.tasks["mbpp"].metric == "bleu" and res.tasks["mbpp"].value is not None  # generated by default


def test_points_built_from_items_files_load_with_the_same_loss(tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    rows, item_lines = [], []
    for arm, params, run in (("NL", 1e6, two_runs[0]), ("CODE", 2e6, two_runs[1])):
        res = EvalResults.read(run / "results.json")
        recs = _items(run)
        (tmp_path / f"{arm}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in points_items(recs)))
        for task in ("cosqa", "jecqa_kd", "ceval_logic", "mbpp"):
            row = points_row([x for x in recs if x["task"] == task])
            assert row["loss"] == pytest.approx(res.tasks[task].bits_per_byte.value, rel=1e-12)
            if task != "mbpp":  # accuracy: the task's, as a fraction (every item has a loss here)
                assert row["accuracy"] == pytest.approx(res.tasks[task].value / 100, rel=1e-12)
            rows.append({"arm": arm, "task": task, "params": params, "tokens": 1e8, **row, "items": f"{arm}.jsonl"})
            item_lines.append((arm, task, row["loss"]))
    rows = [{k: v for k, v in r.items() if v is not None} for r in rows]  # mbpp without execution: no accuracy
    (tmp_path / "points.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    points = load_points(tmp_path / "points.jsonl")  # checks each row's loss against its items (rel 1e-4)
    for arm, task, loss in item_lines:
        (i,) = points.where(arm, task)
        assert points.loss[i] == loss
        data = points.items[task]
        k = int(np.flatnonzero(data.rows == i)[0])
        assert data.losses(np.ones((1, data.num.shape[1])))[0, k] == pytest.approx(loss, rel=1e-12)
    assert points.items["mbpp"].correct is None and points.items["cosqa"].correct is not None


def test_compare_pairs_bits_per_byte_of_a_multiple_choice_task(two_runs: tuple[Path, Path]) -> None:
    a, b = two_runs
    out = compare(a, b)
    cos = out.tasks["cosqa"]
    assert cos.metric == "accuracy" and cos.bits_per_byte is not None
    bpb = cos.bits_per_byte
    assert bpb.a == pytest.approx(EvalResults.read(a / "results.json").tasks["cosqa"].bits_per_byte.value, rel=1e-12)
    assert bpb.b == pytest.approx(EvalResults.read(b / "results.json").tasks["cosqa"].bits_per_byte.value, rel=1e-12)
    assert bpb.diff == pytest.approx(bpb.a - bpb.b) and bpb.ci95[0] <= bpb.diff <= bpb.ci95[1] and bpb.n == 8
    assert bpb.a != bpb.b and 0 < bpb.p_value <= 1
    same = compare(a, a).tasks["jecqa_kd"].bits_per_byte
    assert same.diff == 0 and same.p_value == 1.0


def test_compare_reads_items_files_from_before_gold_bits() -> None:
    """The recorded GPU study's items files carry MBPP's ref_logprob/ref_bytes: compare still gives the
    recorded comparison, number for number."""
    recorded = json.loads((RESULTS / "comparisons" / "CODE-NL_seed0.json").read_text())
    again = compare(RESULTS / "seed0" / "eval" / "CODE", RESULTS / "seed0" / "eval" / "NL").to_json()
    assert again["tasks"].keys() == recorded["tasks"].keys()
    for task, want in recorded["tasks"].items():
        assert {k: again["tasks"][task][k] for k in want} == want, task
    assert again["tasks"]["mbpp_sanitized"]["bits_per_byte"]["n"] == 427


def test_no_generate_on_the_command_line(tmp_path: Path, micro_model_dir: Path, monkeypatch, capsys) -> None:
    from test_cli import run_cli

    outs = []
    for name in ("A", "B"):
        out = tmp_path / name
        code, text = run_cli(monkeypatch, capsys, "eval", "--model", str(micro_model_dir), "--tasks", "mbpp,cosqa",
                             "--limit", "3", "--no-generate", "--device", "cpu", "--quiet", "--out", str(out))
        assert code == 0, text
        outs.append(out)
    assert "bits/byte of" in text and "mbpp: not generated (eval.generate: false): bits per byte of the reference only" in text
    res = EvalResults.read(outs[0] / "results.json")
    mbpp = res.tasks["mbpp"]
    assert mbpp.value is None and mbpp.missing == NOT_GENERATED and mbpp.n == 3 and mbpp.pass_at_1 is None
    assert mbpp.bits_per_byte.value > 0 and mbpp.bits_per_byte.n == 3
    assert res.tasks["cosqa"].value is not None and res.tasks["cosqa"].bits_per_byte.n == 3
    gen = [x for x in _items(outs[0]) if x["task"] == "mbpp"]
    assert len(gen) == 3 and all("output" not in x and x["gold_bits"] > 0 for x in gen)
    paired = compare(outs[0], outs[1]).tasks["mbpp"]  # nothing but bits per byte to compare: that is the metric
    assert paired.metric == "bits_per_byte" and paired.n == 3 and paired.diff == 0 and paired.bits_per_byte.diff == 0


def test_study_config_can_skip_generation() -> None:
    from codestage.config import EvalConfig

    assert EvalConfig().generate is True and EvalConfig(generate=False).generate is False
