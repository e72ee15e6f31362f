"""How an item becomes model inputs under each protocol, with k-shot exemplars, and how choices win.

`paper`: the original code's perplexity comparison. Each choice gives a sequence in which the
candidate sits in the context and the task's shared evidence follows it as the scored span (for
E-KAR the candidate itself is the span); the choice whose span has the lowest perplexity, i.e.
the highest mean per-token log-probability, wins. Exemplars are whole gold-choice sequences
joined by newlines, as the original `in_context` option did.

`lm-eval`: lm-evaluation-harness `multiple_choice`. The context is the question (after exemplars
"question + delimiter + gold choice" joined by blank lines), each choice text is a continuation;
`acc` takes the highest summed log-probability, `acc_norm` divides it by the choice's length in
characters.

Exemplars: one fixed, seeded draw per task from its exemplar split (or, when it has none, from
its evaluation items, skipping the item being asked), so every item sees the same k examples.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

import numpy as np

from codestage.errors import ConfigError
from codestage.eval.requests import Request
from codestage.eval.tasks.base import ChoiceItem, GenerationItem, GenerationTask, Item, MultipleChoiceTask, Protocol, Task

PROTOCOLS: tuple[str, ...] = ("paper", "lm-eval")
FEWSHOT_DELIMITER = {"paper": "\n", "lm-eval": "\n\n"}


def check_protocol(protocol: str) -> Protocol:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol: unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    return protocol  # type: ignore[return-value]


def _identity(item: Item) -> tuple:
    if isinstance(item, GenerationItem):
        return ("task_id", item.meta.get("task_id", item.prompt))
    return ("question", item.question, item.choices)


def exemplar_pool(task: Task, items: Sequence[Item]) -> list[Item]:
    """The task's exemplar split (or its items when it has none), single-answer items only."""
    pool = task.fewshot_pool()
    pool = list(items) if pool is None else pool
    return [p for p in pool if not isinstance(p, ChoiceItem) or len(p.gold) == 1]


def exemplar_order(task: Task, pool: Sequence[Item], seed: int) -> list[Item]:
    """The pool in the task's fixed seeded order; k-shot prompts use its first k (skipping the item)."""
    order = random.Random(f"{seed}:{task.name}").sample(range(len(pool)), len(pool))
    return [pool[i] for i in order]


def exemplar_picker(task: Task, items: Sequence[Item], shots: int, seed: int) -> Callable[[Item], list[Item]]:
    """item -> its k exemplars: a fixed seeded draw of k + 1 from the pool, minus the item itself."""
    if shots < 0:
        raise ConfigError(f"shots: must be >= 0, got {shots}")
    if shots == 0:
        return lambda item: []
    pool = exemplar_pool(task, items)
    if len(pool) < shots:
        raise ConfigError(f"shots: {task.name} has only {len(pool)} exemplars, fewer than the {shots} asked for")
    chosen = exemplar_order(task, pool, seed)[: shots + 1]

    def pick(item: Item) -> list[Item]:
        me = _identity(item)
        return [e for e in chosen if _identity(e) != me][:shots]

    return pick


def _mc_prefix(task: MultipleChoiceTask, exemplars: list[ChoiceItem], protocol: Protocol) -> str:
    delim = FEWSHOT_DELIMITER[protocol]
    if protocol == "paper":
        return "".join("".join(task.paper_pair(e, e.gold[0])) + delim for e in exemplars)
    parts = [task.lmeval_query(e) + task.target_delimiter + task.lmeval_choices(e)[e.gold[0]] for e in exemplars]
    return "".join(p + delim for p in parts)


def choice_requests(task: MultipleChoiceTask, item: ChoiceItem, protocol: Protocol, exemplars: list[ChoiceItem]) -> list[Request]:
    """One request per choice, in choice order."""
    prefix = _mc_prefix(task, exemplars, protocol)
    if protocol == "paper":
        return [Request(prefix + ctx, span) for ctx, span in (task.paper_pair(item, i) for i in range(len(item.choices)))]
    query = prefix + task.lmeval_query(item)
    return [Request(query, task.target_delimiter + c) for c in task.lmeval_choices(item)]


def decision_scores(protocol: Protocol, logprobs: Sequence[float], n_tokens: Sequence[int]) -> list[float]:
    """The number each choice is ranked by: mean log-prob per scored token (paper) or the sum (lm-eval acc)."""
    if protocol == "paper":
        return [lp / n if n else float("-inf") for lp, n in zip(logprobs, n_tokens)]
    return list(logprobs)


def norm_scores(task: MultipleChoiceTask, item: ChoiceItem, logprobs: Sequence[float]) -> list[float]:
    """lm-eval acc_norm: summed log-prob / characters of the choice text (delimiter excluded)."""
    lengths = np.array([float(len(c)) for c in task.lmeval_choices(item)])
    return list(np.asarray(logprobs, dtype=np.float64) / lengths)


def generation_prompt(task: GenerationTask, item: GenerationItem, protocol: Protocol, exemplars: list[GenerationItem]) -> str:
    """The prompt the model continues: exemplars (prompt + answer) separated by blank lines, then the item."""
    shots = "".join(task.prompt(e, protocol) + task.target(e, protocol) + "\n\n" for e in exemplars)
    return shots + task.prompt(item, protocol)
