"""Mixing schedules (the code:text ratio over training) and the deterministic multi-source sampler.

A schedule is a list of phases covering training from 0 to 1; each phase weights components
(groups such as `text`/`code`, or single sources), optionally moving linearly to `end_weights`.
The sampler picks, for every training sequence (or instruction example), the source whose drawn
count lags furthest behind its target (smooth weighted round-robin). Per phase the realised counts
match the weights to within one draw, which makes an ablation's token budgets exact, and the
choice is deterministic; the seed fixes each source's document order.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from codestage.errors import ConfigError

if TYPE_CHECKING:
    from codestage.config import MixtureConfig

_TOL = 1e-6
MAX_EPOCHS = 4.0  # passes over a source beyond which repetition starts to hurt (Muennighoff et al. 2023); warn past it


def parse_ratio(ratio: str, *, where: str) -> tuple[float, float]:
    """'5:3' -> (0.625, 0.375)."""
    try:
        a, b = (float(x) for x in ratio.split(":"))
    except ValueError:
        raise ConfigError(f"{where}: ratio {ratio!r} is not of the form 'TEXT:CODE', e.g. '5:3'") from None
    if not (math.isfinite(a) and math.isfinite(b)) or a < 0 or b < 0 or a + b <= 0:
        raise ConfigError(f"{where}: ratio {ratio!r} needs finite, non-negative parts with a positive sum")
    return a / (a + b), b / (a + b)


# The paper's three strategies (text:code per quarter of training), reported_results.json `mixing_schedules`.
PAPER_SCHEDULES: dict[str, list[str]] = {
    "uniform": ["5:3", "5:3", "5:3", "5:3"],
    "stepwise_increase": ["7:3", "7:3", "6:4", "5:5"],
    "stepwise_decrease": ["5:5", "6:4", "7:3", "7:3"],
}
PRESETS = ("text_only", "code_only", "constant", *PAPER_SCHEDULES)


@dataclass(frozen=True)
class Phase:
    start: float
    end: float
    weights: Mapping[str, float]
    end_weights: Mapping[str, float] | None = None

    def weights_at(self, fraction: float) -> dict[str, float]:
        """Weights at a training fraction inside this phase (linear when end_weights is set)."""
        if self.end_weights is None:
            return dict(self.weights)
        t = 0.0 if self.end <= self.start else min(max((fraction - self.start) / (self.end - self.start), 0.0), 1.0)
        keys = set(self.weights) | set(self.end_weights)
        return {k: (1 - t) * self.weights.get(k, 0.0) + t * self.end_weights.get(k, 0.0) for k in keys}


@dataclass(frozen=True)
class Schedule:
    name: str
    phases: tuple[Phase, ...]

    def phase_index(self, fraction: float) -> int:
        for i, ph in enumerate(self.phases):
            if fraction < ph.end - 1e-12:
                return i
        return len(self.phases) - 1

    def components(self) -> set[str]:
        names: set[str] = set()
        for ph in self.phases:
            names |= set(ph.weights) | set(ph.end_weights or {})
        return names

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "phases": [
                {"start": p.start, "end": p.end, "weights": dict(p.weights),
                 **({"end_weights": dict(p.end_weights)} if p.end_weights else {})}
                for p in self.phases
            ],
        }


def _check_weights(w: Mapping[str, float], where: str) -> None:
    if not w:
        raise ConfigError(f"{where}: no weights given")
    for k, v in w.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise ConfigError(f"{where}: weight of {k!r} is {v!r}; weights must be non-negative numbers")
    total = sum(w.values())
    if abs(total - 1.0) > _TOL:
        raise ConfigError(f"{where}: weights sum to {total:.6g}, they must sum to 1")


def schedule_from_phases(phases: Sequence[Mapping[str, Any]], *, name: str = "custom", where: str = "schedule") -> Schedule:
    """Validate user phases: increasing `until`, the last at 1.0, weights >= 0 summing to 1."""
    if not phases:
        raise ConfigError(f"{where}: no phases given")
    out: list[Phase] = []
    start = 0.0
    for i, ph in enumerate(phases):
        until = float(ph["until"])
        here = f"{where}.phases[{i}]"
        if not start < until <= 1.0 + _TOL:
            raise ConfigError(f"{here}: until={until} must be greater than the previous phase's end ({start}) and at most 1")
        _check_weights(ph["weights"], f"{here}.weights")
        if ph.get("end_weights") is not None:
            _check_weights(ph["end_weights"], f"{here}.end_weights")
        out.append(Phase(start, min(until, 1.0), dict(ph["weights"]), ph.get("end_weights")))
        start = until
    if abs(start - 1.0) > _TOL:
        raise ConfigError(f"{where}: phases end at {start}, they must cover training up to 1.0")
    return Schedule(name, tuple(out))


def preset_schedule(name: str, *, ratio: str | None = None, text: str = "text", code: str = "code", where: str = "schedule") -> Schedule:
    """A named schedule over the `text` and `code` groups."""
    if name == "text_only":
        return Schedule(name, (Phase(0.0, 1.0, {text: 1.0}),))
    if name == "code_only":
        return Schedule(name, (Phase(0.0, 1.0, {code: 1.0}),))
    if name == "constant":
        if ratio is None:
            raise ConfigError(f"{where}: the `constant` schedule needs `ratio`, e.g. '2:1' (text:code)")
        t, c = parse_ratio(ratio, where=where)
        return Schedule(f"constant {ratio}", (Phase(0.0, 1.0, {text: t, code: c}),))
    if name in PAPER_SCHEDULES:
        ratios = PAPER_SCHEDULES[name]
        n = len(ratios)
        phases = []
        for i, r in enumerate(ratios):
            t, c = parse_ratio(r, where=where)
            phases.append(Phase(i / n, (i + 1) / n, {text: t, code: c}))
        return Schedule(name, tuple(phases))
    raise ConfigError(f"{where}: unknown schedule {name!r}; choose one of {', '.join(PRESETS)} or give `phases`")


def build_schedule(mix: MixtureConfig, groups: Mapping[str, Mapping[str, float]], *, where: str) -> Schedule:
    """A MixtureConfig (preset or phases) as a validated Schedule over known groups/sources (here, not in
    train/, so that planning a study needs no torch)."""
    if mix.phases is not None:
        schedule = schedule_from_phases([p.model_dump() for p in mix.phases], where=where)
    else:
        schedule = preset_schedule(mix.schedule, ratio=mix.ratio, where=where)
    resolve_source_weights(schedule, groups, where=where)
    return schedule


def resolve_source_weights(schedule: Schedule, groups: Mapping[str, Mapping[str, float]], *, where: str) -> None:
    """Check every component names a group or a source (raises ConfigError otherwise)."""
    sources = {s for members in groups.values() for s in members}
    for comp in schedule.components():
        if comp not in groups and comp not in sources:
            raise ConfigError(
                f"{where}: {comp!r} is neither a group ({', '.join(sorted(groups)) or 'none'}) "
                f"nor a source ({', '.join(sorted(sources))})"
            )


def flatten(weights: Mapping[str, float], groups: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Group weights -> per-source weights (members share a group's weight by their own weights)."""
    out: dict[str, float] = defaultdict(float)
    for comp, w in weights.items():
        if w == 0:
            continue
        if comp in groups:
            members = groups[comp]
            total = sum(members.values())
            for src, mw in members.items():
                out[src] += w * mw / total
        else:
            out[comp] += w
    return dict(out)


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


