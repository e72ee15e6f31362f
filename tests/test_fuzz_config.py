"""The config loader under fuzzed YAML: a ConfigError naming the file, or a config that serializes.

Three families: the embedded demo config with one value replaced by random data, one key removed
or one unknown key added (wrong types, out-of-range numbers, NaN, huge strings); raw bytes and
text (invalid UTF-8, malformed YAML); and hand-picked hostile YAML (deep nesting, Python tags,
recursive aliases, duplicate keys, binary scalars, a directory given as the file). A config that
loads holds none of the refused classes (non-finite numbers, empty path lists, a warm-up as long as
the run, booleans as integers); each class also has hand-written cases naming their field.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codestage.config import config_to_dict, load_config
from codestage.errors import ConfigError
from codestage.resources import DATA_DIR

FUZZ = settings(derandomize=True, max_examples=150, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
DEMO = yaml.safe_load((DATA_DIR.parent / "demo.yaml").read_text(encoding="utf-8"))
TEXT = st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
                 st.sampled_from(["", "2:1", "text_only", "\u2028", "x" * 200_000, "NaN", "null", "~", "-1"]))
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False), TEXT)
JUNK = st.recursive(SCALAR, lambda c: st.lists(c, max_size=3) | st.dictionaries(TEXT, c, max_size=3), max_leaves=8)


def _paths(obj, prefix=()):
    """Every key path into the nested mapping (lists are indexed)."""
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(DEMO)


def _numbers(obj, where=""):
    """(key path, value) of every number in plain data."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{where}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield where, obj


