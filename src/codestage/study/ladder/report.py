"""The ladder fit report: DIR/report.md and DIR/plots/*.png, rendered from fit.json alone (so
`codestage ladder report DIR` can redraw them). The paper's own 2.6B NL/CODE numbers sit beside
ours; a task maps to the paper's domain through the task registry (or is a domain name itself).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from codestage.atomic import write_text  # noqa: E402
from codestage.domains import DOMAIN_TABLE, DOMAINS  # noqa: E402
from codestage.errors import DataError  # noqa: E402
from codestage.resources import bundled  # noqa: E402

DASH = "—"
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def task_domain(task: str) -> str | None:
    """The paper's domain of a task name (or of a domain name), None when it has none."""
    from codestage.eval.registry import TASKS

    if task in DOMAINS:
        return task
    cls = TASKS.get(task)
    return cls.domain if cls is not None else None


def paper_numbers(path: Path | None = None) -> dict[str, dict[str, float | None]]:
    """{arm: {domain: value}} of the paper's pretraining table (percent; code_generation is BLEU)."""
    data = json.loads((path or bundled("paper", "reported_results.json")).read_text(encoding="utf-8"))
    return data["tables"]["pretrain"]


def load_fit(out: Path) -> dict[str, Any]:
    path = Path(out) / "fit.json"
    if not path.is_file():
        raise DataError(f"{path}: no fit.json here (run `codestage ladder fit` first)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON ({exc.msg} at line {exc.lineno})") from None
    if not str(doc.get("schema", "")).startswith("codestage.ladder.fit/"):
        raise DataError(f"{path}: not a ladder fit (schema {doc.get('schema')!r})")
    return doc