@dataclass
class DocCursor:
    """Walks one source's items in a seeded order, epoch after epoch, and can be resumed."""

    name: str
    n_items: int
    seed: int
    epoch: int = 0
    pos: int = 0
    _order: np.ndarray | None = field(default=None, repr=False)

    def order(self) -> np.ndarray:
        if self._order is None:
            rng = np.random.default_rng([self.seed, _stable_int(self.name), self.epoch])
            self._order = rng.permutation(self.n_items)
        return self._order

    def next_index(self) -> int:
        if self.pos >= self.n_items:
            self.epoch += 1
            self.pos = 0
            self._order = None
        idx = int(self.order()[self.pos])
        self.pos += 1
        return idx

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, state: Mapping[str, int]) -> None:
        self.epoch, self.pos, self._order = int(state["epoch"]), int(state["pos"]), None


class MixturePicker:
    """Chooses the source of each draw so realised counts track the schedule's weights exactly.

    `draw(fraction)` is called once per sequence/example with the training fraction of the step
    it belongs to. Deficits reset at phase boundaries, so every phase meets its own ratio.
    """

    def __init__(self, schedule: Schedule, groups: Mapping[str, Mapping[str, float]], sources: Sequence[str]) -> None:
        self.schedule = schedule
        self.groups = {g: dict(m) for g, m in groups.items()}
        self.sources = list(sources)
        self.phase = -1
        self.credit: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def draw(self, fraction: float) -> tuple[str, int]:
        phase = self.schedule.phase_index(fraction)
        if phase != self.phase:
            self.phase = phase
            self.credit = {s: 0.0 for s in self.sources}
        weights = flatten(self.schedule.phases[phase].weights_at(fraction), self.groups)
        for s, w in weights.items():
            self.credit[s] += w
        active = [s for s in self.sources if weights.get(s, 0.0) > 0]
        best = max(active, key=lambda s: self.credit[s])  # ties: the first source in config order
        self.credit[best] -= 1.0
        return best, phase

    def state(self) -> dict[str, Any]:
        return {"phase": self.phase, "credit": dict(self.credit)}

    def load(self, state: Mapping[str, Any]) -> None:
        self.phase = int(state["phase"])
        self.credit = {k: float(v) for k, v in state["credit"].items()}


