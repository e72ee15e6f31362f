"""Item identity: every item carries its upstream id and a hash of its text; duplicates are refused
or (lenient) scored once and reported; `compare` pairs by identity and refuses different items."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from codestage.errors import DataError
from codestage.eval.compare import compare
from codestage.eval.harness import evaluate, load_scorer
from codestage.eval.identity import item_hash
from codestage.eval.registry import get_task
from codestage.resources import bundled
from codestage.results import Comparison




def test_items_files_carry_the_upstream_id_and_the_text_hash(tmp_path: Path, micro_model_dir: Path) -> None:
    scorer = load_scorer(micro_model_dir, device="cpu", batch_size=8)
    evaluate(micro_model_dir, ["ceval_logic", "logiqa_en", "cosqa", "scienceqa", "mbpp"], tmp_path, limit=2, scorer=scorer,
             max_new_tokens=4, execute=False)
    lines = [json.loads(x) for x in (tmp_path / "items.jsonl").read_text().splitlines()]
    by_task: dict[str, list[dict]] = {}
    for rec in lines:
        assert list(rec)[:4] == ["task", "doc_id", "item_id", "item_hash"] and len(rec["item_hash"]) == 64
        by_task.setdefault(rec["task"], []).append(rec)
    for name, recs in by_task.items():
        items = get_task(name).load()[:2]
        assert [r["item_hash"] for r in recs] == [item_hash(it) for it in items]
    assert [r["item_id"] for r in by_task["logiqa_en"]] == [None, None]  # AGIEval packaging: no upstream id
    assert [r["item_id"] for r in by_task["mbpp"]] == ["11", "12"]
    upstream = {"ceval_logic": "id", "cosqa": "idx", "scienceqa": "pid"}
    for name, key in upstream.items():
        assert [r["item_id"] for r in by_task[name]] == [str(it.meta[key]) for it in get_task(name).load()[:2]]


def test_the_hash_ignores_order_spacing_and_answers_but_not_the_question(tmp_path: Path) -> None:
    src = bundled("eval", "logiqa", "logiqa-en.jsonl").read_text(encoding="utf-8").splitlines()[:5]
    recs = [json.loads(x) for x in src]
    recs[0]["question"] = "  " + recs[0]["question"].replace(" ", "   ") + "\n"  # re-spaced
    recs[1]["label"] = "D" if recs[1]["label"] != "D" else "A"  # another answer key
    recs[2]["question"] += " Really?"  # another question
    (tmp_path / "logiqa").mkdir()
    (tmp_path / "logiqa" / "logiqa-en.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reversed(recs)))
    original = [item_hash(it) for it in get_task("logiqa_en").load()[:5]]
    copy = [item_hash(it) for it in get_task("logiqa_en", tmp_path).load()][::-1]
    assert copy[0] == original[0] and copy[1] == original[1] and copy[2] != original[2] and copy[3:] == original[3:]


def _logiqa(folder: Path, lines: list[str]) -> Path:
    (folder / "logiqa").mkdir(parents=True, exist_ok=True)
    (folder / "logiqa" / "logiqa-en.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return folder / "logiqa" / "logiqa-en.jsonl"


def test_duplicate_records_are_an_error_naming_both_lines_or_scored_once_when_lenient(tmp_path: Path) -> None:
    src = bundled("eval", "logiqa", "logiqa-en.jsonl").read_text(encoding="utf-8").splitlines()
    path = _logiqa(tmp_path, [src[0], src[1], src[0], src[2], src[1]])
    with pytest.raises(DataError, match=rf"{path}:3: the same item as line 1 .*--lenient"):
        get_task("logiqa_en", tmp_path).load_items()
    task = get_task("logiqa_en", tmp_path)
    items = task.load_items(lenient=True)
    assert [it.meta["line"] for it in items] == [1, 2, 4]
    assert task.notes == ["2 duplicate record(s) in logiqa-en.jsonl skipped (lenient; each scored once): "
                          "logiqa-en.jsonl:3 = line 1; logiqa-en.jsonl:5 = line 2"]
    other = json.loads(src[0])
    other["label"] = "B" if other["label"] != "B" else "C"
    path = _logiqa(tmp_path, [src[0], json.dumps(other)])
    for lenient in (False, True):  # a conflicting duplicate is never resolved by guessing
        with pytest.raises(DataError, match=rf"{path}:2: the same question and choices as line 1 but a different answer"):
            get_task("logiqa_en", tmp_path).load_items(lenient=lenient)


def test_one_upstream_id_for_two_questions_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "ceval_logic").mkdir()
    rows = ["id,question,A,B,C,D,answer", "0,First?,a,b,c,d,A", "1,Second?,a,b,c,d,B", "0,Third?,a,b,c,d,C"]
    (tmp_path / "ceval_logic" / "logic_val.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"logic_val.csv:4: id '0' is also the id of line 2, a different question"):
        get_task("ceval_logic", tmp_path).load_items(lenient=True)


def _mbpp(folder: Path, ids: list[int]) -> None:
    (folder / "mbpp").mkdir(parents=True, exist_ok=True)
    rows = [{"text": f"Return x ({i}).", "code": "def f(x):\n    return x\n", "task_id": i, "test_setup_code": "",
             "test_list": [f"assert f({i}) == {i}"], "challenge_test_list": []} for i in ids]
    (folder / "mbpp" / "mbpp.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_eval_cli_refuses_duplicates_and_reports_the_lenient_skip_at_the_end(tmp_path, cli_run) -> None:
    _mbpp(tmp_path / "data", [11, 12, 11, 13])
    args = ["eval", "--tasks", "mbpp", "--check-references", "--data-dir", tmp_path / "data", "--quiet"]
    code, msg = cli_run(*args, "--out", tmp_path / "strict")
    assert code == 2 and "mbpp.jsonl:3:" in msg.replace(" ", "") and "the same item as line 1" in msg
    assert not (tmp_path / "strict").exists()
    code, msg = cli_run(*args, "--out", tmp_path / "lenient", "--lenient")
    assert code == 0, msg
    warnings = msg[msg.index("warnings"):]
    assert "mbpp: 1 duplicate record(s) in mbpp.jsonl skipped (lenient; each scored once): mbpp.jsonl:3 = line 1" in warnings, warnings
    res = json.loads((tmp_path / "lenient" / "results.json").read_text())
    assert res["lenient"] is True and res["tasks"]["mbpp"]["n"] == 3 and "duplicate" in res["tasks"]["mbpp"]["notes"][0]


def test_the_end_of_eval_names_subsamples_limits_missing_data_and_repairs(tmp_path, cli_run, micro_model_dir) -> None:
    import shutil

    data = tmp_path / "data"  # the bundled MBPP files only: E-KAR is missing here
    shutil.copytree(bundled("eval", "mbpp"), data / "mbpp")
    code, msg = cli_run("eval", "--model", micro_model_dir, "--tasks", "mbpp_sanitized,ekar_zh", "--data-dir", data,
                        "--check-references", "--limit", "2", "--out", tmp_path / "out", "--quiet")
    assert code == 0, msg
    warnings = msg[msg.index("warnings"):]
    assert "only the first 2 items of: mbpp_sanitized" in warnings
    assert "ekar_zh: not evaluated: ekar_zh: no E-KAR split with answers" in warnings
    assert "mbpp_sanitized: test imports restored" in warnings
    code, msg = cli_run("eval", "--model", micro_model_dir, "--tasks", "ekar_zh", "--limit", "2", "--out", tmp_path / "ekar", "--quiet")
    assert code == 0, msg  # the bundled E-KAR slice: validation, said at the end
    assert "ekar_zh: test answers not present: validation evaluated" in msg[msg.index("warnings"):]


# ------------------------------------------------------------------ compare


def _items(path: Path, rows: list[dict], task: str = "cosqa") -> Path:
    path.write_text("".join(json.dumps({"task": task, **r}) + "\n" for r in rows))
    return path


def _rows(n: int, seed: int, *, ids: bool = True, hashes: bool = True) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = {"doc_id": i, "gold": [i % 2], "correct": rng.random() < 0.6, "margin": rng.uniform(-1, 1)}
        if hashes:
            row = {"doc_id": i, "item_id": f"dev-{i}" if ids else None, "item_hash": f"{i:064x}", **row}
        rows.append(row)
    return rows


def _strip(result: Comparison) -> dict:
    return {k: v for k, v in result.to_json().items() if k not in ("a", "b")}


def test_compare_pairs_by_identity_so_a_reordered_file_gives_the_same_answer(tmp_path: Path) -> None:
    a, b = _rows(40, 1), _rows(40, 2)
    base = compare(_items(tmp_path / "a.jsonl", a), _items(tmp_path / "b.jsonl", b), seed=3)
    shuffled = random.Random(0).sample(b, len(b))
    for j, row in enumerate(shuffled):
        row["doc_id"] = j  # another file order: positions differ, identities do not
    again = compare(_items(tmp_path / "a.jsonl", a), _items(tmp_path / "b2.jsonl", shuffled), seed=3)
    assert _strip(again) == _strip(base) and base.tasks["cosqa"].paired_by == "item_hash"
    assert base.tasks["cosqa"].n == 40 and base.notes == []


def test_compare_refuses_different_items_naming_the_task_and_counts_or_compares_the_common_ones(tmp_path, cli_run) -> None:
    a, b = _rows(40, 1), _rows(40, 2)
    b[5]["item_hash"] = "f" * 64  # another question
    b[7]["gold"] = [1 - b[7]["gold"][0]]  # another answer key
    b[9]["item_id"] = "dev-999"  # another upstream id
    fa, fb = _items(tmp_path / "a.jsonl", a), _items(tmp_path / "b.jsonl", b)
    with pytest.raises(DataError, match=r"task cosqa: the two sides are not the same items: 4 differ \(1 only in A, 1 only in B, "
                                        r"2 with a different answer or id; 37 in common\); pass --common-only"):
        compare(fa, fb)
    out = compare(fa, fb, common_only=True)
    assert out.tasks["cosqa"].n == 37 and out.tasks["cosqa"].conflicting == 2
    code, msg = cli_run("compare", fa, fb)
    assert code == 2 and "task cosqa" in msg and "4 differ" in msg
    code, msg = cli_run("compare", fa, fb, "--common-only", "--json", tmp_path / "cmp.json")
    assert code == 0 and "warnings" in msg and "cosqa: compared the 37 items common to both sides; left out 1 only in A" in msg
    assert json.loads((tmp_path / "cmp.json").read_text())["common_only"] is True


def test_compare_names_a_repeated_item_in_one_file(tmp_path: Path) -> None:
    a = _rows(10, 1)
    dup = _items(tmp_path / "b.jsonl", a + [{**a[3], "doc_id": 10}])
    with pytest.raises(DataError, match=r"b.jsonl:11: task cosqa: the same item \(item_hash '0+3'\) as line 4"):
        compare(_items(tmp_path / "a.jsonl", a), dup)


def test_old_items_files_pair_by_position_only_when_the_gold_answers_agree(tmp_path: Path) -> None:
    a, b = _rows(30, 1, hashes=False), _rows(30, 2, hashes=False)
    out = compare(_items(tmp_path / "a.jsonl", a), _items(tmp_path / "b.jsonl", b))
    assert out.tasks["cosqa"].paired_by == "doc_id" and out.tasks["cosqa"].n == 30
    assert out.notes == ["cosqa: paired by position (items files without item_hash, from an older codestage); "
                            "the gold answers agree item for item"]
    b[4]["gold"] = [1 - b[4]["gold"][0]]
    for common_only in (False, True):
        with pytest.raises(DataError, match=r"task cosqa: these items files carry no item_hash .* 1 with a different gold answer\); "
                                            "re-evaluate both runs"):
            compare(_items(tmp_path / "a.jsonl", a), _items(tmp_path / "b.jsonl", b), common_only=common_only)


def test_tasks_in_only_one_run_are_reported_in_the_notes(tmp_path: Path) -> None:
    a = _items(tmp_path / "a.jsonl", _rows(10, 1))
    b = tmp_path / "b.jsonl"
    b.write_text(a.read_text() + "".join(json.dumps({"task": "logiqa_en", **r}) + "\n" for r in _rows(5, 2)))
    out = compare(a, b)
    assert out.unpaired_tasks == ["logiqa_en"] and out.notes == ["tasks in only one side (not compared): logiqa_en"]
