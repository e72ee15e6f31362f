"""Task loaders on the real bundled files, malformed-file errors, E-KAR's split choice, ScienceQA's
trusted fields, and the registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codestage.errors import ConfigError, DataError
from codestage.eval.registry import DOMAIN_DEFAULT, TASKS, get_task, resolve_tasks
from codestage.eval.protocols import choice_requests, exemplar_picker
from codestage.eval.tasks.base import ChoiceItem, GenerationItem, TaskDataMissing
from codestage.eval.tasks.ekar import BlindFile, read_ekar
from codestage.resources import SHARED_DATA_ENV, bundled, shared_data

EXPECTED_N = {
    "ceval_logic": 22,
    "logiqa_en": 651,
    "logiqa_zh": 651,
    "jecqa_kd": 1000,
    "scienceqa": 194,  # bundled slice: 361 test problems, 194 without an image
    "ekar_zh": 100,  # bundled slice: 100 of the 165 validation records
    "cosqa": 604,
    "mbpp_sanitized": 427,
    "mbpp": 500,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_N))
def test_item_counts_on_the_real_files(name: str) -> None:
    items = get_task(name).load()
    assert len(items) == EXPECTED_N[name]
    assert [it.doc_id for it in items] == list(range(len(items)))
    for it in items:
        if isinstance(it, ChoiceItem):
            assert len(it.choices) >= 2 and all(0 <= g < len(it.choices) for g in it.gold)
        else:
            assert isinstance(it, GenerationItem) and it.tests and it.reference


def test_specific_items_parse_as_upstream_means_them() -> None:
    logic = get_task("ceval_logic").load()
    assert logic[0].gold == (2,) and logic[0].choices[2].startswith("有规律的锻炼")
    # LogiQA line 109 lists its options (A), (C), (B), (D): the gold letter follows the label.
    en = get_task("logiqa_en").load()
    item = en[108]
    assert item.choices[1].startswith("No.3") and item.choices[2].startswith("No.2 valve and No.3")
    jec = get_task("jecqa_kd").load()
    assert sum(len(it.gold) == 1 for it in jec) == 479 and sum(len(it.gold) > 1 for it in jec) == 520
    assert jec[211].gold == ()  # the one upstream item with an empty label list
    mbpp = get_task("mbpp").load()
    assert [it.meta["task_id"] for it in mbpp] == list(range(11, 511))
    assert mbpp[0].entry_point == "remove_Occ"


def test_chance_rates() -> None:
    assert get_task("jecqa_kd").chance(get_task("jecqa_kd").load()) == pytest.approx(479 * 0.25 / 1000)
    assert get_task("cosqa").chance(get_task("cosqa").load()) == 0.5


def test_fewshot_pools() -> None:
    assert len(get_task("ceval_logic").fewshot_pool()) == 5
    assert len(get_task("scienceqa").fewshot_pool()) == 40
    assert len(get_task("ekar_zh").fewshot_pool()) == 40
    assert [it.meta["task_id"] for it in get_task("mbpp").fewshot_pool()] == list(range(1, 11))
    assert get_task("cosqa").fewshot_pool() is None


def test_registry_resolves_tasks_and_domains() -> None:
    assert resolve_tasks(["logic", "cosqa", "logic"]) == ["ceval_logic", "cosqa"]
    assert resolve_tasks(["legal,code_generation"]) == ["jecqa_kd", "mbpp_sanitized"]
    assert resolve_tasks(["all"]) == list(TASKS)
    assert set(DOMAIN_DEFAULT.values()) <= set(TASKS)
    with pytest.raises(ConfigError, match="'chemistry'.*valid tasks: ceval_logic"):
        resolve_tasks(["chemistry"])


def _root_with(tmp_path: Path, folder: str, name: str, text: str) -> Path:
    (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    (tmp_path / folder / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_bad_json_line_names_file_and_line(tmp_path: Path) -> None:
    good = json.dumps({"passage": "p", "question": "q", "options": ["(A)a", "(B)b"], "label": "A"})
    root = _root_with(tmp_path, "logiqa", "logiqa-en.jsonl", f"{good}\n{{not json\n")
    with pytest.raises(DataError, match=r"logiqa-en.jsonl:2: not valid JSON"):
        get_task("logiqa_en", root).load()


def test_missing_field_and_wrong_label(tmp_path: Path) -> None:
    row = {"passage": None, "question": "q", "options": ["(A)a", "(B)b", "(C)c", "(D)d"], "label": ["B"]}
    no_options = {k: v for k, v in row.items() if k != "options"}
    root = _root_with(tmp_path, "jecqa", "jec-qa-kd.jsonl", json.dumps(row) + "\n" + json.dumps(no_options) + "\n")
    with pytest.raises(DataError, match=r"jec-qa-kd.jsonl:2: field 'options' missing"):
        get_task("jecqa_kd", root).load()
    wrong = dict(row, label=["E"])
    root = _root_with(tmp_path, "jecqa", "jec-qa-kd.jsonl", json.dumps(wrong) + "\n")
    with pytest.raises(DataError, match=r"jec-qa-kd.jsonl:1: field 'label' has 'E'"):
        get_task("jecqa_kd", root).load()


def test_csv_missing_column_and_bad_answer(tmp_path: Path) -> None:
    root = _root_with(tmp_path, "ceval_logic", "logic_val.csv", "id,question,A,B,C,D\n0,q,a,b,c,d\n")
    with pytest.raises(DataError, match=r"logic_val.csv:1: missing column\(s\) answer"):
        get_task("ceval_logic", root).load()
    root = _root_with(tmp_path, "ceval_logic", "logic_val.csv", 'id,question,A,B,C,D,answer\n0,"two\nlines",a,b,c,d,A\n1,q,a,b,c,d,E\n')
    with pytest.raises(DataError, match=r"logic_val.csv:4: field 'answer' should be one of A, B, C, D, got 'E'"):
        get_task("ceval_logic", root).load()


def test_json_array_and_object_errors_name_the_line(tmp_path: Path) -> None:
    items = [{"idx": "a", "doc": "q", "code": "x = 1", "label": 1}, {"idx": "b", "doc": "q", "code": "y", "label": 7}]
    root = _root_with(tmp_path, "cosqa", "cosqa-dev.json", json.dumps(items, indent=1))
    with pytest.raises(DataError, match=r"cosqa-dev.json:8: field 'label' should be 0 or 1, got 7"):
        get_task("cosqa", root).load()
    problems = {"1": {"question": "q", "choices": ["a", "b"], "answer": 5, "image": None, "hint": "", "lecture": ""}}
    _root_with(tmp_path, "scienceqa", "problems.json", json.dumps(problems, indent=1))
    _root_with(tmp_path, "scienceqa", "pid_splits.json", json.dumps({"test": ["1"], "train": []}))
    with pytest.raises(DataError, match=r"problems.json:2: field 'answer' of problem 1 is 5"):
        get_task("scienceqa", tmp_path).load()


def test_missing_task_data_is_task_data_missing(tmp_path: Path) -> None:
    with pytest.raises(TaskDataMissing, match="cosqa-dev.json not found"):
        get_task("cosqa", tmp_path).load()


def _ekar_record(i: int, key: str = "C") -> dict:
    return {
        "id": f"q{i}",
        "question": "茶:茶壶:茶杯",
        "choices": {"label": ["A", "B", "C", "D"], "text": ["乘客:公交车:出租车", "杂志:书架:阅览室", "人才:学校:企业", "课本:书店:印刷厂"]},
        "answerKey": key,
        "explanation": ["q", "a", "b", "c", "d"],
        "relation": [[["茶", "茶壶", "R1"]]] * 5,
    }


def _ekar_lines(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _bundled_ekar(name: str) -> list[dict]:
    """The bundled slice's records (real upstream lines)."""
    text = bundled("eval", "ekar_chinese", name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _ekar_root(tmp_path: Path, files: dict[str, list[dict]]) -> Path:
    for name, records in files.items():
        _root_with(tmp_path, "ekar_chinese", name, _ekar_lines(records))
    return tmp_path


def test_ekar_without_any_labelled_split_gives_reason(tmp_path: Path) -> None:
    with pytest.raises(TaskDataMissing, match="no E-KAR split with answers.*validation.json not found"):
        get_task("ekar_zh", tmp_path).load()


def test_ekar_reader_on_upstream_format(tmp_path: Path) -> None:
    root = _ekar_root(tmp_path, {"test.json": [_ekar_record(i) for i in range(3)], "train.json": [_ekar_record(9, "A")]})
    task = get_task("analogical", root)
    items = task.load()
    assert len(items) == 3 and items[0].gold == (2,) and items[0].choices[2] == "人才:学校:企业"
    assert task.fewshot_pool()[0].gold == (0,)
    assert task.paper_pair(items[0], 2) == ("根据推理关系:茶:茶壶:茶杯\n可以得到类比推理关系为：", "人才:学校:企业")
    as_array = tmp_path / "array.json"
    as_array.write_text(json.dumps([_ekar_record(0)], ensure_ascii=False), encoding="utf-8")
    assert len(read_ekar(as_array)) == 1


def test_ekar_evaluates_validation_when_test_answers_are_absent(tmp_path: Path) -> None:
    validation, train = _bundled_ekar("validation.json"), _bundled_ekar("train.json")
    blind = [dict(r, answerKey="", explanation=[""] * 5, relation=[]) for r in validation[:5]]
    root = _ekar_root(tmp_path, {"validation.json": validation, "train.json": train, "test_blind.json": blind,
                                 "test_easy_blind.json": blind})
    task = get_task("ekar_zh", root)
    items = task.load()
    assert task.split.name == "validation" and task.split.source == "validation.json" and len(items) == 100
    assert [it.meta["id"] for it in items] == [r["id"] for r in validation]
    assert items[0].gold == ("ABCD".index(validation[0]["answerKey"]),)
    assert any("test_blind.json, test_easy_blind.json: blind" in n for n in task.notes)
    assert [p.name for p in task.files()] == ["validation.json", "train.json"]  # the blind files are not read
    assert [it.meta["id"] for it in task.fewshot_pool()] == [r["id"] for r in train]


def test_ekar_evaluates_test_when_test_json_has_its_answers(tmp_path: Path) -> None:
    validation = _bundled_ekar("validation.json")
    test = validation[:30]  # the later test.json has the same record format, answer keys filled
    root = _ekar_root(tmp_path, {"validation.json": validation, "test.json": test, "train.json": _bundled_ekar("train.json")})
    task = get_task("ekar_zh", root)
    items = task.load()
    assert task.split.name == "test" and task.split.source == "test.json" and len(items) == 30
    assert [it.gold for it in items] == [("ABCD".index(r["answerKey"]),) for r in test]
    assert task.notes == [] and [p.name for p in task.files()] == ["test.json", "train.json"]


def test_ekar_blind_test_json_is_never_scored(tmp_path: Path) -> None:
    """A test.json whose answer keys are all empty (the first release's test split) is treated as blind:
    validation is evaluated and the note says why; without validation the reason names both."""
    validation = _bundled_ekar("validation.json")
    blind = [dict(r, answerKey="") for r in validation[:10]]
    root = _ekar_root(tmp_path, {"validation.json": validation, "test.json": blind})
    task = get_task("ekar_zh", root)
    assert len(task.load()) == 100 and task.split.name == "validation"
    assert any("test.json: every answer key is empty" in n for n in task.notes)
    with pytest.raises(BlindFile, match=r"test.json: every record's 'answerKey' is empty"):
        read_ekar(root / "ekar_chinese" / "test.json")
    (root / "ekar_chinese" / "validation.json").unlink()
    with pytest.raises(TaskDataMissing, match="validation.json not found, test.json is blind"):
        get_task("ekar_zh", root).load()


def test_ekar_partly_keyed_file_is_an_error_naming_the_line(tmp_path: Path) -> None:
    root = _ekar_root(tmp_path, {"test.json": [_ekar_record(0), _ekar_record(1, ""), _ekar_record(2, "")]})
    with pytest.raises(DataError, match=r"test.json:2: field 'answerKey' missing or empty \(2 of 3 records\)"):
        get_task("ekar_zh", root).load()
    root = _ekar_root(tmp_path, {"test.json": [_ekar_record(0, "E")]})
    with pytest.raises(DataError, match=r"test.json:1: field 'answerKey' is 'E', not one of A, B, C, D"):
        get_task("ekar_zh", root).load()


def _sqa_root(tmp_path: Path, name: str, rewrite) -> Path:
    src = bundled("eval", "scienceqa")
    problems = json.loads((src / "problems.json").read_text(encoding="utf-8"))
    root = tmp_path / name / "scienceqa"
    root.mkdir(parents=True)
    (root / "problems.json").write_text(json.dumps({pid: rewrite(p) for pid, p in problems.items()}, ensure_ascii=False, indent=1),
                                        encoding="utf-8")
    (root / "pid_splits.json").write_bytes((src / "pid_splits.json").read_bytes())
    return root.parent


def test_scienceqa_reads_only_question_choices_answer_hint_image(tmp_path: Path) -> None:
    """The staged copy's lecture/solution texts were rewritten: a file with other lecture and solution
    texts (and the remaining fields dropped) must give the same items and the same prompts."""
    trusted = ("question", "choices", "answer", "hint", "image")
    as_is = get_task("scienceqa", _sqa_root(tmp_path, "as_is", lambda p: p))
    rewritten = get_task("scienceqa", _sqa_root(tmp_path, "rewritten", lambda p: {
        **{k: p[k] for k in trusted}, "lecture": "A REWRITTEN LECTURE.", "solution": "A REWRITTEN SOLUTION."}))
    a, b = as_is.load(), rewritten.load()
    assert len(a) == 194 and a == b
    assert [(x.meta["pid"], x.meta["hint"]) for x in a] == [(x.meta["pid"], x.meta["hint"]) for x in b]
    assert as_is.fewshot_pool() == rewritten.fewshot_pool()
    for protocol in ("paper", "lm-eval"):
        pick_a, pick_b = exemplar_picker(as_is, a, 2, 0), exemplar_picker(rewritten, b, 2, 0)
        assert [choice_requests(as_is, x, protocol, pick_a(x)) for x in a] == \
            [choice_requests(rewritten, x, protocol, pick_b(x)) for x in b]
    hinted = next(x for x in a if x.meta["hint"])
    context, span = as_is.paper_pair(hinted, 0)
    assert context.startswith(f"Context:{hinted.meta['hint']}\n anwser：") and span == hinted.question
    assert "REWRITTEN" not in context


def test_shared_full_copy_reads_unchanged() -> None:
    shared = shared_data("eval")
    if shared is None:
        pytest.skip(f"the full shared data is absent (../shared/data beside the repository, or ${SHARED_DATA_ENV})")
    task = get_task("scienceqa", shared)
    assert len(task.load()) == 194
    assert any("not in problems.json" in n for n in task.notes)
    ekar = get_task("ekar_zh", shared)
    assert len(ekar.load()) == 165 and ekar.split.name == "validation" and len(ekar.fewshot_pool()) == 1155
    assert bundled("eval").is_dir()


def test_sanitized_mbpp_copy_gets_its_lost_test_imports_back_and_says_so() -> None:
    from codestage.eval.sandbox import Job, run_many

    task = get_task("mbpp_sanitized")
    items = {it.meta["task_id"]: it for it in task.load()}
    assert items[98].test_setup == "import math" and "math.isclose" in items[98].tests[0]
    assert items[596].test_setup.startswith("import sys")
    assert any("import math for task ids" in n and "98" in n for n in task.notes)
    assert items[11].test_setup == ""  # nothing added where the tests need nothing
    chosen = [items[i] for i in (98, 124, 596, 11)]
    results = run_many([Job(it.reference, it.tests, it.test_setup) for it in chosen])
    assert [r.passed for r in results] == [True, True, True, True]