class Accounting:
    """Tokens (and examples) drawn per source per phase, and per source and language per phase."""

    def __init__(self) -> None:
        self.tokens: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.examples: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.languages: dict[int, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))

    def add_language(self, phase: int, source: str, language: str, tokens: int) -> None:
        self.languages[phase][source][language] += tokens

    def add(self, phase: int, source: str, tokens: int, examples: int = 0) -> None:
        self.tokens[phase][source] += tokens
        if examples:
            self.examples[phase][source] += examples

    def state(self) -> dict[str, Any]:
        return {
            "tokens": {str(p): dict(v) for p, v in self.tokens.items()},
            "examples": {str(p): dict(v) for p, v in self.examples.items()},
            "languages": {str(p): {s: dict(per) for s, per in v.items()} for p, v in self.languages.items()},
        }

    def load(self, state: Mapping[str, Any]) -> None:
        self.__init__()
        for p, v in state["tokens"].items():
            for s, n in v.items():
                self.tokens[int(p)][s] = int(n)
        for p, v in state.get("examples", {}).items():
            for s, n in v.items():
                self.examples[int(p)][s] = int(n)
        for p, v in state.get("languages", {}).items():  # absent in checkpoints written before it existed
            for s, per in v.items():
                for lang, n in per.items():
                    self.languages[int(p)][s][lang] = int(n)

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for per in self.tokens.values():
            for s, n in per.items():
                out[s] += n
        return dict(out)


class SequenceSampler:
    """Packed training sequences from several token stores, following a schedule.

    Each sequence is `seq_len` consecutive tokens of one source's stream: its documents in a
    seeded order, each ending in EOS, wrapping to a new epoch (new order) when the source runs out.
    State (cursors, in-document offsets, picker credit, accounting) round-trips through
    `state()`/`load()` so a resumed run draws exactly the sequences the uninterrupted one would.
    """

    def __init__(self, stores: Mapping[str, Any], schedule: Schedule, groups: Mapping[str, Mapping[str, float]],
                 *, seq_len: int, seed: int, max_epochs: float = MAX_EPOCHS) -> None:
        self.stores = dict(stores)
        self.max_epochs = max_epochs
        self.warned: set[str] = set()
        self.langs = {n: _store_languages(s) for n, s in self.stores.items()}
        self.seq_len = seq_len
        self.schedule = schedule
        self.groups = groups
        self.picker = MixturePicker(schedule, groups, list(self.stores))
        self.cursors = {n: DocCursor(n, s.n_docs, seed) for n, s in self.stores.items()}
        self.offset = {n: 0 for n in self.stores}  # tokens already used of the current document
        self.current = {n: -1 for n in self.stores}
        self.accounting = Accounting()

    def _take(self, name: str, n: int, phase: int) -> np.ndarray:
        store, cur = self.stores[name], self.cursors[name]
        names, per_doc = self.langs[name]
        parts: list[np.ndarray] = []
        while n > 0:
            if self.current[name] < 0:
                self.current[name] = cur.next_index()
                self.offset[name] = 0
                self._warn_repeats(name)
            doc = store.doc(self.current[name])
            piece = doc[self.offset[name] : self.offset[name] + n]
            lang = names[int(per_doc[self.current[name]])] if per_doc is not None else names[0]
            self.accounting.add_language(phase, name, lang, len(piece))
            parts.append(piece)
            n -= len(piece)
            self.offset[name] += len(piece)
            if self.offset[name] >= len(doc):
                self.current[name] = -1
        return np.concatenate(parts).astype(np.int64)

    def sample(self, fraction: float) -> tuple[str, np.ndarray]:
        """One sequence for the step at training `fraction`; returns (source, token ids)."""
        name, phase = self.picker.draw(fraction)
        ids = self._take(name, self.seq_len, phase)
        self.accounting.add(phase, name, len(ids))
        return name, ids

    def _warn_repeats(self, name: str) -> None:
        cur = self.cursors[name]
        if cur.epoch + 1 > self.max_epochs and name not in self.warned:
            self.warned.add(name)
            warnings.warn(f"source {name!r} ran out and is now in epoch {cur.epoch + 1}, more than "
                          f"max_epochs={self.max_epochs:g}; add data or lower its weight", RuntimeWarning, stacklevel=3)

    def epochs(self) -> dict[str, float]:
        """Passes over each source so far (1.5 = one full pass and half of the next)."""
        out = {}
        for n, cur in self.cursors.items():
            done = cur.epoch * cur.n_items + cur.pos - (1 if self.current[n] >= 0 else 0)
            out[n] = round(done / max(cur.n_items, 1), 4)
        return out

    def report(self, total_steps: int) -> dict[str, Any]:
        return mixture_report(self.schedule, self.groups, self.accounting, self.epochs(), total_steps=total_steps,
                              unit="tokens", max_epochs=self.max_epochs)

    def state(self) -> dict[str, Any]:
        return {
            "picker": self.picker.state(),
            "cursors": {n: c.state() for n, c in self.cursors.items()},
            "offset": dict(self.offset),
            "current": dict(self.current),
            "accounting": self.accounting.state(),
        }

    def load(self, state: Mapping[str, Any]) -> None:
        self.picker.load(state["picker"])
        for n, c in self.cursors.items():
            c.load(state["cursors"][n])
        self.offset = {n: int(v) for n, v in state["offset"].items()}
        self.current = {n: int(v) for n, v in state["current"].items()}
        self.accounting.load(state["accounting"])


