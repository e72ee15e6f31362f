"""The typed records read the result files the study wrote (docs/results, a real GPU study) and write
them back unchanged: one JSON form each, nulls kept, nothing dropped; a study's results.json and a
comparison come back byte for byte (a model's eval results.json in another key order)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codestage.atomic import write_json
from codestage.errors import DataError
from codestage.results import Comparison, EvalResults, HeldoutLoss, StudyResults

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


@pytest.mark.parametrize("record, path", [
    (StudyResults, "seed0/results.json"),
    (EvalResults, "seed0/eval/NL/results.json"),
    (EvalResults, "seed0/eval/CODE/results.json"),
    (Comparison, "comparisons/CODE-NL_seed0.json"),
    (Comparison, "comparisons/CODE-NL_3seeds.json"),
])
def test_result_files_round_trip(record, path) -> None:
    raw = json.loads((RESULTS / path).read_text(encoding="utf-8"))
    assert record.read(RESULTS / path).to_json() == raw


@pytest.mark.parametrize("record, path", [
    (StudyResults, "seed0/results.json"), (StudyResults, "seed1/results.json"), (Comparison, "comparisons/CODE-NL_3seeds.json"),
])
def test_study_results_and_comparisons_write_back_byte_for_byte(tmp_path, record, path) -> None:
    write_json(tmp_path / "out.json", record.read(RESULTS / path).to_json())
    assert (tmp_path / "out.json").read_bytes() == (RESULTS / path).read_bytes()


def test_typed_fields_of_a_study() -> None:
    study = StudyResults.read(RESULTS / "seed0" / "results.json")
    assert study.runs_in("pretrain") == ["NL", "CODE"]
    nl = study.runs["NL"]
    code_gen = nl.tasks["code_generation"]
    assert code_gen.metric == "bleu" and code_gen.pass_at_1.value is not None and code_gen.domain is None
    assert isinstance(nl.heldout["code"], HeldoutLoss) and nl.heldout["code"].bits_per_byte > 0
    assert study.paper["tables"]["pretrain"]["NL"]["logic"] == 45.45


def test_a_malformed_file_names_the_file_and_field(tmp_path) -> None:
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps({"runs": {"NL": {"stage": "pretrain", "tasks": {"logic": {"task": "x", "metric": "accuracy",
                                                                                        "n": "many"}}}}}))
    with pytest.raises(DataError, match=r"results.json: runs.NL.tasks.logic.n: "):
        StudyResults.read(bad)
