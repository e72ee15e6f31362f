"""Small prompt pieces shared by the task modules."""

from __future__ import annotations

from codestage.eval.tasks._options import LETTERS


def option_lines(choices: tuple[str, ...] | list[str]) -> str:
    """'A. first\\nB. second ...': the option list shown in lm-eval-style questions."""
    return "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