def _check(path: Path) -> None:
    """The property: a ConfigError naming the file, or a config that round-trips to strict JSON and
    holds no value of the refused classes (non-finite numbers, empty path lists, a warm-up as long
    as the run, a boolean where an integer belongs)."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        assert str(path) in str(exc), str(exc)[:300]
        return
    data = config_to_dict(cfg)
    json.dumps(data, allow_nan=False)
    assert all(math.isfinite(v) for _, v in _numbers(data))
    for train in (cfg.pretrain.train, cfg.instruct.train):
        assert train.warmup_steps < train.steps and type(train.steps) is int and type(train.batch_size) is int
    for section in (*cfg.sources.values(), *cfg.instruct.sets.values(), *cfg.eval.heldout.values()):
        assert section.paths and all(p.strip() for p in section.paths)


@st.composite
def mutated_demo(draw) -> str:
    data = json.loads(json.dumps(DEMO))
    where = draw(st.sampled_from(PATHS))
    parent = data
    for key in where[:-1]:
        parent = parent[key]
    action = draw(st.sampled_from(["replace", "replace", "delete", "add_key"]))
    if action == "replace":
        parent[where[-1]] = draw(JUNK)
    elif action == "delete":
        del parent[where[-1]]
    else:
        target = parent[where[-1]] if isinstance(parent[where[-1]], dict) else parent
        if isinstance(target, dict):
            target[draw(TEXT)] = draw(JUNK)
    return yaml.safe_dump(data, allow_unicode=draw(st.booleans()), sort_keys=False)


@FUZZ
@given(mutated_demo())
def test_a_mutated_demo_config_loads_or_names_the_file(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "study.yaml"
        path.write_text(text, encoding="utf-8")
        _check(path)


@FUZZ
@given(st.one_of(st.binary(max_size=400), st.text(max_size=400).map(lambda t: t.encode("utf-8", "surrogatepass")),
                 st.tuples(st.sampled_from(["name: x\nsources:\n  a: {paths: [x]}\n", ""]), st.binary(max_size=60))
                 .map(lambda p: p[0].encode() + p[1])))
def test_raw_bytes_load_or_name_the_file(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "study.yaml"
        path.write_bytes(raw)
        _check(path)


HOSTILE = {
    "deep_flow": "sources: " + "[" * 5000 + "]" * 5000,
    "deep_block": "sources:\n" + "".join("  " * i + f"k{i}:\n" for i in range(3000)),
    "deep_mapping": "a: " + "{b: " * 3000 + "1" + "}" * 3000,
    "python_tag": "sources: !!python/object/apply:os.system ['true']\n",
    "recursive_alias": "sources: &a\n  x: *a\n",
    "recursive_alias_in_overrides": "sources: {s: {paths: [x]}}\nmodel: {overrides: &a {x: *a}}\n",
    "alias_bomb": "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                  "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
    "duplicate_keys": "name: a\nname: b\nsources: {s: {paths: [x]}}\n",
    "binary_scalar": "sources: {s: {paths: [x]}}\nmodel: {overrides: {blob: !!binary /w==}}\n",
    "date_values": "sources: {s: {paths: [2024-01-01]}}\nname: 2024-01-01\n",
    "complex_key": "? [a, b]\n: 1\n",
    "tabs": "sources:\n\t- x\n",
    "multi_document": "name: a\n---\nname: b\n",
    "nan_and_inf": "sources: {s: {paths: [x], weight: .nan}}\npretrain: {train: {lr: .inf}}\n",
    "huge_int": "sources: {s: {paths: [x]}}\nseed: " + "9" * 5000 + "\n",
    "bom": "\ufeffsources: {s: {paths: [x]}}\n",
    "only_comment": "# nothing\n",
    "top_level_list": "- sources\n",
    "null_sources": "sources:\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_yaml_loads_or_names_the_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(HOSTILE[name], encoding="utf-8")
    _check(path)


def test_a_directory_or_missing_file_is_a_config_error(tmp_path: Path) -> None:
    for path in (tmp_path, tmp_path / "absent.yaml"):
        with pytest.raises(ConfigError, match=str(path).replace("\\", "\\\\")):
            load_config(path)


def test_nan_weight_is_rejected_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("sources: {s: {paths: [x], weight: .nan}}\n")
    with pytest.raises(ConfigError, match="weight"):
        load_config(path)


# Values of the refused classes: each is a ConfigError naming the file, the line or field, and the value.
BASE = "sources: {s: {paths: [x]}}\n"
REFUSED = {
    "duplicate_top_level_key": ("sources: {s: {paths: [x]}}\nmodel: {preset: tiny}\nname: a\nmodel: {preset: micro}\n",
                                ":4: malformed YAML (duplicate key 'model' (also on line 2"),
    "duplicate_nested_key": (BASE + "pretrain:\n  train:\n    steps: 10\n    steps: 20\n", ":5: malformed YAML (duplicate key 'steps'"),
    "duplicate_source_name": ("sources:\n  s: {paths: [x]}\n  s: {paths: [y]}\n", ":3: malformed YAML (duplicate key 's'"),
    "nan_weight": ("sources: {s: {paths: [x], weight: .nan}}\n", "sources.s.weight: nan is not a finite number"),
    "inf_lr": (BASE + "pretrain: {train: {lr: .inf}}\n", "pretrain.train.lr: inf is not a finite number"),
    "nan_in_overrides": (BASE + "model: {overrides: {rope_theta: -.inf}}\n", "model.overrides.rope_theta: -inf is not a finite"),
    "nan_as_string": (BASE + "pretrain: {train: {lr: nan}}\n", "pretrain.train.lr"),
    "empty_paths": ("sources: {s: {paths: []}}\n", "sources.s.paths: List should have at least 1 item"),
    "blank_path": ("sources: {s: {paths: ['  ']}}\n", "sources.s.paths.0"),
    "empty_instruct_paths": (BASE + "instruct: {sets: {a: {paths: []}}}\n", "instruct.sets.a.paths"),
    "empty_heldout_paths": (BASE + "eval: {heldout: {h: {paths: []}}}\n", "eval.heldout.h.paths"),
    "empty_eval_tasks": (BASE + "eval: {tasks: []}\n", "eval.tasks"),
    "empty_languages": ("sources: {s: {paths: [x], languages: []}}\n", "sources.s.languages"),
    "steps_true": (BASE + "pretrain: {train: {steps: true}}\n", "pretrain.train.steps: Input should be a valid integer"),
    "batch_size_false": (BASE + "instruct: {train: {batch_size: false, steps: 100}}\n", "instruct.train.batch_size"),
    "steps_float": (BASE + "pretrain: {train: {steps: 10.5}}\n", "pretrain.train.steps"),
    "steps_string": (BASE + "pretrain: {train: {steps: '100'}}\n", "pretrain.train.steps"),
    "lr_true": (BASE + "pretrain: {train: {lr: true}}\n", "pretrain.train.lr"),
    "dedup_one": ("sources: {s: {paths: [x], dedup: 1}}\n", "sources.s.dedup"),
    "warmup_equals_steps": (BASE + "pretrain: {train: {steps: 20, warmup_steps: 20}}\n", "pretrain.train: Value error, warmup_steps (20)"),
    "warmup_over_steps_instruct": (BASE + "instruct: {train: {steps: 5}}\n", "instruct.train: Value error, warmup_steps (20) must be below steps (5)"),
    "negative_seed": (BASE + "seed: -1\n", "seed: Input should be greater than or equal to 0"),
    "zero_steps": (BASE + "pretrain: {train: {steps: 0}}\n", "pretrain.train.steps"),
    "no_arms": (BASE + "pretrain: {arms: {}}\n", "at least one pretraining arm"),
    "min_over_max_chars": ("sources: {s: {paths: [x], min_chars: 10, max_chars: 5}}\n", "min_chars (10) is above max_chars (5)"),
    "blank_name": (BASE + "name: ''\n", "name: String should have at least 1 character"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_values_of_the_refused_classes_are_config_errors_naming_the_field(tmp_path: Path, name: str) -> None:
    text, expected = REFUSED[name]
    path = tmp_path / "study.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in str(exc.value) and expected in str(exc.value), str(exc.value)


def test_merge_keys_may_still_be_overridden_and_yaml_ints_load(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("sources: {s: {paths: [x]}}\npretrain: {train: &t {steps: 1_000, warmup_steps: 5, lr: 1}}\n"
                    "instruct: {train: {<<: *t, steps: 60}}\n", encoding="utf-8")
    cfg = load_config(path)
    assert cfg.pretrain.train.steps == 1000 and cfg.pretrain.train.lr == 1.0 and type(cfg.pretrain.train.lr) is float
    assert cfg.instruct.train.steps == 60 and cfg.instruct.train.warmup_steps == 5


@pytest.mark.parametrize("ratio", ["nan:1", "inf:1", "1:inf", "1e400:1", "-1:2", "0:0"])
def test_non_finite_or_negative_ratios_are_refused_naming_the_arm(ratio: str) -> None:
    from codestage.mixing import preset_schedule

    with pytest.raises(ConfigError, match=r"pretrain\.arms\.CODE: ratio"):
        preset_schedule("constant", ratio=ratio, where="pretrain.arms.CODE")


BOMB = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # a regression must not take the machine down
from codestage.config import config_to_dict, load_config
from codestage.errors import ConfigError
try:
    config_to_dict(load_config(sys.argv[1]))
except ConfigError as exc:
    print("ConfigError", exc)
"""


def test_an_alias_bomb_is_refused_without_being_expanded(tmp_path: Path) -> None:
    # 9 levels of 9 aliases: 387 million values once expanded (results are written as JSON).
    lines = ["sources: {s: {paths: [x]}}", "model:", "  overrides:", "    a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"    a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    out = subprocess.run([sys.executable, "-c", BOMB, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.startswith("ConfigError") and str(path) in out.stdout and "alias bomb" in out.stdout
