"""The six reasoning domains of the study and every name each is shown under: the one table of them.

A domain's key is what results.json, `--tasks`, the config and the paper's tables use; tasks say
which domain they belong to (`Task.domain`), and `eval/registry.py` says which task stands for
each domain by default (the paper's evaluation set).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Domain:
    key: str  # results.json, --tasks, study configs
    label: str  # report tables and plots
    short: str  # narrow terminal tables
    paper_column: str  # the column of bundled paper/reported_results.json's tables with the paper's number


DOMAIN_TABLE: dict[str, Domain] = {d.key: d for d in (
    Domain("logic", "logic", "logic", "logic"),
    Domain("legal", "legal", "legal", "legal"),
    Domain("scientific", "scientific", "sci", "scientific"),
    Domain("analogical", "analogical", "analog", "analogical"),
    Domain("code_reasoning", "code reasoning", "code-r", "code_reasoning"),
    Domain("code_generation", "code generation", "code-g", "code_generation"),
)}
DOMAINS: tuple[str, ...] = tuple(DOMAIN_TABLE)  # the keys, in the paper's column order