def _slug(task: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", task)


def _g(x: float | None, digits: int = 4) -> str:
    return DASH if x is None else f"{x:.{digits}g}"


def _ci(ci: list[float] | None, scale: float = 1.0, fmt: str = "{:.4g}") -> str:
    return "" if not ci else f" [{fmt.format(ci[0] * scale)}, {fmt.format(ci[1] * scale)}]"


def _pct(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:.1f}"


def _signed_pct(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:+.1f}"


def _p(p: float | None) -> str:
    return DASH if p is None else f"{p:.3f}"


# ---------------------------------------------------------------- plots
def _law(params: dict[str, float], n: np.ndarray, d: np.ndarray) -> np.ndarray:
    return params["E"] + params["A"] / n ** params["alpha"] + params["B"] / d ** params["beta"]


def _plot_loss(task: str, entry: dict, doc: dict, path: Path) -> None:
    target_n, target_d = doc["target"]["params"], doc["target"]["tokens"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for k, (arm, rep) in enumerate(entry["arms"].items()):
        color = _COLORS[k % len(_COLORS)]
        pts = rep["points"]
        c = np.array([6 * p["params"] * p["tokens"] for p in pts])
        loss = np.array([p["loss"] for p in pts])
        s1 = np.array([p["step1"] for p in pts])
        ax.scatter(c[~s1], loss[~s1], s=10, color=color, alpha=0.35)
        ax.scatter(c[s1], loss[s1], s=22, color=color, label=f"{arm} (fit points)")
        law = rep["step1"]["params"]
        ratios = sorted({round(p["tokens"] / p["params"], 6) for p in pts if p["step1"]})
        n_lo, n_hi = min(p["params"] for p in pts), max(p["params"] for p in pts)
        n_grid = np.geomspace(n_lo, n_hi, 60)
        for r in ratios:
            ax.plot(6 * n_grid * n_grid * r, _law(law, n_grid, n_grid * r), color=color, lw=0.8, ls=":")
        n_path = np.geomspace(n_lo, target_n, 100)
        ratio = target_d / target_n
        ax.plot(6 * n_path * n_path * ratio, _law(law, n_path, n_path * ratio), color=color, lw=1.5,
                label=f"{arm} law at {ratio:.3g} tokens/param")
        pred = rep["prediction"]
        _mark(ax, 6 * target_n * target_d, pred["loss"], None, pred.get("loss_ci95"), color)
    ax.axvline(6 * target_n * target_d, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("compute C = 6 N D (FLOPs)")
    ax.set_ylabel("task loss")
    ax.set_title(f"{task}: loss vs compute, extrapolated to the target (*)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _mark(ax, x: float, y: float, xci: list[float] | None, yci: list[float] | None, color: str) -> None:
    """A prediction (*) with its intervals drawn as lines from end to end: a percentile interval
    need not contain the point estimate, which error bars (offsets from the point) cannot show."""
    ax.plot([x], [y], marker="*", ms=11, color=color, ls="none")
    if yci:
        ax.plot([x, x], yci, color=color, lw=1.2, marker="_", ms=8)
    if xci:
        ax.plot(xci, [y, y], color=color, lw=1.2, marker="|", ms=8)


def _sigmoid(p: dict[str, float], loss: np.ndarray) -> np.ndarray:
    return np.clip(p["b"] + p["a"] / (1 + np.exp(np.clip(p["s"] * (loss - p["L0"]), -700, 700))), 0, 1)


def _plot_accuracy(task: str, entry: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    notes = []
    lo_all, hi_all = np.inf, -np.inf
    chance = entry.get("chance")
    for k, (arm, rep) in enumerate(entry["arms"].items()):
        color = _COLORS[k % len(_COLORS)]
        pts = [p for p in rep["points"] if p["accuracy"] is not None]
        if pts:
            loss = np.array([p["loss"] for p in pts])
            acc = np.array([p["accuracy"] for p in pts])
            ax.scatter(loss, acc, s=12, color=color, alpha=0.7, label=arm)
            lo_all, hi_all = min(lo_all, loss.min()), max(hi_all, loss.max())
        pred = rep["prediction"]
        lo_all = min(lo_all, pred["loss"])
        if rep["step2"] is None:
            notes.append(f"{arm}: no sigmoid: {rep['step2_why'].split(';')[0]}")
            continue
        grid = np.linspace(min(lo_all, pred["loss"]) * 0.95, hi_all * 1.02, 200)
        ax.plot(grid, _sigmoid(rep["step2"]["params"], grid), color=color, lw=1.5)
        _mark(ax, pred["loss"], pred["accuracy"], pred.get("loss_ci95"), pred.get("accuracy_ci95"), color)
    if chance is not None:
        ax.axhline(chance, color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xlabel("task loss")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{task}: accuracy vs loss; target prediction (*)", fontsize=10)
    if notes:
        ax.text(0.01, 0.01, "\n".join(notes), transform=ax.transAxes, fontsize=6, va="bottom")
    if ax.get_legend_handles_labels()[0]:  # no accuracy anywhere (MBPP without generation): no legend
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- markdown
def _backtest_cell(pred: dict, key: str, points: bool) -> str:
    """A backtest error beside a prediction: relative (%) for loss, absolute points for accuracy."""
    bt = pred.get("backtest")
    if not bt or bt.get(key) is None:
        return DASH
    return f"{100 * bt[key]:.1f} pt" if points else f"{100 * bt[key]:.1f}%"


EQUAL_FITS_SHOWN = 1e-3  # relative width of the equally-good-fit range from which the report names it


def _equal_fit_lines(doc: dict) -> list[str]:
    """The predictions the points do not pin down: step-1 fits as good as the best (Huber loss within
    1e-6) that predict a different target loss."""
    rows = []
    for task, e in doc["tasks"].items():
        for arm, rep in e["arms"].items():
            eq = rep["prediction"].get("equal_fits")
            if not eq:
                continue
            lo, hi = eq["loss_range"]
            if hi - lo > EQUAL_FITS_SHOWN * rep["prediction"]["loss"]:
                diff = (e.get("difference") or {}).get("loss", {}).get("equal_fits_range")
                rows.append(f"| {task} | {arm} | {_g(rep['prediction']['loss'])} | {_g(lo)}-{_g(hi)} "
                            f"({100 * (hi - lo) / rep['prediction']['loss']:.1f}%) | {eq['fits']} | "
                            + (DASH if diff is None else f"{diff[0]:+.4g} to {diff[1]:+.4g}") + " |")
    if not rows:
        return []
    return ["", "**Predictions the points do not pin down.** These step-1 fits have equally good fits (Huber loss "
            "within 1e-6 of the best) that extrapolate differently: any value in the range fits the points as well as "
            "the one reported, which is whichever end point the search reached. The bootstrap interval is the wider "
            "measure; this range says the point prediction carries no more digits than it shows.", "",
            "| task | arm | prediction | equally good fits predict | fits | difference over them |",
            "|---|---|---|---|---|---|", *rows]


def _tables(doc: dict) -> list[str]:
    arms = doc["arms"]
    two = len(arms) == 2
    diff = doc.get("difference") or ""
    paper = paper_numbers()
    lines = ["## Predictions at the target", "",
             "### Task loss", "",
             "| task | " + " | ".join(f"{a} [95% CI]" for a in arms) + (f" | {diff} [95% CI] | p" if two else "")
             + " | backtest rel. error (" + " / ".join(arms) + ") | predictability: loss std, last checkpoints |",
             "|---|" + "---|" * len(arms) + ("---|---|" if two else "") + "---|---|"]
    for task, e in doc["tasks"].items():
        cells = [task]
        for a in arms:
            pr = e["arms"][a]["prediction"]
            cells.append(f"{_g(pr['loss'])}{_ci(pr.get('loss_ci95'))}")
        if two:
            d = e["difference"]["loss"]
            cells += [f"{d['value']:+.4g}{_ci(d.get('ci95'), fmt='{:+.4g}')}", _p(d.get("p_value"))]
        cells.append(" / ".join(_backtest_cell(e["arms"][a]["prediction"], "loss_rel_error", False) for a in arms))
        pd = e["predictability"]
        cells.append(DASH if "loss_std" not in pd else f"{pd['loss_std']:.3g} ({100 * pd['loss_rel_std']:.2f}%)")
        lines.append("| " + " | ".join(cells) + " |")
    lines += _equal_fit_lines(doc)
    lines += ["", "### Accuracy (%)", "",
              "The paper's columns are Ma et al.'s PanGu-alpha 2.6B pretraining numbers for the task's domain "
              "(code generation: BLEU, not accuracy).", "",
              "| task | domain | " + " | ".join(f"{a} [95% CI]" for a in arms) + (f" | {diff} [95% CI] | p" if two else "")
              + " | backtest abs. error (" + " / ".join(arms) + ") | accuracy std, last checkpoints | "
              + " | ".join(f"paper {a}" for a in arms) + (" | paper diff" if two else "") + " |",
              "|---|---|" + "---|" * len(arms) + ("---|---|" if two else "") + "---|---|" + "---|" * len(arms)
              + ("---|" if two else "")]
    why: list[str] = []
    for task, e in doc["tasks"].items():
        domain = task_domain(task)
        cells = [task, DOMAIN_TABLE[domain].label if domain else DASH]
        for a in arms:
            pr = e["arms"][a]["prediction"]
            cells.append(DASH if pr["accuracy"] is None else f"{_pct(pr['accuracy'])}{_ci(pr.get('accuracy_ci95'), 100, '{:.1f}')}")
            if pr["accuracy"] is None:
                why.append(f"- {task} / {a}: {pr.get('accuracy_why')}")
        if two:
            d = e["difference"]["accuracy"]
            cells += [DASH, DASH] if d is None else [f"{_signed_pct(d['value'])}{_ci(d.get('ci95'), 100, '{:+.1f}')}",
                                                      _p(d.get("p_value"))]
        cells.append(" / ".join(_backtest_cell(e["arms"][a]["prediction"], "accuracy_abs_error", True) for a in arms))
        pd = e["predictability"]
        cells.append(DASH if pd.get("accuracy_std") is None else f"{100 * pd['accuracy_std']:.2f} pt")
        vals = [paper.get(a, {}).get(DOMAIN_TABLE[domain].paper_column) if domain else None for a in arms]
        cells += [DASH if v is None else f"{v:g}" for v in vals]
        if two:
            cells.append(DASH if None in vals else f"{vals[1] - vals[0]:+.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    if why:
        lines += ["", "No accuracy prediction where step 2 could not be fitted:", "", *why]
    return lines


def _task_section(task: str, entry: dict, doc: dict) -> list[str]:
    slug = _slug(task)
    lines = [f"### {task}", "", f"![loss vs compute](plots/{slug}_loss.png) ![accuracy vs loss](plots/{slug}_accuracy.png)", "",
             "| arm | E | A | alpha | B | beta | step-1 points | rmse (log) | sigmoid a, b, s, L0 | rmse |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for arm, rep in entry["arms"].items():
        s1 = rep["step1"]
        p = s1["params"]
        s2 = rep["step2"]
        sig = DASH if s2 is None else ", ".join(f"{s2['params'][k]:.3g}" for k in ("a", "b", "s", "L0"))
        shared = " (shared exponents)" if s1["shared_exponents"] else ""
        rmse2 = DASH if s2 is None else f"{s2['rmse']:.4f}"
        lines.append(f"| {arm}{shared} | {p['E']:.4g} | {p['A']:.4g} | {p['alpha']:.3f} | {p['B']:.4g} | {p['beta']:.3f} | "
                     f"{s1['n_points']} | {s1['rmse_log']:.4f} | {sig} | {rmse2} |")
    bt = entry.get("backtest")
    if bt is not None:
        if "why" in bt:
            lines += ["", f"Backtest: {bt['why']}"]
        else:
            lines += ["", "Backtest (held-out rungs, refit without them):", "",
                      "| arm | run | params | tokens | loss | predicted | equally good fits predict | rel. error | "
                      "accuracy | predicted | abs. error |",
                      "|---|---|---|---|---|---|---|---|---|---|---|"]
            for arm, b in bt["arms"].items():
                for c in b["held_out"]:
                    err = DASH if c["accuracy_abs_error"] is None else f"{100 * c['accuracy_abs_error']:.1f} pt"
                    eq = c.get("loss_pred_equal_fits")
                    eq_cell = DASH if eq is None else f"{eq[0]:.4g}-{eq[1]:.4g}"
                    lines.append(f"| {arm} | {c['run']} | {c['params']:.3g} | {c['tokens']:.3g} | {c['loss']:.4g} | "
                                 f"{c['loss_pred']:.4g} | {eq_cell} | {100 * c['loss_rel_error']:.2f}% | {_pct(c['accuracy'])} | "
                                 f"{_pct(c['accuracy_pred'])} | {err} |")
    return lines + [""]


def render_report(doc: dict[str, Any], out: Path) -> Path:
    """Write out/report.md and out/plots/<task>_{loss,accuracy}.png; returns the report's path."""
    out = Path(out)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    for task, entry in doc["tasks"].items():
        _plot_loss(task, entry, doc, plots / f"{_slug(task)}_loss.png")
        _plot_accuracy(task, entry, plots / f"{_slug(task)}_accuracy.png")
    t = doc["target"]
    s = doc["settings"]
    inputs = doc["inputs"]
    lines = [f"# Ladder fit: predictions at N = {t['params']:.3g}, D = {t['tokens']:.3g} (C = {t['compute']:.3g} FLOPs)", "",
             f"POINTS: `{inputs['points']}`{'' if Path(inputs['points']).is_absolute() else ' (from this folder)'} (sha256 {inputs['sha256'][:12]}, {inputs['rows']} rows, params counted as "
             f"{inputs['params_kind'].replace('_', '-')}); arms {', '.join(doc['arms'])}"
             + (f"; difference {doc['difference']}" if doc.get("difference") else "") + ".", "",
             f"Step 1: {s['law']} (Huber delta {s['huber_delta']:g}, {'shared' if s['share_exponents'] else 'per-arm'} "
             f"exponents, {'final checkpoints' if s['step1_points'] == 'final' else 'every checkpoint'}); "
             f"step 2: {s['sigmoid']}. Intervals: {s['bootstrap']} bootstrap replicates ({s['resample']}"
             + (", and items" if inputs.get("item_level_tasks") else "") + f"), seed {s['seed']}; "
             f"p: {s['p_value']}."
             + (f" Backtest: held out {doc['holdout']['spec']!r} ({len(doc['holdout']['runs'])} runs)." if doc.get("holdout") else ""),
             "", *_tables(doc), "", "## Per task", ""]
    for task, entry in doc["tasks"].items():
        lines += _task_section(task, entry, doc)
    lines += ["## How to read this", "",
              "Each prediction extrapolates a law fitted on small runs far beyond them; the interval covers the "
              "noise the bootstrap resamples, not a wrong functional form. Trust a task when its backtest error is "
              "small, its loss and accuracy vary little over the last checkpoints, and its step-2 points span the "
              "sigmoid's bend. See docs/ladder.md for every field and the limits.", ""]
    path = out / "report.md"
    write_text(path, "\n".join(lines))
    return path


def _reading(task: str, e: dict, arms: list[str]) -> str:
    """One task's prediction in words: the difference's sign where its interval excludes zero, else
    "cannot be told apart"; the backtest's error beside it."""
    if len(arms) < 2:
        pr = e["arms"][arms[0]]["prediction"]
        return f"- **{task}**: {arms[0]} task loss {_g(pr['loss'])} bits/byte{_ci(pr.get('loss_ci95'))} at the target."
    a, b = arms
    d = e["difference"]["loss"]
    lo, hi = d.get("ci95") or (None, None)
    if lo is None:
        words = "no interval (no bootstrap)"
    elif lo > 0:
        words = f"{b} is predicted worse (higher loss)"
    elif hi < 0:
        words = f"{b} is predicted better (lower loss)"
    else:
        words = "the arms cannot be told apart"
    text = f"- **{task}**: task loss {b} - {a} = {d['value']:+.4g} bits/byte{_ci(d.get('ci95'), fmt='{:+.4g}')}: {words}"
    acc = e["difference"]["accuracy"]
    if acc is None:
        why = [f"{x}: {e['arms'][x]['prediction']['accuracy_why']}" for x in arms
               if e["arms"][x]["prediction"].get("accuracy_why")]
        text += f"; accuracy not predicted ({'; '.join(why) or 'no step 2'})"
    else:
        alo, ahi = acc.get("ci95") or (None, None)
        sign = ("cannot be told apart" if alo is None or alo <= 0 <= ahi
                else f"{b} helps" if alo > 0 else f"{b} hurts")
        text += f"; accuracy {b} - {a} = {_signed_pct(acc['value'])} points{_ci(acc.get('ci95'), 100, '{:+.1f}')}: {sign}"
    errs = [e["arms"][x]["prediction"].get("backtest") or {} for x in arms]
    if any(x.get("loss_rel_error") is not None for x in errs):
        text += ("; backtest loss error " + " / ".join(DASH if x.get("loss_rel_error") is None
                                                      else f"{100 * x['loss_rel_error']:.1f}%" for x in errs)
                 + f" ({' / '.join(arms)})")
    return text + "."


def study_section(fit_dir: Path, rel: str) -> list[str]:
    """The study report's ladder section from a `ladder/fit` folder (`rel`: its path from the report)."""
    doc = load_fit(fit_dir)
    t = doc["target"]
    arms = list(doc["arms"])
    lines = ["## Ladder: predictions at the target", "",
             f"From the ladder's small runs, fitted and extrapolated to N = {t['params']:.3g} parameters and "
             f"D = {t['tokens']:.3g} tokens (95% intervals; full tables, fits, backtest and plots in "
             f"[{rel}/report.md]({rel}/report.md)). Task loss is the bits per byte of the gold answer (lower is better).", ""]
    lines += [_reading(task, e, arms) for task, e in doc["tasks"].items()]
    return lines + ["", "An interval covers the noise of the ladder's points and items, not a wrong law: read a task's "
                    "prediction with its backtest error (the largest rung predicted from the others).", ""]