def _store_languages(store: Any) -> tuple[list[str], np.ndarray | None]:
    """A store's language names and per-document indices (one 'text' language for plain stores)."""
    if hasattr(store, "languages"):
        return store.languages()
    return ["text"], None


def _language_totals(per_source: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for per in per_source.values():
        for lang, n in per.items():
            out[lang] += n
    return dict(sorted(out.items()))


def repeats_report(epochs: Mapping[str, float], max_epochs: float) -> tuple[dict[str, int], list[str]]:
    """Times each source was restarted after running out, and a warning per source past `max_epochs`."""
    repeats = {s: max(math.ceil(e) - 1, 0) for s, e in epochs.items()}
    warns = [f"source {s!r} was used for {e:g} epochs (repeated {repeats[s]} times), more than max_epochs={max_epochs:g}"
             for s, e in epochs.items() if e > max_epochs]
    return repeats, warns


def mixture_report(
    schedule: Schedule, groups: Mapping[str, Mapping[str, float]], accounting: Accounting,
    epochs: Mapping[str, float], *, total_steps: int, unit: str, max_epochs: float = MAX_EPOCHS,
) -> dict[str, Any]:
    """The content of `mixture.json`: what was asked for next to what was drawn, per phase, per
    source and language, and how often each source was repeated."""
    phases = []
    for i, ph in enumerate(schedule.phases):
        toks = dict(accounting.tokens.get(i, {}))
        total = sum(toks.values())
        entry: dict[str, Any] = {
            "start": ph.start, "end": ph.end,
            "steps": [round(ph.start * total_steps), round(ph.end * total_steps)],
            "requested_weights": flatten(ph.weights, groups),
            "tokens": toks,
            "token_share": {s: (n / total if total else 0.0) for s, n in toks.items()},
        }
        if ph.end_weights:
            entry["requested_end_weights"] = flatten(ph.end_weights, groups)
        langs = accounting.languages.get(i, {})
        if langs:
            entry["tokens_per_source_language"] = {s: dict(sorted(per.items())) for s, per in langs.items()}
            entry["tokens_per_language"] = _language_totals(langs)
        if unit == "examples":
            ex = dict(accounting.examples.get(i, {}))
            n_ex = sum(ex.values())
            entry["examples"] = ex
            entry["example_share"] = {s: (n / n_ex if n_ex else 0.0) for s, n in ex.items()}
        phases.append(entry)
    all_langs: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for per_phase in accounting.languages.values():
        for s, per in per_phase.items():
            for lang, n in per.items():
                all_langs[s][lang] += n
    repeats, warns = repeats_report(epochs, max_epochs)
    return {
        "schedule": schedule.to_json(),
        "groups": {g: dict(m) for g, m in groups.items()},
        "unit": unit,
        "phases": phases,
        "tokens_total": accounting.totals(),
        "tokens_per_language": _language_totals(all_langs),
        "tokens_per_source_language": {s: dict(sorted(v.items())) for s, v in all_langs.items()},
        "epochs": dict(epochs),
        "repeats": repeats,
        "max_epochs": max_epochs,
        "warnings": warns,
    }


__all__ = [
    "Accounting", "DocCursor", "MAX_EPOCHS", "MixturePicker", "Phase", "Schedule", "SequenceSampler", "PAPER_SCHEDULES", "PRESETS",
    "build_schedule", "flatten", "mixture_report", "parse_ratio", "preset_schedule", "repeats_report",
    "resolve_source_weights", "schedule_from_phases",
]
