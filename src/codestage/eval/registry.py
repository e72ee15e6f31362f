"""Which tasks exist, which one stands for each domain, and name resolution for the CLI/runner."""

from __future__ import annotations

from pathlib import Path

from codestage.domains import DOMAINS
from codestage.errors import ConfigError
from codestage.eval.tasks.base import Task
from codestage.eval.tasks.ceval_logic import CevalLogic
from codestage.eval.tasks.cosqa import CoSQA
from codestage.eval.tasks.ekar import EkarZh
from codestage.eval.tasks.jecqa import JecQaKd
from codestage.eval.tasks.logiqa import LogiQAEn, LogiQAZh
from codestage.eval.tasks.mbpp import Mbpp, MbppSanitized
from codestage.eval.tasks.scienceqa import ScienceQA

TASKS: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (CevalLogic, LogiQAEn, LogiQAZh, JecQaKd, ScienceQA, EkarZh, CoSQA, MbppSanitized, Mbpp)
}

# The paper's set per domain: what a domain name means in `--tasks` and in the report.
DOMAIN_DEFAULT: dict[str, str] = {
    "logic": "ceval_logic",
    "legal": "jecqa_kd",
    "scientific": "scienceqa",
    "analogical": "ekar_zh",
    "code_reasoning": "cosqa",
    "code_generation": "mbpp_sanitized",
}
assert set(DOMAIN_DEFAULT) == set(DOMAINS)


def resolve_tasks(names: list[str]) -> list[str]:
    """Task names for a list of task or domain names ("all" = every task), in order, without repeats."""
    out: list[str] = []
    for raw in names:
        for name in (n.strip() for n in raw.split(",")):
            if not name:
                continue
            if name == "all":
                resolved = list(TASKS)
            elif name in TASKS:
                resolved = [name]
            elif name in DOMAIN_DEFAULT:
                resolved = [DOMAIN_DEFAULT[name]]
            else:
                raise ConfigError(
                    f"tasks: unknown task or domain {name!r}; valid tasks: {', '.join(TASKS)}; "
                    f"valid domains: {', '.join(DOMAIN_DEFAULT)}; or 'all'"
                )
            out.extend(t for t in resolved if t not in out)
    if not out:
        raise ConfigError("tasks: no task given")
    return out


def get_task(name: str, data_dir: Path | str | None = None) -> Task:
    """An instance of the named task (or a domain's default) reading from `data_dir` (default: bundled)."""
    resolved = resolve_tasks([name])
    if len(resolved) != 1:
        raise ConfigError(f"tasks: {name!r} names {len(resolved)} tasks; give one task or domain")
    return TASKS[resolved[0]](Path(data_dir) if data_dir is not None else None)
