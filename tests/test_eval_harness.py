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
    assert "peak_memory_gib" not in res  # written on CUDA only
    tasks = res["tasks"]
    assert set(tasks) == {"ceval_logic", "logiqa_en", "logiqa_zh", "jecqa_kd", "scienceqa", "ekar_zh", "cosqa", "mbpp_sanitized", "mbpp"}
    ekar = tasks["ekar_zh"]  # the bundled slice: validation records only
    assert (ekar["split"], ekar["split_source"], ekar["split_n"], ekar["paper_split"], ekar["paper_n"]) == \
        ("validation", "validation.json", 100, "test", 335)
    assert ekar["split_note"] == "validation, n=6 of 100; the paper's test n=335"
    assert set(ekar["files"]) == {"ekar_chinese/validation.json", "ekar_chinese/train.json"}
    assert tasks["ceval_logic"]["split_note"] == "validation, n=6 of 22 (the paper's set)"
    assert tasks["cosqa"]["split"] == "dev" and tasks["scienceqa"]["split"] == "test, text-only"
    assert tasks["logiqa_en"]["split_note"] == "test, n=6 of 651 (not in the paper)"
    for name, r in tasks.items():
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
    assert len(lines) == 6 * 9
    splits = {(x["task"], x["split"]) for x in lines}
    assert ("ekar_zh", "validation") in splits and ("cosqa", "dev") in splits and len(splits) == 9
    mc = next(x for x in lines if x["task"] == "jecqa_kd")
    assert len(mc["choice_logprobs"]) == len(mc["choice_tokens"]) == 4 and isinstance(mc["prediction"], int)
    assert mc["correct"] == (mc["gold"] == [mc["prediction"]])
    gen = next(x for x in lines if x["task"] == "mbpp")
    assert {"output", "prediction", "gold", "tests", "passed", "bleu_stats", "gold_bits", "gold_bytes", "gold_bpb"} <= set(gen)


def test_lm_eval_protocol_with_shots(tmp_path: Path, micro_model_dir: Path, scorer: Scorer) -> None:
    res = evaluate(micro_model_dir, ["cosqa", "logic"], tmp_path, limit=5, protocol="lm-eval", shots=2, scorer=scorer)
    cos = res.tasks["cosqa"]
    assert cos.n == 5 and cos.subsample is None and cos.limit == 5 and cos.shots == 2
    assert cos.gold_logprob.unit == "nats" and 0 <= cos.acc_norm.value <= 100
    again = evaluate(micro_model_dir, ["cosqa", "logic"], tmp_path / "again", limit=5, protocol="lm-eval", shots=2, scorer=scorer)
    assert again.tasks["cosqa"].value == cos.value
    assert (tmp_path / "items.jsonl").read_text() == (tmp_path / "again" / "items.jsonl").read_text()


def _ekar_with_test_json(root: Path) -> Path:
    """A data root whose E-KAR folder has a test.json with answer keys (built from the bundled validation
    records: the later upstream test.json has the same format), beside validation.json and train.json."""
    from codestage.resources import bundled

    src, dst = bundled("eval", "ekar_chinese"), root / "ekar_chinese"
    dst.mkdir(parents=True)
    for name in ("validation.json", "train.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    (dst / "test.json").write_text("".join((src / "validation.json").read_text(encoding="utf-8").splitlines(True)[:12]),
                                   encoding="utf-8")
    return root


@pytest.mark.parametrize("protocol", ["paper", "lm-eval"])
def test_ekar_split_follows_the_data_under_both_protocols(tmp_path: Path, micro_model_dir: Path, scorer: Scorer, protocol: str) -> None:
    val = evaluate(micro_model_dir, ["analogical"], tmp_path / "val", limit=4, protocol=protocol, shots=1, scorer=scorer)
    r = val.tasks["ekar_zh"]
    assert r.split == "validation" and r.n == 4 and r.split_n == 100 and 0 <= r.value <= 100
    assert r.split_note == "validation, n=4 of 100; the paper's test n=335"
    test = evaluate(micro_model_dir, ["analogical"], tmp_path / "test", data_dir=_ekar_with_test_json(tmp_path / "data"),
                    limit=4, protocol=protocol, shots=1, scorer=scorer)
    t = test.tasks["ekar_zh"]
    assert t.split == "test" and t.split_source == "test.json" and t.split_n == 12 and t.notes == []
    assert t.split_note == "test, n=4 of 12; the paper's test n=335"
    # the same records as validation items 0-3: the same scores, now filed under test
    assert t.value == r.value
    items = [json.loads(x) for x in (tmp_path / "test" / "items.jsonl").read_text().splitlines()]
    assert {x["split"] for x in items} == {"test"} and len(items) == 4
    # different splits: not compared, even though these four questions are the same (identical item_hash)
    paired = compare(tmp_path / "val", tmp_path / "test")
    assert "ekar_zh" not in paired.tasks and paired.split_mismatch == {"ekar_zh": {"a": ["validation"], "b": ["test"]}}
    assert paired.notes == ["ekar_zh: not compared, its items come from different splits (A: validation; B: test)"]
    assert compare(tmp_path / "val", tmp_path / "val").tasks["ekar_zh"].split == "validation"


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


