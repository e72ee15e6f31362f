"""Run a study: tokenizer -> stores -> pretraining arms -> instruction runs -> evaluation -> report.

Each step has a key: a hash of its config section, its inputs' fingerprints and the keys of the
steps it depends on. A step whose output folder holds a marker with the same key is skipped; a
training step that was cut off resumes from its last complete checkpoint. Two runs with the same
key (the paper's CC run *is* its stepwise-decrease run) are trained once and both names point to it.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from codestage.atomic import write_json
from codestage.config import StudyConfig, config_to_dict
from codestage.data.instructions import read_examples
from codestage.data.sources import expand_paths, iter_documents, sample_texts
from codestage.data.store import TokenStore
from codestage.data.tokenizer import load_tokenizer, train_bpe
from codestage.errors import ConfigError
from codestage.hashing import sha256_json
from codestage.model import build_model, load_model, model_config
from codestage.train.instruct import instruct_tune
from codestage.train.pretrain import build_schedule, pretrain

MARKER = ".step.json"


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
    name: str
    out: Path
    key: str
    action: Callable[[Path], None]
    alias_of: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


class Study:
    """Plans and runs the steps of one study into `out_dir`."""

    def __init__(self, cfg: StudyConfig, out_dir: Path, *, console: Console | None = None, progress: bool = True) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.console = console or Console(stderr=True)
        self.progress = progress
        self.steps: dict[str, Step] = {}
        self._plan()

    # ----------------------------------------------------------------- planning
    def _paths(self, raw: list[str]) -> list[Path]:
        return expand_paths(raw, base=self.cfg.base_dir)

    def _add(self, name: str, out: Path, key_parts: dict[str, Any], action: Callable[[Path], None], **info: Any) -> Step:
        key = sha256_json(key_parts)
        alias = next((s.name for s in self.steps.values() if s.key == key and s.alias_of is None), None)
        step = Step(name, self.steps[alias].out if alias else out, key, action, alias, info)
        self.steps[name] = step
        return step

    def _plan(self) -> None:
        cfg = self.cfg
        source_paths = {n: self._paths(s.paths) for n, s in cfg.sources.items()}
        self.groups = _groups({n: (s.group, s.weight) for n, s in cfg.sources.items()})

        tok_key = {"tokenizer": cfg.tokenizer.model_dump(),  # no seed: BPE training is deterministic
                   "sources": {n: [s.model_dump(), _fingerprint(source_paths[n])] for n, s in cfg.sources.items()}}
        if cfg.tokenizer.path:
            tok_key = {"tokenizer_dir": _fingerprint(self._paths([cfg.tokenizer.path]))}
        tok = self._add("tokenizer", self.out / "tokenizer", tok_key, self._make_tokenizer)

        store_keys = {}
        for n, s in cfg.sources.items():
            st = self._add(f"store/{n}", self.out / "stores" / n,
                           {"tok": tok.key, "source": s.model_dump(), "files": _fingerprint(source_paths[n]),
                            "strict": cfg.data.strict},
                           lambda out, n=n: self._make_store(n, out))
            store_keys[n] = st.key
        if cfg.data.decontam:  # test-set overlap of all training data, reported (codestage.data.decontam)
            sets = {n: [s.model_dump(), _fingerprint(self._paths(s.paths))] for n, s in cfg.instruct.sets.items()}
            self._add("decontam", self.out / "decontam",
                      {"sources": {n: [s.model_dump(), _fingerprint(source_paths[n])] for n, s in cfg.sources.items()},
                       "sets": sets, "n": cfg.data.decontam_n, "tasks": cfg.eval.tasks, "eval_dir": cfg.eval.data_dir},
                      self._decontam)

        self.arm_schedules = {}
        for arm, mix in cfg.pretrain.arms.items():
            self.arm_schedules[arm] = build_schedule(mix, self.groups, where=f"pretrain.arms.{arm}")
            used = sorted(store_keys)
            self._add(f"pretrain/{arm}", self.out / "runs" / arm,
                      {"stores": {n: store_keys[n] for n in used}, "groups": self.groups, "model": cfg.model.model_dump(),
                       "train": cfg.pretrain.train.model_dump(), "schedule": self.arm_schedules[arm].to_json(), "seed": cfg.seed},
                      lambda out, arm=arm: self._pretrain(arm, out), stage="pretrain", run=arm)

        runs = cfg.instruct.runs
        if runs and not cfg.instruct.sets:
            raise ConfigError("instruct.runs are given but instruct.sets is empty")
        set_paths = {n: self._paths(s.paths) for n, s in cfg.instruct.sets.items()}
        self.instruct_groups = _groups({n: (s.group, s.weight) for n, s in cfg.instruct.sets.items()})
        self.run_schedules = {}
        for name, run in runs.items():
            self.run_schedules[name] = build_schedule(run.mixture, self.instruct_groups, where=f"instruct.runs.{name}.mixture")
            base = self.steps[f"pretrain/{run.base}"]
            self._add(f"instruct/{name}", self.out / "runs" / name,
                      {"base": base.key, "sets": {n: [s.model_dump(), _fingerprint(set_paths[n])] for n, s in cfg.instruct.sets.items()},
                       "groups": self.instruct_groups, "template": cfg.instruct.template, "train": cfg.instruct.train.model_dump(),
                       "schedule": self.run_schedules[name].to_json()},
                      lambda out, name=name: self._instruct(name, out), stage=run.table, run=name, base=run.base)

        for step in [s for s in list(self.steps.values()) if "run" in s.info]:
            run = step.info["run"]
            self._add(f"eval/{run}", self.out / "eval" / run, {"model": step.key, "eval": cfg.eval.model_dump()},
                      lambda out, step=step: self._evaluate(step, out), run=run)

    # ----------------------------------------------------------------- actions
    def _make_tokenizer(self, out: Path) -> None:
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
        from codestage.data.decontam import TrainingSet, decontaminate

        sets = [TrainingSet(n, tuple(map(str, self._paths(s.paths))), "pretrain", s.text_field) for n, s in self.cfg.sources.items()]
        sets += [TrainingSet(n, tuple(map(str, self._paths(s.paths))), "instruct") for n, s in self.cfg.instruct.sets.items()]
        e = self.cfg.eval
        data_dir = self._paths([e.data_dir])[0] if e.data_dir else None
        write_json(out / "decontam.json", decontaminate(sets, list(e.tasks), data_dir=data_dir, n=self.cfg.data.decontam_n,
                                                        workers=self.cfg.data.workers or 1))

    def _pretrain(self, arm: str, out: Path) -> None:
        tok = self.tokenizer()
        stores = {n: TokenStore.open(self.steps[f"store/{n}"].out) for n in self.cfg.sources}
        mc = self.cfg.model
        if mc.init_from:
            model = load_model(self._paths([mc.init_from])[0])
        else:
            conf = model_config(mc.preset, len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **mc.overrides)
            model = build_model(conf, seed=self.cfg.seed)
        train_cfg = self.cfg.pretrain.train.model_copy(update={"seed": self.cfg.seed})  # the study's seed drives data order too
        pretrain(model, tok, stores, self.groups, self.arm_schedules[arm], train_cfg, out,
                 name=f"pretrain {arm}", progress=self.progress)

    def _instruct(self, name: str, out: Path) -> None:
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
        from codestage.eval.harness import evaluate, load_scorer
        from codestage.eval.heldout import heldout_loss

        e = self.cfg.eval
        data_dir = self._paths([e.data_dir])[0] if e.data_dir else None
        model_dir = model_step.out / "model"
        scorer = load_scorer(model_dir, device=e.device, batch_size=e.batch_size)  # loaded once for tasks and losses
        evaluate(model_dir, list(e.tasks), out, data_dir=data_dir, sample=e.sample, seed=self.cfg.seed,
                 protocol=e.protocol, shots=e.shots, max_new_tokens=e.max_new_tokens, execute=e.execute, scorer=scorer,
                 lenient=e.lenient)
        if e.heldout:
            losses = {name: heldout_loss(scorer.model, scorer.tokenizer, [str(p) for p in self._paths(h.paths)],
                                         skip_docs=h.skip_docs, max_tokens=h.max_tokens, text_field=h.text_field)
                      for name, h in e.heldout.items()}
            write_json(out / "heldout.json", losses)

    # ----------------------------------------------------------------- running
    def is_done(self, step: Step) -> bool:
        marker = step.out / MARKER
        if not marker.is_file():
            return False
        try:
            return json.loads(marker.read_text()).get("key") == step.key
        except json.JSONDecodeError:
            return False

    def _prepare(self, step: Step) -> None:
        """Keep a cut-off training run's folder (to resume) only if it was started with the same key."""
        key_file = step.out / ".key"
        if step.out.exists() and (not key_file.is_file() or key_file.read_text() != step.key):
            shutil.rmtree(step.out)
        step.out.mkdir(parents=True, exist_ok=True)
        key_file.write_text(step.key)

    def run(self, *, only: list[str] | None = None, force: bool = False) -> dict[str, Any]:
        """Run every planned step (or those whose names start with one of `only`) in order."""
        timings: dict[str, Any] = {}
        selected = [s for s in self.steps.values() if not only or any(s.name.startswith(o) for o in only)]
        if only and not selected:
            raise ConfigError(f"--only {only}: no step matches; steps are {', '.join(self.steps)}")
        for step in selected:
            if step.alias_of:
                self.console.print(f"[dim]= {step.name}: same inputs as {step.alias_of}, reusing it[/]")
                timings[step.name] = {"alias_of": step.alias_of}
                continue
            if self.is_done(step) and not force:
                self.console.print(f"[dim]✓ {step.name}: up to date[/]")
                timings[step.name] = {"skipped": True}
                continue
            if force and step.out.exists():
                shutil.rmtree(step.out)
            self.console.print(f"[bold cyan]▶ {step.name}[/]")
            t0 = time.perf_counter()
            if step.name == "tokenizer" or step.name.startswith("store/"):
                if step.out.exists():
                    shutil.rmtree(step.out)
                step.action(step.out)
            else:
                self._prepare(step)
                step.action(step.out)
            seconds = round(time.perf_counter() - t0, 2)
            write_json(step.out / MARKER, {"key": step.key, "step": step.name, "seconds": seconds,
                                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
            timings[step.name] = {"seconds": seconds}
        return timings

    def run_table(self) -> dict[str, dict[str, Any]]:
        """Per run: stage, folder, and which run it reuses (for the report)."""
        out = {}
        for s in self.steps.values():
            if "run" in s.info and not s.name.startswith("eval/"):
                run = s.info["run"]
                ev = self.steps[f"eval/{run}"]
                out[run] = {"stage": s.info["stage"], "dir": s.out, "eval_dir": ev.out, "alias_of": s.alias_of,
                            "base": s.info.get("base")}
        return out

    def resolved_config(self) -> dict[str, Any]:
        return config_to_dict(self.cfg)


def _groups(members: dict[str, tuple[str, float]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, (group, weight) in members.items():
        out.setdefault(group, {})[name] = weight
    return out


__all__ = ["Study", "Step"]
