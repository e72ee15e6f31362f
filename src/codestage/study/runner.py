"""Run a study: tokenizer -> stores -> pretraining arms -> instruction runs -> evaluation -> report.

Each step has a key: a hash of its config section, its inputs' fingerprints and the keys of the
steps it depends on (`Step.deps` names them). A step whose output folder holds a marker with the
same key, and whose files still match the manifest that marker records (study/manifest.py), is up
to date; a damaged one is redone, and so is a dependant whose input was redone to other bytes. A
training step that was cut off resumes from its last complete checkpoint. Two runs with the same
key (the paper's CC run *is* its stepwise-decrease run) are trained once and both names point to it.

`Study.execute` is the one way a step runs, whoever calls it: `Study.run` (the inline executor
behind `codestage run`), `codestage pretrain` under torchrun, and the executors of study/executors/.
It alone reads and writes markers, prepares folders and honours --force and --resume.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

from rich.console import Console

from codestage.atomic import write_json
from codestage.config import EvalConfig, ModelConfig, StudyConfig, TrainConfig, config_to_dict
from codestage.data.instructions import read_examples
from codestage.data.sources import expand_paths, iter_documents, sample_texts
from codestage.data.store import TokenStore
from codestage.mixing import build_schedule
from codestage.errors import ConfigError
from codestage.hashing import sha256_file, sha256_json
from codestage.results import HeldoutLoss
from codestage.study import manifest
from codestage.train.checkpoint import checkpoint_step

if TYPE_CHECKING:
    from codestage.config import InstructSetConfig, SourceConfig
    from codestage.train import parallel

# torch, transformers and the training code are imported where a step runs, not here: planning a
# study (`codestage run --executor local`'s coordinator, `codestage plan`) then starts in a fraction
# of the time, and the coordinator starts its first step sooner.

MARKER = ".step.json"  # in a step's folder: the key it was made with; present = finished
KEY_FILE = ".key"  # in a started step's folder: the key it was started with (a cut-off run resumes only under it)


def _fingerprint(paths: list[Path]) -> list[list[Any]]:
    """Cheap identity of input files (path, size, mtime) for step keys; manifests hold sha256."""
    out = []
    for p in paths:
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        for q in files:
            st = q.stat()
            out.append([str(q), st.st_size, st.st_mtime_ns])
    return out


@dataclass
class Step:
    """One unit of work: `action(out)` makes the folder `out`; `key` is the hash of all it depends on.

    `deps` are the steps whose outputs it reads (aliases resolved to the step that does the work;
    an alias depends on the step it names). `resumable` steps keep a cut-off run's folder when it
    was started under the same key; the others write their folder whole and start clean.
    """

    name: str
    out: Path
    key: str
    action: Callable[[Path], None]
    deps: tuple[str, ...] = ()
    alias_of: str | None = None
    resumable: bool = True
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepOutcome:
    """What `Study.execute` did with a step: ran it (taking `seconds`), found it up to date, or
    found it an alias of `alias_of` (the same inputs, so the same folder)."""

    name: str
    status: Literal["ran", "up_to_date", "alias"]
    seconds: float | None = None
    alias_of: str | None = None


@dataclass(frozen=True)
class Verdict:
    """Whether a finished step's folder can be reused (`Study.verdict`): `status` and, for damaged
    and outdated, `detail` naming the file or input; `touched`: big files whose new mtime to record."""

    status: Literal["up to date", "unverified", "to run", "damaged", "outdated"]
    detail: str = ""
    touched: dict[str, int] = field(default_factory=dict)

    @property
    def reusable(self) -> bool:
        return self.status in ("up to date", "unverified")

    def describe(self) -> str:
        if self.status == "unverified":
            return "up to date (unverified: its marker predates manifests)"
        return f"{self.status}: {self.detail}" if self.detail else self.status


@dataclass(frozen=True)
class StudyRun:
    """A trained model of the study as the report sees it: its table, folders and what it reuses."""

    name: str
    stage: str
    dir: Path
    eval_dir: Path
    alias_of: str | None = None
    base: str | None = None


class Study:
    """Plans and runs the steps of one study into `out_dir`."""

    def __init__(self, cfg: StudyConfig, out_dir: Path, *, console: Console | None = None, progress: bool = True,
                 verify: Literal["quick", "full"] = "quick") -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.verify = verify  # "full": hash every output in full before reuse (study/manifest.py)
        self.console = console or Console(stderr=True)
        self.progress = progress
        self.steps: dict[str, Step] = {}
        self._eval_data_cache: dict[str, str | None] | None = None
        self._plan()

    # ----------------------------------------------------------------- planning
    def _paths(self, raw: list[str]) -> list[Path]:
        return expand_paths(raw, base=self.cfg.base_dir)

    def _add(self, name: str, out: Path, key_parts: dict[str, Any], action: Callable[[Path], None], *,
             deps: tuple[str, ...] = (), resumable: bool = True, **info: Any) -> Step:
        key = sha256_json(key_parts)
        alias = next((s.name for s in self.steps.values() if s.key == key and s.alias_of is None), None)
        deps = (alias,) if alias else tuple(self._worker(d) for d in deps)
        step = Step(name, self.steps[alias].out if alias else out, key, action, deps, alias, resumable, info)
        self.steps[name] = step
        return step

    def _worker(self, name: str) -> str:
        """The step that does `name`'s work (itself, or the one it is an alias of)."""
        return self.steps[name].alias_of or name

    def _plan(self) -> None:
        cfg = self.cfg
        source_paths = {n: self._paths(s.paths) for n, s in cfg.sources.items()}
        self.groups = groups_of(cfg.sources)

        tok_key = {"tokenizer": cfg.tokenizer.model_dump(),  # no seed: BPE training is deterministic
                   "sources": {n: [s.model_dump(), _fingerprint(source_paths[n])] for n, s in cfg.sources.items()}}
        if cfg.tokenizer.path:
            tok_key = {"tokenizer_dir": _fingerprint(self._paths([cfg.tokenizer.path]))}
        tok = self._add("tokenizer", self.out / "tokenizer", tok_key, self._make_tokenizer, resumable=False)

        store_keys = {}
        for n, s in cfg.sources.items():
            st = self._add(f"store/{n}", self.out / "stores" / n,
                           {"tok": tok.key, "source": s.model_dump(), "files": _fingerprint(source_paths[n]),
                            "strict": cfg.data.strict},
                           lambda out, n=n: self._make_store(n, out), deps=("tokenizer",), resumable=False)
            store_keys[n] = st.key
        if cfg.data.decontam:  # test-set overlap of all training data, reported (codestage.study.decontam)
            sets = {n: [s.model_dump(), _fingerprint(self._paths(s.paths))] for n, s in cfg.instruct.sets.items()}
            self._add("decontam", self.out / "decontam",
                      {"sources": {n: [s.model_dump(), _fingerprint(source_paths[n])] for n, s in cfg.sources.items()},
                       "sets": sets, "n": cfg.data.decontam_n, "tasks": cfg.eval.tasks, "eval_dir": cfg.eval.data_dir},
                      self._decontam, inputs=self._eval_data)

        self.arm_schedules = {}
        ladder_only = cfg.ladder is not None and cfg.ladder.only  # the ladder's small runs alone (docs/ladder.md)
        for arm, mix in cfg.pretrain.arms.items():
            self.arm_schedules[arm] = build_schedule(mix, self.groups, where=f"pretrain.arms.{arm}")
            if ladder_only:
                continue
            used = sorted(store_keys)
            self._add(f"pretrain/{arm}", self.out / "runs" / arm,
                      {"stores": {n: store_keys[n] for n in used}, "groups": self.groups, "model": cfg.model.model_dump(),
                       "train": cfg.pretrain.train.model_dump(), "schedule": self.arm_schedules[arm].to_json(), "seed": cfg.seed},
                      lambda out, arm=arm: self._pretrain(arm, out), deps=("tokenizer", *(f"store/{n}" for n in used)),
                      stage="pretrain", run=arm)

        runs = cfg.instruct.runs
        if runs and not cfg.instruct.sets:
            raise ConfigError("instruct.runs are given but instruct.sets is empty")
        set_paths = {n: self._paths(s.paths) for n, s in cfg.instruct.sets.items()}
        self.instruct_groups = groups_of(cfg.instruct.sets)
        self.run_schedules = {}
        for name, run in ({} if ladder_only else runs).items():
            self.run_schedules[name] = build_schedule(run.mixture, self.instruct_groups, where=f"instruct.runs.{name}.mixture")
            base = self.steps[f"pretrain/{run.base}"]
            self._add(f"instruct/{name}", self.out / "runs" / name,
                      {"base": base.key, "sets": {n: [s.model_dump(), _fingerprint(set_paths[n])] for n, s in cfg.instruct.sets.items()},
                       "groups": self.instruct_groups, "template": cfg.instruct.template, "train": cfg.instruct.train.model_dump(),
                       "schedule": self.run_schedules[name].to_json()},
                      lambda out, name=name: self._instruct(name, out), deps=("tokenizer", base.name),
                      stage=run.table, run=name, base=run.base)

        for step in [s for s in list(self.steps.values()) if "run" in s.info]:
            run = step.info["run"]
            self._add(f"eval/{run}", self.out / "eval" / run, {"model": step.key, "eval": cfg.eval.model_dump()},
                      lambda out, step=step: self._evaluate(step, out), deps=(step.name,), run=run,
                      inputs=self._eval_data)
        if cfg.ladder is not None:
            from codestage.study.ladder.steps import add_ladder_steps

            add_ladder_steps(self, store_keys)

    def _eval_data(self) -> dict[str, str | None]:
        """task/file -> sha256 (None: absent) of every file the evaluated tasks read. Evaluation
        steps record it in their marker and are outdated when it changes, so new or changed
        evaluation data (another revision, E-KAR's test.json added beside its validation split) is
        evaluated again, not silently reused. It is not part of their key: folders evaluated before
        it was recorded stay reusable. Hashed once per Study, when first asked."""
        if self._eval_data_cache is None:
            from codestage.eval.registry import get_task, resolve_tasks

            e = self.cfg.eval
            data_dir = None
            if e.data_dir:
                data_dir = Path(e.data_dir) if Path(e.data_dir).is_absolute() else self.cfg.base_dir / e.data_dir
            self._eval_data_cache = {f"{t}/{f.name}": sha256_file(f) if f.is_file() else None
                                     for t in resolve_tasks(list(e.tasks)) for f in get_task(t, data_dir).files()}
        return self._eval_data_cache

    # ----------------------------------------------------------------- actions
    def _make_tokenizer(self, out: Path) -> None:
        from codestage.tokenizer import load_tokenizer, train_bpe

        if self.cfg.tokenizer.path:
            tok = load_tokenizer(self._paths([self.cfg.tokenizer.path])[0])
            tok.save_pretrained(out)
            return
        texts = []
        for n, s in self.cfg.sources.items():
            docs = iter_documents(self._paths(s.paths), n, text_field=s.text_field)
            texts.extend(sample_texts(docs, self.cfg.tokenizer.sample_chars_per_source))
        train_bpe(texts, self.cfg.tokenizer.vocab_size, out)

    def tokenizer(self):
        from codestage.tokenizer import load_tokenizer

        return load_tokenizer(self.steps["tokenizer"].out)

    def _make_store(self, name: str, out: Path) -> None:
        from codestage.data.build import BuildSpec, build
        from codestage.data.parse import ParseOptions

        s, d = self.cfg.sources[name], self.cfg.data
        opts = ParseOptions(text_field=s.text_field, min_chars=s.min_chars, max_chars=s.max_chars,
                            languages=frozenset(s.languages) if s.languages else None,
                            licenses=frozenset(s.licenses) if s.licenses else None)
        build(self._paths(s.paths), self.steps["tokenizer"].out, out,
              BuildSpec(name, opts, dedup=s.dedup, strict=d.strict, workers=d.workers, max_docs=s.max_docs))

    def _decontam(self, out: Path) -> None:
        from codestage.study.decontam import TrainingSet, decontaminate

        sets = [TrainingSet(n, tuple(map(str, self._paths(s.paths))), "pretrain", s.text_field) for n, s in self.cfg.sources.items()]
        sets += [TrainingSet(n, tuple(map(str, self._paths(s.paths))), "instruct") for n, s in self.cfg.instruct.sets.items()]
        e = self.cfg.eval
        data_dir = self._paths([e.data_dir])[0] if e.data_dir else None
        write_json(out / "decontam.json", decontaminate(sets, list(e.tasks), data_dir=data_dir, n=self.cfg.data.decontam_n,
                                                        workers=self.cfg.data.workers or 1))

    def _pretrain(self, arm: str, out: Path, model_cfg: ModelConfig | None = None, train: TrainConfig | None = None,
                  name: str | None = None) -> None:
        """Pretrain `arm` into `out`: the study's model and settings, or a ladder rung's `model_cfg` and `train`."""
        from codestage.model import build_model, load_model, model_config
        from codestage.train.pretrain import pretrain

        tok = self.tokenizer()
        stores = {n: TokenStore.open(self.steps[f"store/{n}"].out) for n in self.cfg.sources}
        mc = model_cfg or self.cfg.model
        if mc.init_from:
            model = load_model(self._paths([mc.init_from])[0])
        else:
            conf = model_config(mc.preset, len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **mc.overrides)
            model = build_model(conf, seed=self.cfg.seed)
        train_cfg = (train or self.cfg.pretrain.train).model_copy(update={"seed": self.cfg.seed})  # the seed drives data order too
        pretrain(model, tok, stores, self.groups, self.arm_schedules[arm], train_cfg, out,
                 name=name or f"pretrain {arm}", progress=self.progress)

    def _instruct(self, name: str, out: Path) -> None:
        from codestage.model import load_model
        from codestage.train.instruct import instruct_tune

        run = self.cfg.instruct.runs[name]
        tok = self.tokenizer()
        model = load_model(self.steps[f"pretrain/{run.base}"].out / "model")
        sets, reports = {}, {}
        for n, s in self.cfg.instruct.sets.items():
            data = read_examples(s.paths, n, base=self.cfg.base_dir, max_examples=s.max_examples)
            sets[n], reports[n] = data.examples, data.report()
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "instruction_sets.json", reports)
        train_cfg = self.cfg.instruct.train.model_copy(update={"seed": self.cfg.seed})
        instruct_tune(model, tok, sets, self.instruct_groups, self.run_schedules[name], train_cfg, out,
                      template=self.cfg.instruct.template, name=f"instruct {name}", progress=self.progress)

    def _evaluate(self, model_step: Step, out: Path) -> None:
        self.evaluate_model(model_step.out / "model", out)

    def evaluate_model(self, model_dir: Path, out: Path, eval_cfg: EvalConfig | None = None) -> None:
        """Evaluate a model folder into `out` with the study's eval settings (or `eval_cfg`)."""
        from codestage.eval.harness import evaluate, load_scorer

        e = eval_cfg or self.cfg.eval
        data_dir = self._paths([e.data_dir])[0] if e.data_dir else None
        scorer = load_scorer(model_dir, device=e.device, batch_size=e.batch_size)  # loaded once for tasks and losses
        evaluate(model_dir, list(e.tasks), out, data_dir=data_dir, sample=e.sample, seed=self.cfg.seed,
                 protocol=e.protocol, shots=e.shots, max_new_tokens=e.max_new_tokens, execute=e.execute, generate=e.generate, scorer=scorer,
                 lenient=e.lenient)
        if e.heldout:
            write_json(out / "heldout.json", {name: self._heldout(scorer, h).to_json() for name, h in e.heldout.items()})

    def _heldout(self, scorer, h) -> HeldoutLoss:
        """The held-out loss on a source's documents after its first `skip_docs` (never trained on)."""
        from codestage.eval.heldout import heldout_loss

        files = self._paths(h.paths)
        docs = itertools.islice(iter_documents(files, "heldout", text_field=h.text_field), h.skip_docs, None)
        loss = heldout_loss(scorer.model, scorer.tokenizer, (d.text for d in docs), max_tokens=h.max_tokens,
                            origin=f"{', '.join(map(str, files))} after skipping {h.skip_docs}")
        loss.skip_docs, loss.files = h.skip_docs, [str(f) for f in files]
        return loss

    # ----------------------------------------------------------------- running
    def _marker(self, step: Step) -> dict[str, Any] | str | None:
        """The step's marker, None when there is none, or what makes it unreadable."""
        marker = step.out / MARKER
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            return f"{MARKER}: unreadable ({exc})"
        return data if isinstance(data, dict) else f"{MARKER}: not a JSON object"

    def _content(self, name: str) -> str | None:
        """The content digest of what step `name` wrote, as its marker records it (None: unknown)."""
        marker = self._marker(self.steps[name])
        if not isinstance(marker, dict) or not isinstance(marker.get("files"), list):
            return None
        return manifest.content_digest(marker["files"])

    def verdict(self, name: str) -> Verdict:
        """Whether step `name`'s folder can be reused, checked against the manifest its marker holds.

        up to date: its key matches, its files match their manifest and every input it recorded
        still has the content it had; unverified: its marker is from before manifests (its files
        pass the structural checks of `manifest.structural_problem`); to run: no marker, or another
        key; damaged: a file differs from the manifest (or the marker is unreadable); outdated: an
        input was redone since, to other bytes.
        """
        step = self.steps[name]
        marker = self._marker(step)
        if marker is None:
            return Verdict("to run")
        if isinstance(marker, str):
            return Verdict("damaged", marker)
        if marker.get("key") != step.key:
            return Verdict("to run")
        files = marker.get("files")
        if not isinstance(files, list):
            problem = manifest.structural_problem(step.out)
            return Verdict("damaged", problem) if problem else Verdict("unverified")
        result = manifest.check(step.out, files, full=self.verify == "full")
        if result.problem:
            return Verdict("damaged", result.problem)
        recorded = marker.get("deps") or {}
        for dep in step.deps:
            was, now = recorded.get(dep), self._content(dep)
            if was is not None and now is not None and was != now:
                return Verdict("outdated", f"{dep} was redone since, with other outputs")
        changed = _changed_inputs(marker.get("inputs"), self._inputs(step))
        if changed:
            return Verdict("outdated", f"{changed} changed since it ran")
        return Verdict("up to date", touched=result.touched)

    @staticmethod
    def _inputs(step: Step) -> dict[str, str | None] | None:
        """Content hashes of the data files a step reads outside the study (evaluation data), if any."""
        inputs = step.info.get("inputs")
        return inputs() if callable(inputs) else None

    def state(self, name: str, verdicts: dict[str, Verdict] | None = None) -> str:
        """What `codestage plan` shows for a step: "up to date", "up to date (unverified: ...)",
        "to run", "damaged: FILE: what", "outdated: ...", or "same as OTHER" (with OTHER's state
        when that is not up to date). A reusable step whose inputs will be redone first says so: it
        runs again only if they come out different. `verdicts` caches verdicts across calls."""
        step = self.steps[name]
        if step.alias_of:
            other = self.state(step.alias_of, verdicts)
            return f"same as {step.alias_of}" + ("" if other == "up to date" else f" ({other})")
        verdicts = {} if verdicts is None else verdicts
        verdict = self._cached_verdict(name, verdicts)
        redone = self._redone_inputs(name, verdicts) if verdict.reusable else []
        if not redone:
            return verdict.describe()
        return (f"{verdict.describe()}, unless {', '.join(redone)} (redone first) "
                f"come{'s' if len(redone) == 1 else ''} out different")

    def states(self) -> dict[str, str]:
        """`state` of every planned step, each step's outputs checked once."""
        verdicts: dict[str, Verdict] = {}
        return {name: self.state(name, verdicts) for name in self.steps}

    def _cached_verdict(self, name: str, verdicts: dict[str, Verdict]) -> Verdict:
        if name not in verdicts:
            verdicts[name] = self.verdict(name)
        return verdicts[name]

    def _redone_inputs(self, name: str, verdicts: dict[str, Verdict]) -> list[str]:
        """The steps upstream of `name` that `run` will redo (damaged, outdated, to run)."""
        out: list[str] = []
        for dep in self.steps[name].deps:
            if not self._cached_verdict(dep, verdicts).reusable:
                out.append(dep)
            out += [d for d in self._redone_inputs(dep, verdicts) if d not in out]
        return out

    def up_to_date(self, name: str) -> bool:
        """True when `execute` would reuse step `name` (or the step it is an alias of) as it is."""
        return self.verdict(self._worker(name)).reusable

    def checkpoint(self, name: str) -> int | None:
        """The step of the last complete checkpoint of a cut-off run of `name` started under its
        current key (what execute would resume from), else None."""
        step = self.steps[name]
        key_file = step.out / KEY_FILE
        if not step.resumable or not key_file.is_file() or key_file.read_text() != step.key:
            return None
        return checkpoint_step(step.out)

    def _prepare(self, step: Step, *, force: bool) -> None:
        """An empty folder for a fresh start, or a resumable step's cut-off folder started under the same key."""
        key_file = step.out / KEY_FILE
        if step.out.exists() and (force or not step.resumable or not key_file.is_file() or key_file.read_text() != step.key):
            shutil.rmtree(step.out)
        if step.resumable:
            step.out.mkdir(parents=True, exist_ok=True)
            key_file.write_text(step.key)

    def _write_marker(self, step: Step, deps: dict[str, str | None], **fields: Any) -> None:
        """The marker: key, `fields` (seconds, finished), the manifest of the folder and the content
        digests of the inputs (`deps`) the step was made from."""
        inputs = self._inputs(step)
        write_json(step.out / MARKER, {"key": step.key, "step": step.name, **fields, "files": manifest.record(step.out),
                                       "deps": deps, **({"inputs": inputs} if inputs is not None else {})})

    def execute(self, name: str, *, force: bool = False, resume: bool = True,
                world: parallel.World | None = None) -> StepOutcome:
        """Run step `name` unless it is up to date (or an alias); the one place markers are read and written.

        A step whose outputs differ from its marker's manifest (damaged), or one of whose inputs
        was redone to other bytes since it ran (outdated), is started over and the console says
        why. `force` starts it over, discarding its folder. `resume=False` refuses to continue a
        cut-off run silently (ConfigError naming --resume and --force) where `resume=True` continues
        it from its last checkpoint. Under torchrun every rank calls this with its `world` and runs
        the action together; only the main rank checks and touches folders and markers, between
        barriers.
        """
        step = self.steps[name]
        main = world is None or world.main
        if world is not None:
            from codestage.train import parallel
        if step.alias_of:
            if main:
                self.console.print(f"[dim]= {name}: same inputs as {step.alias_of}, reusing it[/]")
            return StepOutcome(name, "alias", alias_of=step.alias_of)
        verdict = None if force or not main else self.verdict(name)
        if world is not None:
            verdict = parallel.broadcast_object(verdict, world)
        if verdict is not None and verdict.reusable:
            if main:
                self._reuse(step, verdict)
            return StepOutcome(name, "up_to_date")
        fresh = force or (verdict is not None and verdict.status in ("damaged", "outdated"))
        at = None if fresh else self.checkpoint(name)
        if at is not None and not resume:
            raise ConfigError(f"{step.out} holds a checkpoint at step {at} of this run; pass --resume to continue "
                              "it, or --force to start over")
        if main:
            if verdict is not None and verdict.status in ("damaged", "outdated"):
                self.console.print(f"[yellow]✗ {name}: {verdict.status} ({verdict.detail}), redoing[/]")
            self._prepare(step, force=fresh)
            self.console.print(f"[bold cyan]▶ {name}[/]" + (f" (resuming from step {at})" if at is not None else ""))
        deps = {d: self._content(d) for d in step.deps} if main else {}
        if world is not None:
            parallel.barrier(world)
        t0 = time.perf_counter()
        step.action(step.out)
        seconds = round(time.perf_counter() - t0, 2)
        if main:
            self._write_marker(step, deps, seconds=seconds, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        if world is not None:
            parallel.barrier(world)
        return StepOutcome(name, "ran", seconds)

    def _reuse(self, step: Step, verdict: Verdict) -> None:
        """Say a step is reused; record its files now if its marker predates manifests, or the new
        mtimes of big files whose full hash was checked (so the next check is cheap again)."""
        if verdict.status == "unverified":
            old = self._marker(step)
            assert isinstance(old, dict)
            self._write_marker(step, {d: self._content(d) for d in step.deps}, seconds=old.get("seconds"),
                               finished=old.get("finished"), recorded=time.strftime("%Y-%m-%dT%H:%M:%S"))
            self.console.print(f"[dim]✓ {step.name}: up to date (an older marker: structure checked, manifest recorded)[/]")
            return
        if verdict.touched:
            marker = self._marker(step)
            assert isinstance(marker, dict)
            for f in marker["files"]:
                f["mtime_ns"] = verdict.touched.get(f["path"], f.get("mtime_ns"))
            write_json(step.out / MARKER, marker)
        self.console.print(f"[dim]✓ {step.name}: up to date[/]")

    def discard(self, name: str) -> None:
        """Remove step `name`'s folder (an alias's belongs to the step it names), so that it runs from
        the start: --force under an executor, which then runs the step without --force, so that a
        retried or requeued attempt resumes from the new run's checkpoints instead of starting over."""
        step = self.steps[name]
        if step.alias_of is None and step.out.exists():
            shutil.rmtree(step.out)

    def select(self, only: list[str] | None = None) -> list[str]:
        """The names of the planned steps in order, or of those starting with one of `only`."""
        selected = [n for n in self.steps if not only or any(n.startswith(o) for o in only)]
        if only and not selected:
            raise ConfigError(f"--only {only}: no step matches; steps are {', '.join(self.steps)}")
        return selected

    def run(self, *, only: list[str] | None = None, force: bool = False) -> dict[str, StepOutcome]:
        """Execute every planned step (or those whose names start with one of `only`) in order, here."""
        return {name: self.execute(name, force=force) for name in self.select(only)}

    def run_table(self) -> dict[str, StudyRun]:
        """Per trained model: stage, folders, and which run it reuses (for the report)."""
        out = {}
        for s in self.steps.values():
            if "run" in s.info and not s.name.startswith("eval/"):
                run = s.info["run"]
                out[run] = StudyRun(run, s.info["stage"], s.out, self.steps[f"eval/{run}"].out, s.alias_of, s.info.get("base"))
        return out

    def resolved_config(self) -> dict[str, Any]:
        return config_to_dict(self.cfg)


def _changed_inputs(recorded: Any, now: dict[str, str | None] | None) -> str | None:
    """The first input file whose hash differs from the one a marker recorded (None: same, or
    nothing recorded to compare)."""
    if not isinstance(recorded, dict) or now is None:
        return None
    return next((name for name in sorted(set(recorded) | set(now)) if recorded.get(name) != now.get(name)), None)


def groups_of(members: Mapping[str, SourceConfig | InstructSetConfig]) -> dict[str, dict[str, float]]:
    """group -> {member: weight} of sources or instruction sets: what mixing schedules weight."""
    out: dict[str, dict[str, float]] = {}
    for name, m in members.items():
        out.setdefault(m.group, {})[name] = m.weight
    return out


__all__ = ["Study", "Step", "StepOutcome", "StudyRun", "Verdict", "groups_of"]
