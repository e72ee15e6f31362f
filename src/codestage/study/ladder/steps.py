"""The ladder as ordinary study steps (content-keyed, resumable, reused when identical):

    ladder/pretrain/RUN            one per (arm, size, budget): the rung's model and recipe (plan.py),
                                   writing snapshots at the checkpoint fractions (train.snapshots)
    ladder/eval/RUN                one per run: each snapshot ("0.25", ...) and the final model ("final")
                                   into its own folder, with the study's eval settings (MBPP generation
                                   only at "final" unless ladder.generate_intermediate, and never where
                                   eval.generate is false); ladder.json beside each one's results
    ladder/points                  POINTS from every evaluation (points.csv + items/), export.py
    ladder/fit                     the fit with its backtest: fit.json, report.md, plots/

`Study._plan` calls `add_ladder_steps` once the study's own steps are planned.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codestage.config import LadderConfig, ModelConfig
from codestage.errors import DataError
from codestage.study.ladder.export import RECORD, export_points, write_record
from codestage.study.ladder.plan import LADDER_PRESET, Rung, plan_ladder
from codestage.train import snapshots

if TYPE_CHECKING:
    from codestage.study.runner import Step, Study

POINTS = "points.csv"


def checkpoint_name(fraction: float) -> str:
    return "final" if fraction == 1.0 else f"{fraction:g}"


def add_ladder_steps(study: "Study", store_keys: dict[str, str]) -> None:
    cfg = study.cfg
    lc = cfg.ladder
    assert lc is not None
    root = study.out / "ladder"
    used = sorted(store_keys)
    evals: list[Step] = []
    eval_settings = cfg.eval.model_dump()
    for rung in plan_ladder(cfg).rungs:
        model = ModelConfig(preset=LADDER_PRESET, overrides=rung.model_overrides())
        train = rung.train_config(cfg.pretrain.train)
        run = study._add(
            f"ladder/pretrain/{rung.run}", root / "runs" / rung.run,
            {"stores": {n: store_keys[n] for n in used}, "groups": study.groups, "model": model.model_dump(),
             "train": train.model_dump(), "schedule": study.arm_schedules[rung.arm].to_json(), "seed": cfg.seed},
            lambda out, r=rung, m=model, t=train: study._pretrain(r.arm, out, m, t, name=f"ladder {r.run}"),
            deps=("tokenizer", *(f"store/{n}" for n in used)), ladder_run=rung.run)
        checkpoints = [{**_run_info(rung), "checkpoint": checkpoint_name(f), "fraction": f, "step": step, "tokens": tokens}
                       for f, step, tokens in rung.checkpoint_tokens()]
        evals.append(study._add(
            f"ladder/eval/{rung.run}", root / "eval" / rung.run,
            {"model": run.key, "checkpoints": checkpoints, "eval": eval_settings,
             "generate_intermediate": lc.generate_intermediate},
            lambda out, run=run, cps=checkpoints: _evaluate_run(study, run, cps, out),
            deps=(run.name,), ladder_run=rung.run, inputs=study._eval_data))
    points = study._add("ladder/points", root / "points", {"evals": [e.key for e in evals]},
                        lambda out: export_points([d for e in evals for d in checkpoint_dirs(e.out)], out / POINTS),
                        deps=tuple(e.name for e in evals), resumable=False)
    study._add("ladder/fit", root / "fit", {"points": points.key, "fit": lc.fit.model_dump(),
                                            "target": lc.target.model_dump(), "arms": lc.arms},
               lambda out: fit_points(points.out / POINTS, lc, out), deps=(points.name,), resumable=False)


def checkpoint_dirs(eval_out: Path) -> list[Path]:
    """The checkpoint folders of one run's `ladder/eval` step, in training order."""
    found = [p.parent for p in Path(eval_out).glob(f"*/{RECORD}")]
    return sorted(found, key=lambda p: json.loads((p / RECORD).read_text(encoding="utf-8"))["step"])


def _run_info(rung: Rung) -> dict[str, Any]:
    return {"arm": rung.arm, "run": rung.run, "size": rung.size, "budget": rung.budget, "params": rung.params,
            "total_params": rung.total_params, "layers": rung.shape.layers, "width": rung.shape.width}


def _evaluate_run(study: "Study", run: "Step", checkpoints: list[dict[str, Any]], out: Path) -> None:
    """Evaluate every checkpoint of a ladder run into out/CHECKPOINT/ (results.json, items.jsonl and
    ladder.json, which says which checkpoint it was). A checkpoint whose ladder.json is written is
    done: a cut-off step resumes with the next one."""
    lc = study.cfg.ladder
    assert lc is not None
    found = {s.step: s for s in snapshots.list_snapshots(run.out)}
    for info in checkpoints:
        dest = out / info["checkpoint"]
        if (dest / RECORD).is_file() and json.loads((dest / RECORD).read_text(encoding="utf-8")) == info:
            continue
        if info["checkpoint"] == "final":
            model_dir = run.out / "model"
        else:
            model_dir = snapshots.folder(run.out, info["step"])
            snap = found.get(info["step"])
            if snap is None:
                raise DataError(f"{model_dir}: the snapshot of step {info['step']} is missing from {run.out} "
                                f"(rerun {run.name} with --force)")
            if snap.tokens != info["tokens"]:
                raise DataError(f"{model_dir}: the snapshot saw {snap.tokens:,} tokens, the plan {info['tokens']:,}; "
                                f"the run was not made by this plan (rerun {run.name} with --force)")
        generate = info["checkpoint"] == "final" or lc.generate_intermediate
        eval_cfg = study.cfg.eval if generate else study.cfg.eval.model_copy(update={"generate": False})
        if dest.exists():
            shutil.rmtree(dest)
        study.evaluate_model(model_dir, dest, eval_cfg)
        write_record(dest, info)  # last: the checkpoint counts as evaluated only now


def fit_settings(lc: LadderConfig):
    from codestage.study.ladder.fit import FitSettings

    f = lc.fit
    return FitSettings(target=(lc.target.params, lc.target.tokens), arms=tuple(lc.arms or ()), bootstrap=f.bootstrap,
                       seed=f.seed, resample=f.resample, huber_delta=f.huber_delta, share_exponents=f.share_exponents,
                       step1_points=f.step1_points, holdout=f.holdout, last=f.last, workers=f.workers)


def fit_points(points_csv: Path, lc: LadderConfig, out: Path) -> None:
    """The `ladder/fit` step: fit.json, report.md and plots/ from the ladder's points."""
    from codestage.study.ladder.fit import fit_ladder, write_fit
    from codestage.study.ladder.points import load_points
    from codestage.study.ladder.report import render_report

    doc = fit_ladder(load_points(points_csv), fit_settings(lc), folder=out)
    write_fit(doc, out)
    render_report(doc, out)


__all__ = ["POINTS", "add_ladder_steps", "checkpoint_dirs", "checkpoint_name", "fit_points", "fit_settings"]
