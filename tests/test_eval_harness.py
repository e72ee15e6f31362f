"""The harness end to end on the micro model: results and items files, missing data, protocols,
shots, reference self-check, compare and the lm-eval export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from codestage.errors import ConfigError, ModelPathError
from codestage.eval.harness import compare, evaluate, export_lm_eval, list_tasks, load_scorer
from codestage.results import EvalResults
from codestage.eval.scoring import Scorer


@pytest.fixture(scope="module")
def scorer(micro_model_dir: Path) -> Scorer:
    return load_scorer(micro_model_dir, device="cpu", batch_size=8)


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory: pytest.TempPathFactory, micro_model_dir: Path, scorer: Scorer) -> Path:
    out = tmp_path_factory.mktemp("paper")
    evaluate(micro_model_dir, ["all"], out, sample=6, seed=1, scorer=scorer, max_new_tokens=16)
    return out


def test_results_file_has_every_task(paper_run: Path) -> None:
    res = json.loads((paper_run / "results.json").read_text())
    assert EvalResults.read(paper_run / "results.json").to_json() == res  # one JSON form: it reads back whole
    assert res["protocol"] == "paper" and res["shots"] == 0 and res["seed"] == 1
    tasks = res["tasks"]
    assert set(tasks) == {"ceval_logic", "logiqa_en", "logiqa_zh", "jecqa_kd", "scienceqa", "ekar_zh", "cosqa", "mbpp_sanitized", "mbpp"}
    ekar = tasks["ekar_zh"]
    assert ekar["value"] is None and ekar["n"] == 0 and ekar["ci95"] is None and "not present" in ekar["missing"]
    for name, r in tasks.items():
        if name == "ekar_zh":
            continue
        assert r["n"] == 6 and r["subsample"]["n"] == 6 and r["subsample"]["seed"] == 1
        assert r["ci95"][0] <= r["value"] <= r["ci95"][1]
        assert len(r["data_sha256"]) == 64 and r["files"]
    assert tasks["cosqa"]["chance"] == 50.0 and tasks["cosqa"]["metric"] == "accuracy"
    assert tasks["cosqa"]["gold_logprob"]["unit"] == "nats per token" and "margin" in tasks["cosqa"]
    mbpp = tasks["mbpp_sanitized"]
    assert mbpp["metric"] == "bleu" and 0 <= mbpp["pass@1"]["value"] <= 100 and mbpp["bits_per_byte"]["value"] > 0
    assert tasks["scienceqa"]["subsample"]["of"] == 194


def test_items_file_lines(paper_run: Path) -> None:
    lines = [json.loads(x) for x in (paper_run / "items.jsonl").read_text().splitlines()]
    assert len(lines) == 6 * 8
    mc = next(x for x in lines if x["task"] == "jecqa_kd")
    assert len(mc["choice_logprobs"]) == len(mc["choice_tokens"]) == 4 and isinstance(mc["prediction"], int)
    assert mc["correct"] == (mc["gold"] == [mc["prediction"]])
    gen = next(x for x in lines if x["task"] == "mbpp")
    assert {"output", "prediction", "gold", "tests", "passed", "bleu_stats", "ref_logprob"} <= set(gen)


def test_lm_eval_protocol_with_shots(tmp_path: Path, micro_model_dir: Path, scorer: Scorer) -> None:
    res = evaluate(micro_model_dir, ["cosqa", "logic"], tmp_path, limit=5, protocol="lm-eval", shots=2, scorer=scorer)
    cos = res.tasks["cosqa"]
    assert cos.n == 5 and cos.subsample is None and cos.limit == 5 and cos.shots == 2
    assert cos.gold_logprob.unit == "nats" and 0 <= cos.acc_norm.value <= 100
    again = evaluate(micro_model_dir, ["cosqa", "logic"], tmp_path / "again", limit=5, protocol="lm-eval", shots=2, scorer=scorer)
    assert again.tasks["cosqa"].value == cos.value
    assert (tmp_path / "items.jsonl").read_text() == (tmp_path / "again" / "items.jsonl").read_text()


def test_compare_runs(tmp_path: Path, paper_run: Path, micro_model_dir: Path, scorer: Scorer) -> None:
    other = evaluate(micro_model_dir, ["all"], tmp_path, sample=6, seed=1, protocol="lm-eval", scorer=scorer, max_new_tokens=16)
    assert other.tasks["cosqa"].n == 6
    out = compare(paper_run, tmp_path / "items.jsonl")
    cos = out.tasks["cosqa"]
    assert cos.n == 6 and cos.diff == pytest.approx(cos.a - cos.b) and 0 < cos.p_value <= 1
    assert out.tasks["mbpp"].metric == "bleu"
    same = compare(paper_run, paper_run)
    assert all(t.diff == 0 and t.p_value == 1.0 for t in same.tasks.values())


def test_check_references_needs_no_model(tmp_path: Path) -> None:
    res = evaluate(None, ["mbpp"], tmp_path, limit=8, check_references=True)
    r = res.tasks["mbpp"]
    assert r.pass_at_1.value == 100.0 and r.value == 100.0 and r.bits_per_byte is None
    assert r.to_json()["bits_per_byte"] is None and "pass@1" in r.to_json()


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    with pytest.raises(ModelPathError, match="no config.json"):
        evaluate(model, ["cosqa"], tmp_path / "out")
    with pytest.raises(ConfigError, match="unknown task or domain 'nope'"):
        evaluate(model, ["nope"], tmp_path / "out")
    with pytest.raises(ConfigError, match="unknown protocol"):
        evaluate(model, ["cosqa"], tmp_path / "out", protocol="helm")
    assert not (tmp_path / "out" / "results.json").exists()


def test_export_lm_eval_yamls(tmp_path: Path) -> None:
    written = export_lm_eval(tmp_path, tasks=["cosqa", "legal", "mbpp"])
    names = sorted(p.stem for p in written)
    assert names == ["codestage_cosqa", "codestage_cosqa_paper", "codestage_jecqa_kd", "codestage_jecqa_kd_paper", "codestage_mbpp", "codestage_mbpp_paper"]
    text = (tmp_path / "codestage_jecqa_kd.yaml").read_text()
    assert "process_results: !function utils.process_results_exact_set" in text
    plain = yaml.safe_load((tmp_path / "codestage_cosqa_paper.yaml").read_text())
    assert plain["doc_to_text"] == "gold" and plain["doc_to_choice"] == "contexts" and plain["doc_to_target"] == "span"
    docs = [json.loads(x) for x in Path(plain["dataset_kwargs"]["data_files"]["test"]).read_text().splitlines()]
    assert len(docs) == 604 and docs[0]["contexts"][0].endswith("Answered code is correct:")
    assert (tmp_path / "utils.py").is_file()


def test_list_tasks() -> None:
    rows = {r["name"]: r for r in list_tasks()}
    assert rows["ekar_zh"]["data_present"] is False and rows["cosqa"]["data_present"] is True
    assert rows["jecqa_kd"]["domain_default"] and rows["mbpp_sanitized"]["paper_n"] == 427
