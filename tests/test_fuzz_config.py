"""The config loader under fuzzed YAML: a ConfigError naming the file, or a config that serializes.

Three families: the embedded demo config with one value replaced by random data, one key removed
or one unknown key added (wrong types, out-of-range numbers, NaN, huge strings); raw bytes and
text (invalid UTF-8, malformed YAML); and hand-picked hostile YAML (deep nesting, Python tags,
recursive aliases, duplicate keys, binary scalars, a directory given as the file).
"""

from __future__ import annotations

import json
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


def _check(path: Path) -> None:
    """The property: a ConfigError naming the file, or a config that round-trips to JSON."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        assert str(path) in str(exc), str(exc)[:300]
        return
    json.dumps(config_to_dict(cfg), allow_nan=True)


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
