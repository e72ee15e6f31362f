"""A step's outputs are checked before reuse (study/manifest.py, Study.verdict): a damaged step is
shown as such and redone, with what depends on it when its redone outputs differ; a marker from
before manifests is reused as unverified; the evaluation's key follows its data files."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from codestage.config import load_config
from codestage.resources import DATA_DIR
from codestage.study import manifest
from codestage.study.runner import MARKER, Step, Study
from test_study_execute import micro_study


def _flip(path: Path, offset: int, *, keep_mtime: bool = False) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    if keep_mtime:  # bits that rot in place: no write through the file system
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_small_files_are_hashed_in_full(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "results.json").write_text('{"a": 1}')
    (tmp_path / "sub" / "items.jsonl").write_text('{"x": 1}\n{"x": 2}\n')
    (tmp_path / ".key").write_text("bookkeeping, not recorded")
    files = manifest.record(tmp_path)
    assert [f["path"] for f in files] == ["results.json", "sub/items.jsonl"]
    assert manifest.check(tmp_path, files).problem is None

    (tmp_path / "results.json").write_text('{"a": 2}')  # same size, other bytes
    assert manifest.check(tmp_path, files).problem == "results.json: content differs (sha256)"
    (tmp_path / "results.json").write_text('{"a"')
    assert manifest.check(tmp_path, files).problem == "results.json: size 4 != 8 recorded"
    (tmp_path / "results.json").unlink()
    assert manifest.check(tmp_path, files).problem == "results.json: missing"
    (tmp_path / "results.json").mkdir()
    assert manifest.check(tmp_path, files).problem == "results.json: not a file"


def test_big_files_are_sampled_and_the_full_check_finds_rot(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(manifest, "FULL_CHECK_BYTES", 4096)
    monkeypatch.setattr(manifest, "SAMPLE_BYTES", 512)
    big = tmp_path / "tokens.bin"
    big.write_bytes(bytes(range(256)) * 256)  # 64 KiB: head, middle and tail samples leave most unread
    files = manifest.record(tmp_path)
    assert "sample" in files[0] and manifest.check(tmp_path, files).problem is None

    _flip(big, 10)  # in the sampled head
    assert manifest.check(tmp_path, files).problem == "tokens.bin: content differs (sampled digest)"
    _flip(big, 10)
    _flip(big, 10_000)  # outside the samples, written through the file system: its mtime moved
    assert manifest.check(tmp_path, files).problem == "tokens.bin: content differs (sha256, modified since the step ran)"
    big.write_bytes(bytes(range(256)) * 256)
    _flip(big, 10_000, keep_mtime=True)  # rot in place with the recorded mtime: only the full check sees it
    os.utime(big, ns=(files[0]["mtime_ns"], files[0]["mtime_ns"]))
    assert manifest.check(tmp_path, files).problem is None
    assert manifest.check(tmp_path, files, full=True).problem == "tokens.bin: content differs (sha256)"

    big.write_bytes(bytes(range(256)) * 256)  # rewritten with the same bytes: passes, new mtime to record
    result = manifest.check(tmp_path, files)
    assert result.problem is None and result.touched == {"tokens.bin": big.stat().st_mtime_ns}


def test_logs_are_checked_but_left_out_of_the_content_digest(tmp_path) -> None:
    (tmp_path / "model.bin").write_bytes(b"weights")
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "seconds": 0.5}\n')
    before = manifest.record(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "seconds": 0.7}\n')  # a rerun's other timings
    after = manifest.record(tmp_path)
    assert manifest.check(tmp_path, before).problem == "metrics.jsonl: content differs (sha256)"
    assert manifest.content_digest(before) == manifest.content_digest(after)
    (tmp_path / "model.bin").write_bytes(b"other weights")
    assert manifest.content_digest(manifest.record(tmp_path)) != manifest.content_digest(after)


def _chain(study: Study, tmp: Path, outputs: dict[str, str]) -> tuple[Step, Step, list[str]]:
    """Two real steps, `up` -> `down`: up writes `outputs["up"]` to out.txt, down copies it with a
    suffix. Returns both and the list of names in the order they ran."""
    ran: list[str] = []

    def up(folder: Path) -> None:
        ran.append("up")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "out.txt").write_text(outputs["up"])

    def down(folder: Path) -> None:
        ran.append("down")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "out.txt").write_text((tmp / "up" / "out.txt").read_text() + " + down")

    a = Step("up", tmp / "up", "ka", up, resumable=False)
    b = Step("down", tmp / "down", "kb", down, deps=("up",), resumable=False)
    study.steps.update({"up": a, "down": b})
    return a, b, ran


def _study(tmp_path: Path) -> tuple[Study, io.StringIO]:
    said = io.StringIO()
    study = Study(load_config(micro_study(tmp_path)), tmp_path / "out", progress=False,
                  console=Console(file=said, width=200))
    return study, said


def test_a_damaged_step_is_shown_redone_and_its_dependants_follow_its_new_outputs(tmp_path) -> None:
    study, said = _study(tmp_path)
    outputs = {"up": "v1"}
    up, down, ran = _chain(study, tmp_path, outputs)
    study.execute("up"), study.execute("down")
    assert [study.state("up"), study.state("down")] == ["up to date", "up to date"]

    (up.out / "out.txt").write_text("v")  # truncated
    assert study.state("up") == "damaged: out.txt: size 1 != 2 recorded"
    assert study.state("down") == "up to date, unless up (redone first) comes out different"
    assert study.execute("up").status == "ran"
    assert "✗ up: damaged (out.txt: size 1 != 2 recorded), redoing" in said.getvalue()
    assert study.execute("down").status == "up_to_date"  # redone to the same bytes: down still holds
    assert ran == ["up", "down", "up"]

    outputs["up"] = "v2"  # a redo that comes out different (a non-deterministic step)
    (up.out / "out.txt").unlink()
    assert study.state("up") == "damaged: out.txt: missing"
    assert study.execute("up").status == "ran"
    assert study.state("down") == "outdated: up was redone since, with other outputs"
    assert study.execute("down").status == "ran" and (down.out / "out.txt").read_text() == "v2 + down"
    assert "✗ down: outdated (up was redone since, with other outputs), redoing" in said.getvalue()
    assert [study.state("up"), study.state("down")] == ["up to date", "up to date"]


def test_an_unreadable_marker_is_damage_not_a_traceback(tmp_path) -> None:
    study, _ = _study(tmp_path)
    up, _, ran = _chain(study, tmp_path, {"up": "v1"})
    study.execute("up")
    (up.out / MARKER).write_text('{"key": "ka", "fi')
    assert study.state("up").startswith("damaged: .step.json: unreadable (")
    assert study.execute("up").status == "ran" and ran == ["up", "up"]
    (up.out / MARKER).write_text("[]")
    assert study.state("up") == "damaged: .step.json: not a JSON object"


def test_a_marker_from_before_manifests_is_reused_unverified_and_then_recorded(tmp_path) -> None:
    study, said = _study(tmp_path)
    up, _, ran = _chain(study, tmp_path, {"up": "v1"})
    (up.out / "sub").mkdir(parents=True)
    (up.out / "sub" / "scores.json").write_text('{"score": 1}')
    (up.out / "out.txt").write_text("v1")
    (up.out / MARKER).write_text(json.dumps({"key": "ka", "step": "up", "seconds": 1.0}))  # the old marker
    assert study.state("up") == "up to date (unverified: its marker predates manifests)"
    assert study.execute("up").status == "up_to_date" and ran == []
    assert "✓ up: up to date (an older marker: structure checked, manifest recorded)" in said.getvalue()
    marker = json.loads((up.out / MARKER).read_text())
    assert [f["path"] for f in marker["files"]] == ["out.txt", "sub/scores.json"] and marker["seconds"] == 1.0
    assert study.state("up") == "up to date"

    # an old marker over a file that does not parse: damaged, though there is no manifest to compare
    (up.out / MARKER).write_text(json.dumps({"key": "ka", "step": "up"}))
    (up.out / "sub" / "scores.json").write_text('{"score":')
    assert study.state("up").startswith("damaged: sub/scores.json: not valid JSON (")
    assert study.execute("up").status == "ran" and ran == ["up"]


def test_an_old_folder_shows_a_truncated_or_deleted_output_by_its_structure(tmp_path, micro_model_dir) -> None:
    folder = tmp_path / "model"
    shutil.copytree(micro_model_dir, folder)
    assert manifest.structural_problem(folder) is None
    with open(folder / "model.safetensors", "r+b") as f:
        f.truncate(f.seek(0, 2) // 2)
    problem = manifest.structural_problem(folder)
    assert problem is not None and problem.startswith("model.safetensors: not a readable safetensors file")
    (folder / "model.safetensors").unlink()
    assert manifest.structural_problem(folder) == "model.safetensors: missing (written with config.json)"

    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    (evaluation / "results.json").write_text("{}")
    assert manifest.structural_problem(evaluation) == "items.jsonl: missing (written with results.json)"
    (evaluation / "items.jsonl").write_text('{"task": "cosqa"}\n{"task"\n')
    assert manifest.structural_problem(evaluation).startswith("items.jsonl:2: not valid JSON (")


def test_an_evaluation_is_outdated_when_its_data_changes_and_an_old_one_is_kept(tmp_path) -> None:
    data = tmp_path / "evaldata"
    shutil.copytree(DATA_DIR / "eval" / "cosqa", data / "cosqa")
    config = micro_study(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg["eval"] = {"tasks": ["cosqa"], "data_dir": str(data)}
    config.write_text(yaml.safe_dump(cfg))
    ran: list[str] = []

    def study() -> Study:
        s = Study(load_config(config), tmp_path / "out", progress=False, console=Console(file=io.StringIO()))
        s.steps["eval/NL"].action = evaluate  # the step's own action needs a trained model; this one writes its files
        return s

    def evaluate(folder: Path) -> None:
        ran.append("eval/NL")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "results.json").write_text("{}")
        (folder / "items.jsonl").write_text("")

    assert study().execute("eval/NL").status == "ran"
    marker = json.loads((tmp_path / "out" / "eval" / "NL" / MARKER).read_text())
    assert list(marker["inputs"]) == ["cosqa/cosqa-dev.json"] and study().verdict("eval/NL").describe() == "up to date"
    key = study().steps["eval/NL"].key
    with open(data / "cosqa" / "cosqa-dev.json", "a", encoding="utf-8") as f:
        f.write("\n")  # another revision of the evaluation data
    assert study().steps["eval/NL"].key == key  # the same step, so an evaluation from before is kept...
    assert study().verdict("eval/NL").describe() == "outdated: cosqa/cosqa-dev.json changed since it ran"  # ...but not reused
    assert study().execute("eval/NL").status == "ran" and ran == ["eval/NL", "eval/NL"]
    assert study().verdict("eval/NL").describe() == "up to date"

    del marker["inputs"], marker["files"], marker["deps"]  # a marker from before: reused, then recorded
    (tmp_path / "out" / "eval" / "NL" / MARKER).write_text(json.dumps(marker))
    assert study().execute("eval/NL").status == "up_to_date" and "inputs" in json.loads(
        (tmp_path / "out" / "eval" / "NL" / MARKER).read_text())


@pytest.mark.parametrize("verify", ["quick", "full"])
def test_plan_names_the_damaged_file_on_the_command_line(tmp_path, cli_run, monkeypatch, verify) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # plan's table on one line per step
    config = micro_study(tmp_path)
    out = tmp_path / "out"
    code, msg = cli_run("run", config, "--out", out, "--quiet", "--only", "tokenizer")
    assert code == 0, msg[-2000:]
    (out / "tokenizer" / "tokenizer.json").write_text("{")
    code, msg = cli_run("plan", config, "--out", out, "--verify", verify)
    assert code == 0 and "damaged: tokenizer.json: size 1 !=" in msg, msg[-2000:]
    code, msg = cli_run("run", config, "--out", out, "--quiet", "--only", "tokenizer", "--verify", verify)
    assert code == 0 and "✗ tokenizer: damaged (tokenizer.json: size 1 !=" in msg, msg[-2000:]
    code, msg = cli_run("plan", config, "--out", out, "--verify", "everything")
    assert code == 2 and "'everything': use quick or full" in msg