def _lm_eval_requests(yaml_path: Path, shots: int) -> list[list[tuple[str, str]]]:
    """(context, continuation) per choice per document, built from an exported YAML and its data files the
    way lm-eval 0.4's multiple_choice task builds them with the first_n sampler: exemplars rendered as
    text + target_delimiter + gold choice, joined by fewshot_delimiter; the multiple-input form (doc_to_choice
    a list of contexts) scores the shared target after each context."""
    cfg = yaml.safe_load(yaml_path.read_text())
    files = cfg["dataset_kwargs"]["data_files"]
    docs, pool = ([json.loads(x) for x in Path(files[k]).read_text().splitlines()] for k in ("test", "fewshot"))
    delim, fs_delim = cfg["target_delimiter"], cfg["fewshot_delimiter"]
    out = []
    for doc in docs:
        if cfg["doc_to_choice"] == "contexts":  # paper protocol, shared evidence after each context
            shots_text = "".join(e["contexts"][e["gold"]] + delim + e["span"] + fs_delim for e in pool[:shots])
            out.append([(shots_text + c, delim + doc["span"]) for c in doc["contexts"]])
        else:
            shots_text = "".join(e["query"] + delim + e["choices"][e["gold"]] + fs_delim for e in pool[:shots])
            out.append([(shots_text + doc["query"], delim + c) for c in doc["choices"]])
    return out


@pytest.mark.parametrize("shots", [0, 2])
def test_export_of_ekar_gives_the_requests_codestage_scores(tmp_path: Path, shots: int) -> None:
    """Parity without lm-eval installed: the exported documents, read as lm-eval reads them, are exactly the
    (context, continuation) pairs `codestage eval` scores, under both protocols (bench/eval_lmeval_match.py
    runs lm-eval itself on them)."""
    from codestage.eval.protocols import choice_requests, exemplar_picker
    from codestage.eval.registry import get_task

    written = export_lm_eval(tmp_path, tasks=["analogical"])
    assert sorted(p.stem for p in written) == ["codestage_ekar_zh", "codestage_ekar_zh_paper"]
    task = get_task("ekar_zh")
    items = task.load()
    pick = exemplar_picker(task, items, shots, 0)
    for protocol, name in (("lm-eval", "codestage_ekar_zh"), ("paper", "codestage_ekar_zh_paper")):
        path = tmp_path / f"{name}.yaml"
        assert path.read_text().startswith("# split: validation, n=100; the paper's test n=335\n")
        ours = [[(r.context, r.continuation) for r in choice_requests(task, it, protocol, pick(it))] for it in items]
        assert _lm_eval_requests(path, shots) == ours
    paper = yaml.safe_load((tmp_path / "codestage_ekar_zh_paper.yaml").read_text())
    assert paper["doc_to_text"] == "query" and paper["doc_to_choice"] == "choices"  # candidates after a shared context
    assert "- ekar_zh: validation, n=100; the paper's test n=335" in (tmp_path / "README.md").read_text()


def test_list_tasks(tmp_path: Path) -> None:
    rows = {r["name"]: r for r in list_tasks()}
    assert rows["cosqa"]["data_present"] is True and rows["cosqa"]["split"] == "dev" and rows["cosqa"]["n"] == 604
    assert rows["jecqa_kd"]["domain_default"] and rows["mbpp_sanitized"]["paper_n"] == 427
    ekar = rows["ekar_zh"]
    assert (ekar["data_present"], ekar["split"], ekar["n"], ekar["paper_split"], ekar["paper_n"]) == (True, "validation", 100, "test", 335)
    assert ekar["split_note"] == "validation, n=100; the paper's test n=335"
    with_test = {r["name"]: r for r in list_tasks(_ekar_with_test_json(tmp_path))}
    assert (with_test["ekar_zh"]["split"], with_test["ekar_zh"]["n"]) == ("test", 12)
    assert with_test["cosqa"]["data_present"] is False and with_test["cosqa"]["split"] is None
    assert "cosqa-dev.json not found" in with_test["cosqa"]["missing"]
