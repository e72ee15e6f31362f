"""The package's imports point one way, as docs/architecture.md draws them:

    core (config, errors, atomic, hashing, jsonlines, resources, domains, results)
      -> base (model, tokenizer, mixing)
      -> data/ -> train/          eval/ (beside data/, never importing it)
      -> study/ -> cli

Every import in every module under src/codestage (function-level ones too) is read from the AST.
"""

from __future__ import annotations

import ast
from pathlib import Path

import codestage

PACKAGE = Path(codestage.__file__).parent
BASE = {"codestage.model", "codestage.tokenizer", "codestage.mixing"}
MAY_IMPORT = {
    "core": {"core"},
    "base": {"core", "base"},
    "data": {"core", "base", "data"},
    "eval": {"core", "base", "eval"},
    "train": {"core", "base", "data", "train"},
    "study": {"core", "base", "data", "eval", "train", "study"},
    "cli": {"core", "base", "data", "eval", "train", "study", "cli"},
}


def layer(module: str) -> str:
    """The layer of a codestage module, from its name alone."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("data", "eval", "train", "study"):
        return parts[1]
    if module in BASE:
        return "base"
    if len(parts) > 1 and parts[1].startswith("cli"):
        return "cli"
    return "core"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(module: str, source: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every codestage import in `source` (relative imports resolved)."""
    out = []
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            if name == "codestage":  # `from codestage import model`
                out += [(node.lineno, f"codestage.{a.name}") for a in node.names if a.name != "__version__"]
    return [(line, name) for line, name in out if name == "codestage" or name.startswith("codestage.")]


def violations(module: str, source: str, *, is_package: bool = False) -> list[str]:
    mine = layer(module)
    return [f"{module}:{line} ({mine}) imports {name} ({layer(name)})"
            for line, name in imported(module, source, is_package=is_package)
            if name != "codestage" and layer(name) not in MAY_IMPORT[mine]]


def test_every_import_points_down() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    layers = {layer(module_name(f)) for f in files}
    assert layers == set(MAY_IMPORT), layers  # every layer has modules, so each rule is exercised
    bad = [v for f in files
           for v in violations(module_name(f), f.read_text(encoding="utf-8"), is_package=f.name == "__init__.py")]
    assert not bad, "imports against the layering (docs/architecture.md):\n" + "\n".join(bad)


def test_the_check_catches_an_upward_import() -> None:
    assert violations("codestage.data.store", "def f():\n    from codestage.eval.registry import TASKS\n") == [
        "codestage.data.store:2 (data) imports codestage.eval.registry (eval)"]
    assert violations("codestage.eval.harness", "import codestage.data.sources\n")
    assert violations("codestage.train.loop", "from codestage.study import runner\n")
    assert violations("codestage.config", "from codestage import model\n")
    assert violations("codestage.eval.tasks.base", "from ...data import store\n")
    assert violations("codestage.data", "from ..eval import registry\n", is_package=True)
    assert not violations("codestage.study.runner", "from codestage.eval.harness import evaluate\n")
    assert layer("codestage.cli_train") == "cli" and layer("codestage.tokenizer") == "base"
