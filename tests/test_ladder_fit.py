"""The ladder fit (codestage.study.ladder): the two laws recovered from points drawn from a known
truth, a published scaling dataset refitted to its published estimates, bootstrap intervals that
cover the truth, the backtest's errors against known values, step 2 refused honestly at chance,
malformed POINTS through the command (exit 2 and one clear line), and the command end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from test_cli import run_cli  # the command as a user runs it: exit status and one line of output

from codestage.errors import ConfigError, DataError
from codestage.study.ladder.fit import FitSettings, fit_ladder, parse_target
from codestage.study.ladder.law import (EXP_MAX, Law, LawData, check_identifiable, fit_law, fit_sigmoid, huber,
                                        log_law, natural, refit_law)
from codestage.study.ladder.points import EXAMPLE_POINTS, load_points
from codestage.study.ladder.simulate import TrueLaw, simulate_rows, write_rows

TARGET = (2.6e9, 4.2e10)
NL = TrueLaw(E=0.8, A=200.0, B=400.0, alpha=0.34, beta=0.28, a=0.5, s=3.0, L0=3.3, chance=0.25)
CODE = TrueLaw(E=0.78, A=200.0, B=380.0, alpha=0.34, beta=0.28, a=0.5, s=3.0, L0=3.3, chance=0.25)


def small_ladder(tmp: Path, *, tasks=("logic",), laws=None, seed: int = 1, n_items: int = 400, name="points.csv") -> Path:
    """4 sizes x 2 budgets x 4 checkpoints x 2 arms: the shape of the GPU ladder."""
    laws = laws or {"NL": NL, "CODE": CODE}
    rows = simulate_rows({(arm, t): law for t in tasks for arm, law in laws.items()}, [5e6, 1e7, 2e7, 4e7], [10, 40],
                         [0.25, 0.5, 0.75, 1.0], noise=0.01, n_items=n_items, seed=seed)
    return write_rows(rows, tmp / name)


# ---------------------------------------------------------------- step 1 and step 2 on known truths
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_step1_recovers_a_known_law(seed) -> None:
    """30 points (6 sizes 2e7-1e9 x 5 budgets of 5-80 tokens/param), 0.2% log-normal noise.
    Tolerances (hold for 20 of 20 seeds tried): E 6%, A 50% (A trades off against alpha), B 15%,
    alpha 0.04, beta 0.01 absolute, and the prediction at N=2.6e9, D=4.2e10 within 1%."""
    sizes = np.geomspace(2e7, 1e9, 6)
    n = np.repeat(sizes, 5)
    d = n * np.tile([5, 10, 20, 40, 80], 6)
    truth = TrueLaw(E=0.8, A=200.0, B=400.0, alpha=0.34, beta=0.28)
    rng = np.random.default_rng(seed)
    loss = truth.loss(n, d) * np.exp(rng.normal(0.0, 0.002, n.shape))
    fit = fit_law(LawData.build(n, d, loss), Law())
    p = natural(fit.law, fit.theta)[0]
    assert fit.converged
    assert abs(p["E"] / truth.E - 1) < 0.06
    assert abs(p["A"] / truth.A - 1) < 0.50
    assert abs(p["B"] / truth.B - 1) < 0.15
    assert abs(p["alpha"] - truth.alpha) < 0.04
    assert abs(p["beta"] - truth.beta) < 0.01
    pred = float(np.exp(fit.log_predict(np.array([TARGET[0]]), np.array([TARGET[1]]))[0]))
    assert abs(pred / float(truth.loss(*TARGET)) - 1) < 0.01


def test_step1_reproduces_the_published_chinchilla_refit() -> None:
    """The shipped example (Hoffmann et al.'s Figure 4 points as extracted by Besiroglu et al. 2024)
    without its 5 highest-loss points (their 240-point fit) gives their estimates E = 1.8172,
    A = 482.01, B = 2085.43, alpha = 0.3478, beta = 0.3658, and a Huber loss no worse than theirs."""
    pts = load_points(EXAMPLE_POINTS)
    assert pts.params_kind == "total" and len(pts.loss) == 245
    keep = np.sort(np.argsort(-pts.loss)[5:])
    data = LawData.build(pts.params[keep], pts.tokens[keep], pts.loss[keep])
    fit = fit_law(data, Law(), delta=1e-3)
    p = natural(fit.law, fit.theta)[0]
    assert abs(p["E"] - 1.8172) < 0.01
    assert abs(p["alpha"] - 0.3478) < 0.005 and abs(p["beta"] - 0.3658) < 0.005
    assert abs(p["A"] / 482.01 - 1) < 0.05 and abs(p["B"] / 2085.43 - 1) < 0.10
    theirs = np.array([math.log(482.01), math.log(2085.43), math.log(1.8172), 0.3478, 0.3658])
    their_loss = huber(log_law(theirs, data.u, data.v)[0] - data.y, 1e-3)
    assert fit.cost <= their_loss


# logiqa_zh's final checkpoints in docs/results/ladder/run2/points.csv (arm, params, tokens, loss): its
# shared-exponent fit lies in a valley of equally good fits that extrapolate differently
VALLEY = [("NL", 426624, 1703936, 3.612878883), ("NL", 426624, 2990080, 3.387075547),
          ("NL", 1328448, 5308416, 3.378175145), ("NL", 1328448, 9306112, 3.347619954),
          ("NL", 3213568, 12845056, 3.321885368), ("NL", 3213568, 22478848, 3.284557937),
          ("NL", 6352320, 25411584, 3.262305058), ("NL", 6352320, 44482560, 3.198441597),
          ("CODE", 426624, 1703936, 3.94881014), ("CODE", 426624, 2990080, 4.113397009),
          ("CODE", 1328448, 5308416, 3.373866089), ("CODE", 1328448, 9306112, 3.50134309),
          ("CODE", 3213568, 12845056, 3.306566982), ("CODE", 3213568, 22478848, 3.255188745),
          ("CODE", 6352320, 25411584, 3.147128187), ("CODE", 6352320, 44482560, 3.115933105)]


def test_equally_good_fits_that_extrapolate_differently_are_found_and_reported(tmp_path) -> None:
    """At Huber delta 1e-3 the loss is nearly absolute: on these real points fits within 1e-6 of the
    best loss predict CODE's target loss 5% apart. fit_law must find them (each as good as the best,
    none better), and fit.json and the report must give the range instead of one arbitrary digit string."""
    group = np.array([0 if a == "NL" else 1 for a, *_ in VALLEY])
    n, d, loss = (np.array([r[k] for r in VALLEY], dtype=np.float64) for k in (1, 2, 3))
    data = LawData.build(n, d, loss, group)
    fit = fit_law(data, Law(groups=2, shared=True))
    res = lambda theta: log_law(fit.law.per_group(theta)[data.group], data.u, data.v)[0] - data.y  # noqa: E731
    costs = [huber(res(t), 1e-3) for t in fit.equal_fits]
    assert costs[0] == pytest.approx(fit.cost) and min(costs) >= fit.cost * (1 - 1e-12)
    assert max(costs) <= fit.cost * (1 + 1e-6)
    code = [math.exp(log_law(fit.law.per_group(t)[1], math.log(TARGET[0]), math.log(TARGET[1]))[0])
            for t in fit.equal_fits]
    assert len(fit.equal_fits) >= 3 and (max(code) - min(code)) / min(code) > 0.03
    lo, hi = fit.law.bounds(float(data.y.max()))
    assert all(np.all(t >= lo) and np.all(t <= hi) for t in fit.equal_fits)  # the bounded problem's points

    rows = [{"arm": a, "task": "logic", "params": p, "tokens": t, "loss": l} for a, p, t, l in VALLEY]
    doc = fit_ladder(load_points(write_rows(rows, tmp_path / "p.csv")), FitSettings(bootstrap=100))
    pred = doc["tasks"]["logic"]["arms"]["CODE"]["prediction"]
    lo, hi = pred["equal_fits"]["loss_range"]
    assert lo <= pred["loss"] <= hi and (hi - lo) / pred["loss"] > 0.03
    ci = pred["loss_ci95"]  # refits from the chosen fit still move (an A left at e^-700 froze them all)
    assert (ci[1] - ci[0]) / pred["loss"] > 0.1
    diff = doc["tasks"]["logic"]["difference"]["loss"]
    assert diff["equal_fits_range"][0] <= diff["value"] <= diff["equal_fits_range"][1]
    from codestage.study.ladder.report import render_report
    text = render_report(doc, tmp_path / "fit").read_text()
    assert "do not pin down" in text and "| logic | CODE |" in text
    # a percentile interval need not contain the point estimate (a refit can find a better minimum
    # than the replicates): the plots must still draw it
    pred["loss_ci95"] = [pred["loss"] * 1.01, pred["loss"] * 1.1]
    render_report(doc, tmp_path / "fit")
    assert (tmp_path / "fit" / "plots" / "logic_loss.png").stat().st_size > 0


def test_refit_reaches_the_replicates_minimum_on_real_points() -> None:
    """VALLEY's points (a real ladder), runs drawn with replacement within each arm: the refit ends
    within 1e-3 of the minimum the full multi-start fit finds on the same replicate in at least 24
    of 30 replicates (measured: 26). Warm-started alone it did in 5 of 30 (the objective has
    several basins, some at a bound), which made the intervals on the GPU ladder too narrow; the
    cold fit from the replicate's own best grid start beside it closes most of the gap."""
    group = np.array([0 if a == "NL" else 1 for a, *_ in VALLEY])
    n, d, loss = (np.array([r[k] for r in VALLEY], dtype=np.float64) for k in (1, 2, 3))
    law = Law(groups=2, shared=True)
    centre = fit_law(LawData.build(n, d, loss, group), law)
    rng = np.random.default_rng(0)
    hits = tried = 0
    while tried < 30:
        rows = np.concatenate([rng.choice(np.flatnonzero(group == g), 8) for g in (0, 1)])
        data = LawData.build(n[rows], d[rows], loss[rows], group[rows])
        if check_identifiable(data, law) is not None:
            continue
        tried += 1
        theta = refit_law(centre, data, data.y)
        if theta is None:
            continue
        cost = huber(log_law(law.per_group(theta)[data.group], data.u, data.v)[0] - data.y, 1e-3)
        hits += cost <= fit_law(data, law).cost * (1 + 1e-3)
    assert hits >= 24


def test_a_well_determined_fit_has_no_spread_among_its_equal_fits() -> None:
    """Clean points of a known law: every equally good fit predicts the same target loss (1e-4),
    so the report's range appears only where the points leave the prediction open."""
    sizes = np.geomspace(2e7, 1e9, 6)
    n = np.repeat(sizes, 5)
    d = n * np.tile([5, 10, 20, 40, 80], 6)
    loss = TrueLaw(E=0.8, A=200.0, B=400.0, alpha=0.34, beta=0.28).loss(n, d)
    fit = fit_law(LawData.build(n, d, loss * np.exp(np.random.default_rng(0).normal(0, 0.002, n.shape))), Law())
    preds = [log_law(t, math.log(TARGET[0]), math.log(TARGET[1]))[0] for t in fit.equal_fits]
    assert max(preds) - min(preds) < 1e-4



@pytest.mark.parametrize("chance", [0.25, None])
def test_step2_sigmoid_recovers_a_known_curve(chance) -> None:
    rng = np.random.default_rng(3)
    loss = np.linspace(2.0, 5.0, 60)
    acc_true = 0.25 + 0.5 / (1 + np.exp(3.0 * (loss - 3.3)))
    acc = rng.binomial(1000, acc_true) / 1000
    fit, why = fit_sigmoid(loss, acc, chance)
    assert why is None and fit is not None
    p = fit.curve.natural(fit.p)
    assert abs(p["a"] - 0.5) < 0.03 and abs(p["L0"] - 3.3) < 0.05 and abs(p["s"] - 3.0) < 0.4
    assert abs(p["b"] - 0.25) < 0.02
    assert fit.rmse < 0.02


def test_step2_refused_at_chance_and_step1_still_reported(tmp_path) -> None:
    flat = {arm: TrueLaw(**{**law.__dict__, "a": 0.0}) for arm, law in (("NL", NL), ("CODE", CODE))}
    pts = load_points(small_ladder(tmp_path, laws=flat))
    doc = fit_ladder(pts, FitSettings(bootstrap=20, workers=1))
    entry = doc["tasks"]["logic"]
    for arm in ("NL", "CODE"):
        a = entry["arms"][arm]
        assert a["step2"] is None and "does not fall with loss" in a["step2_why"] and "chance" in a["step2_why"]
        assert a["prediction"]["accuracy"] is None and a["prediction"]["accuracy_why"] == a["step2_why"]
        assert a["prediction"]["loss"] > 0 and a["prediction"]["loss_ci95"] is not None
    assert entry["difference"]["accuracy"] is None and "NL:" in entry["difference"]["accuracy_why"]
    assert entry["difference"]["loss"]["p_value"] is not None
    json.dumps(doc, allow_nan=False)


# ---------------------------------------------------------------- bootstrap refits
def _resampled_ladders(seed: int, count: int):
    """The shared-exponent fit of a 2-arm ladder's final points (4 sizes x 2 budgets, 1% noise) and
    `count` identifiable resamples of its runs within each arm, as `--resample runs` draws them."""
    rows = simulate_rows({("NL", "t"): NL, ("CODE", "t"): CODE}, [5e6, 1e7, 2e7, 4e7], [10, 40], noise=0.01, seed=seed)
    n, d, loss = (np.array([r[k] for r in rows]) for k in ("params", "tokens", "loss"))
    arm = np.array([r["arm"] == "CODE" for r in rows], dtype=np.int64)
    law = Law(groups=2, shared=True)
    centre = fit_law(LawData.build(n, d, loss, arm), law)
    rng = np.random.default_rng(seed)
    draws = []
    while len(draws) < count:
        pick = np.concatenate([rng.choice(np.flatnonzero(arm == a), 8) for a in (0, 1)])
        data = LawData.build(n[pick], d[pick], loss[pick], arm[pick])
        if check_identifiable(data, law) is None:
            draws.append(data)
    return centre, draws


def _share_at_the_minimum(seed: int, count: int) -> float:
    """How many replicates the one-start refit takes to the minimum that the full multi-start fit
    (`fit_law`, the estimator of the point estimate) finds on the same replicate (1e-6 relative)."""
    centre, draws = _resampled_ladders(seed, count)
    hits = 0
    for data in draws:
        theta = refit_law(centre, data, data.y)
        if theta is None:
            continue
        cost = huber(log_law(centre.law.per_group(theta)[data.group], data.u, data.v)[0] - data.y, 1e-3)
        hits += cost <= fit_law(data, centre.law).cost * (1 + 1e-6)
    return hits / count


def test_refit_reaches_the_replicates_minimum_when_the_fit_has_e_near_zero() -> None:
    """This ladder's full fit ends with NL's E at 2e-9. Started there, MINPACK used to report
    convergence after a few rejected steps without having moved, and only 2 of these 10 replicates
    reached their minimum (the bootstrap then repeated the full fit, and its intervals came out too
    narrow); from `refit_start` 10 of 10 do."""
    assert _share_at_the_minimum(seed=4, count=10) >= 0.8


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 4, 22, 31])
def test_refit_reaches_the_replicates_minimum_in_most_replicates(seed) -> None:
    """30 replicates per ladder (seeds 4, 22, 31: a full fit with E near 0; seed 1: E about 0.9):
    measured 1.00, 0.97, 0.90, 1.00 (the rest end in another local minimum of the Huber loss, which a
    one-start refit can do); before `refit_start`, 0.27, 0.23 and 0.53 on seeds 4, 22 and 31."""
    assert _share_at_the_minimum(seed=seed, count=30) >= 0.8


def test_refit_that_leaves_the_exponent_range_is_finished_within_bounds() -> None:
    """A replicate that wants alpha = 4: the unbounded refit leaves [0, 3], so the bounded fit
    takes over and ends where the full bounded fit of those points ends (alpha at its bound)."""
    n = np.repeat([1e7, 2e7, 4e7, 8e7], 2)
    d = n * np.tile([10, 40], 4)
    noise = np.exp(np.random.default_rng(0).normal(0, 0.002, n.size))
    centre = fit_law(LawData.build(n, d, (0.8 + 200 / n ** 0.34 + 400 / d ** 0.28) * noise), Law())
    steep = LawData.build(n, d, 0.8 + 1e28 / n ** 4.0 + 400 / d ** 0.28)
    theta = refit_law(centre, steep, steep.y)
    assert theta is not None and theta[3] == pytest.approx(EXP_MAX)
    cost = huber(log_law(theta, steep.u, steep.v)[0] - steep.y, 1e-3)
    assert cost <= fit_law(steep, Law()).cost * (1 + 1e-6)


def test_refit_of_non_finite_losses_fails_instead_of_returning_the_start() -> None:
    n = np.repeat([1e7, 2e7, 4e7, 8e7], 2)
    d = n * np.tile([10, 40], 4)
    data = LawData.build(n, d, 0.8 + 200 / n ** 0.34 + 400 / d ** 0.28)
    centre = fit_law(data, Law())
    assert refit_law(centre, data, np.where(np.arange(8) == 3, np.nan, data.y)) is None


# ---------------------------------------------------------------- bootstrap calibration
@pytest.mark.slow
def test_bootstrap_intervals_cover_the_truth_at_about_the_nominal_rate(tmp_path) -> None:
    """60 simulated ladders of 20 runs (5 sizes x 4 budgets, 1% noise), 100 replicates each: the
    95% interval of the target loss covers the true value in 0.85-1.0 of them (nominal 0.95; the
    binomial 95% band for 60 draws is about +-0.055, and the percentile bootstrap of a far
    extrapolation is known to run a little short). Measured: 0.967 (58 of 60), with and without
    the cold refit beside the warm one (80 ladders: 0.975 both)."""
    hits = 0
    n = 60
    truth = float(NL.loss(*TARGET))
    for i in range(n):
        rows = simulate_rows({("NL", "t"): NL}, [5e6, 1e7, 2e7, 4e7, 8e7], [5, 10, 20, 40], noise=0.01, seed=100 + i)
        pts = load_points(write_rows(rows, tmp_path / f"l{i}.csv"))
        doc = fit_ladder(pts, FitSettings(arms=("NL",), bootstrap=100, seed=i, workers=1, huber_delta=1e-2))
        lo, hi = doc["tasks"]["t"]["arms"]["NL"]["prediction"]["loss_ci95"]
        hits += lo <= truth <= hi
    assert 0.85 <= hits / n <= 1.0


@pytest.mark.slow
def test_bootstrap_in_worker_processes_matches_one_process(tmp_path, monkeypatch) -> None:
    """Each piece of a task's replicates is seeded from the fit's seed and its index, so spreading
    the pieces over processes changes nothing."""
    import codestage.study.ladder.fit as fit_module

    pts = load_points(small_ladder(tmp_path, tasks=("a", "b")))
    monkeypatch.setattr(fit_module, "_CHUNK", 4)  # 4 pieces per task, more than the workers
    one = fit_ladder(pts, FitSettings(bootstrap=15, seed=4, workers=1))
    monkeypatch.setattr(fit_module, "_POOL_MIN_REPLICATES", 0)
    two = fit_ladder(pts, FitSettings(bootstrap=15, seed=4, workers=2))
    two["settings"]["workers"] = 1
    assert json.dumps(one, sort_keys=True) == json.dumps(two, sort_keys=True)


# ---------------------------------------------------------------- backtest
def test_backtest_errors_match_a_known_deviation(tmp_path) -> None:
    """Noise-free points follow the law exactly, except the held-out largest rung, whose loss is set
    5% above the law and whose accuracy 0.1 above the sigmoid: the refit without it recovers the law,
    so the backtest must report exactly those deviations."""
    rows = simulate_rows({("NL", "t"): NL, ("CODE", "t"): CODE}, [5e6, 1e7, 2e7, 4e7, 8e7], [10, 40],
                         [0.5, 1.0], noise=0.0, seed=0)
    for r in rows:
        if r["params"] == 8e7:
            r["loss"] *= 1.05
            r["accuracy"] += 0.1
    pts = load_points(write_rows(rows, tmp_path / "bt.csv"))
    doc = fit_ladder(pts, FitSettings(bootstrap=0, holdout="largest", workers=1))
    bt = doc["tasks"]["t"]["backtest"]
    assert doc["holdout"]["runs"] == sorted({f"{r['arm']}/{r['run']}" for r in rows if r["params"] == 8e7})
    for arm, law in (("NL", NL), ("CODE", CODE)):
        cases = bt["arms"][arm]["held_out"]
        assert len(cases) == 2  # the two budgets' final checkpoints
        for c in cases:
            true_loss = float(law.loss(c["params"], c["tokens"]))
            assert c["loss_pred"] == pytest.approx(true_loss, rel=1e-4)
            assert c["loss_rel_error"] == pytest.approx(0.05 / 1.05, abs=1e-4)
            want = abs(float(law.accuracy(c["loss_pred"])) - c["accuracy"])
            assert c["accuracy_abs_error"] == pytest.approx(want, abs=1e-3)
            assert c["accuracy_abs_error"] == pytest.approx(0.1, abs=2e-3)
        assert bt["arms"][arm]["loss_rel_error"] == pytest.approx(0.05 / 1.05, abs=1e-4)
        assert doc["tasks"]["t"]["arms"][arm]["prediction"]["backtest"]["loss_rel_error"] == bt["arms"][arm]["loss_rel_error"]
    assert bt["difference"]["loss_abs_error"] is not None


def test_shared_and_per_arm_exponents_residual_resampling_all_checkpoints(tmp_path) -> None:
    pts = load_points(small_ladder(tmp_path))
    doc = fit_ladder(pts, FitSettings(bootstrap=20, resample="residuals", step1_points="all", workers=1))
    arms = doc["tasks"]["logic"]["arms"]
    nl, code = arms["NL"]["step1"], arms["CODE"]["step1"]
    assert nl["shared_exponents"] and nl["n_points"] == 32
    assert nl["params"]["alpha"] == code["params"]["alpha"] and nl["params"]["beta"] == code["params"]["beta"]
    assert nl["params"]["E"] != code["params"]["E"]
    assert doc["tasks"]["logic"]["difference"]["loss"]["ci95"] is not None
    assert "bootstrap_redraws" not in doc["tasks"]["logic"]
    alone = fit_ladder(pts, FitSettings(bootstrap=0, share_exponents=False, workers=1))["tasks"]["logic"]["arms"]
    assert not alone["NL"]["step1"]["shared_exponents"]
    assert alone["NL"]["step1"]["params"]["alpha"] != alone["CODE"]["step1"]["params"]["alpha"]


def test_holdout_by_params_value_run_id_and_unknown_rung(tmp_path) -> None:
    """Run ids may repeat across arms (the same rung trained on each recipe): a run is (arm, run)."""
    rows = simulate_rows({("NL", "logic"): NL, ("CODE", "logic"): CODE}, [5e6, 1e7, 2e7, 4e7], [10, 40],
                         [0.5, 1.0], noise=0.01, seed=2)
    for r in rows:
        r["run"] = r["run"].split("-", 1)[1]  # "NL-5e+06-10x" -> "5e+06-10x" in both arms
    pts = load_points(write_rows(rows, tmp_path / "shared_ids.csv"))
    doc = fit_ladder(pts, FitSettings(bootstrap=0, holdout="2e7", workers=1))
    assert {c["params"] for c in doc["tasks"]["logic"]["backtest"]["arms"]["NL"]["held_out"]} == {2e7}
    assert doc["tasks"]["logic"]["predictability"]["runs"] == 16
    doc = fit_ladder(pts, FitSettings(bootstrap=0, holdout="4e+07-40x", workers=1))
    assert doc["holdout"]["runs"] == ["CODE/4e+07-40x", "NL/4e+07-40x"]
    with pytest.raises(ConfigError, match="no rung with that params value"):
        fit_ladder(pts, FitSettings(bootstrap=0, holdout="3e7", workers=1))


# ---------------------------------------------------------------- item-level data
def test_item_level_bootstrap_and_consistency(tmp_path) -> None:
    rng = np.random.default_rng(5)
    rows = simulate_rows({("NL", "t"): NL, ("CODE", "t"): CODE}, [5e6, 1e7, 2e7, 4e7], [10, 40], noise=0.0, seed=0)
    lines = []
    for r in rows:
        per = r["loss"] * np.exp(rng.normal(0, 0.3, 50))
        per *= r["loss"] / per.mean()
        correct = (rng.random(50) < r["accuracy"]).astype(float)
        lines.append(json.dumps({**r, "loss": float(per.mean()), "accuracy": float(correct.mean()),
                                 "item_losses": per.tolist(), "item_correct": correct.tolist()}))
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(lines) + "\n")
    pts = load_points(path)
    assert pts.items["t"].num.shape == (len(rows), 50)
    doc = fit_ladder(pts, FitSettings(bootstrap=30, workers=1))
    assert doc["inputs"]["item_level_tasks"] == ["t"]
    assert doc["tasks"]["t"]["arms"]["NL"]["prediction"]["loss_ci95"] is not None
    bad = json.loads(lines[3])
    bad["loss"] *= 1.01
    lines[3] = json.dumps(bad)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"items.jsonl: line 4, column 'loss': .* not the mean of its per-item values"):
        load_points(path)


def test_items_file_column(tmp_path) -> None:
    rows = simulate_rows({("NL", "t"): NL, ("CODE", "t"): CODE}, [5e6, 1e7, 2e7, 4e7], [10, 40], noise=0.0, seed=0)
    for k, r in enumerate(rows):
        items = [{"id": f"q{i}", "bits": r["loss"] * (1 + 0.1 * (i % 3)), "bytes": 1 + 0.1 * (i % 3)} for i in range(9)]
        (tmp_path / f"items{k}.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
        r["items"] = f"items{k}.jsonl"
        del r["accuracy"]
    pts = load_points(write_rows(rows, tmp_path / "p.csv"))
    assert pts.items["t"].den is not None and len(pts.item_files) == len(rows)


def test_fit_json_records_its_inputs_relative_to_its_folder(tmp_path, monkeypatch, capsys) -> None:
    """A study folder moved elsewhere: fit.json still names its points (and items) from its own
    folder; a fit.json from before, with absolute paths, still renders."""
    study = tmp_path / "study"
    (study / "points" / "items").mkdir(parents=True)
    rows = simulate_rows({("NL", "t"): NL, ("CODE", "t"): CODE}, [5e6, 1e7, 2e7, 4e7], [10, 40], noise=0.0, seed=0)
    for k, r in enumerate(rows):
        items = [{"id": f"q{i}", "bits": r["loss"] * (1 + 0.1 * (i % 3)), "bytes": 1 + 0.1 * (i % 3)} for i in range(9)]
        (study / "points" / "items" / f"{k}.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
        r["items"] = f"items/{k}.jsonl"
        del r["accuracy"]
    points = write_rows(rows, study / "points" / "p.csv")
    code, msg = run_cli(monkeypatch, capsys, "ladder", "fit", str(points), "--out", str(study / "fit"), "--bootstrap", "0",
                        "--workers", "1")
    assert code == 0, msg
    text = (study / "fit" / "fit.json").read_text()
    assert str(tmp_path) not in text and str(tmp_path) not in (study / "fit" / "report.md").read_text()
    inputs = json.loads(text)["inputs"]
    assert inputs["points"] == "../points/p.csv"
    assert sorted(inputs["item_files"]) == sorted(f"../points/items/{k}.jsonl" for k in range(len(rows)))

    moved = tmp_path / "shared" / "study"
    moved.parent.mkdir()
    study.rename(moved)
    assert all((moved / "fit" / f).is_file() for f in [inputs["points"], *inputs["item_files"]])
    (moved / "fit" / "report.md").unlink()
    code, msg = run_cli(monkeypatch, capsys, "ladder", "report", str(moved / "fit"))
    assert code == 0, msg
    assert "POINTS: `../points/p.csv` (from this folder)" in (moved / "fit" / "report.md").read_text()

    old = json.loads(text)  # as written before: absolute paths
    old["inputs"]["points"] = str(moved / "points" / "p.csv")
    old["inputs"]["item_files"] = {str(moved / "fit" / f): h for f, h in inputs["item_files"].items()}
    (moved / "old").mkdir()
    (moved / "old" / "fit.json").write_text(json.dumps(old))
    code, msg = run_cli(monkeypatch, capsys, "ladder", "report", str(moved / "old"))
    assert code == 0, msg
    assert f"POINTS: `{moved / 'points' / 'p.csv'}` (sha256" in (moved / "old" / "report.md").read_text()


# ---------------------------------------------------------------- malformed input through the command
def _cli_error(monkeypatch, capsys, path: Path, *extra: str) -> str:
    code, msg = run_cli(monkeypatch, capsys, "ladder", "fit", str(path), "--out", str(path.parent / "out"),
                        "--bootstrap", "0", *extra)
    assert code == 2, msg
    return msg


def test_malformed_points_get_one_clear_line(tmp_path, monkeypatch, capsys) -> None:
    good = small_ladder(tmp_path).read_text().splitlines()
    header = good[0].split(",")

    def write(name: str, lines: list[str]) -> Path:
        p = tmp_path / name
        p.write_text("\n".join(lines) + "\n")
        return p

    col = header.index("tokens")
    no_tokens = [",".join(c for i, c in enumerate(line.split(",")) if i != col) for line in good]
    msg = _cli_error(monkeypatch, capsys, write("missing.csv", no_tokens))
    assert "missing.csv: line 1: missing column 'tokens'" in msg

    cells = good[5].split(",")
    cells[header.index("loss")] = "abc"
    msg = _cli_error(monkeypatch, capsys, write("nonnum.csv", good[:5] + [",".join(cells)] + good[6:]))
    assert "nonnum.csv: line 6, column 'loss': 'abc' is not a number" in msg

    cells[header.index("loss")] = "nan"
    msg = _cli_error(monkeypatch, capsys, write("nan.csv", good[:5] + [",".join(cells)] + good[6:]))
    assert "line 6, column 'loss': 'nan' is not finite" in msg

    cells[header.index("loss")] = "1.5"
    cells[header.index("params")] = "-5"
    msg = _cli_error(monkeypatch, capsys, write("neg.csv", good[:5] + [",".join(cells)] + good[6:]))
    assert "column 'params': must be > 0" in msg

    msg = _cli_error(monkeypatch, capsys, write("dup.csv", good + [good[7]]))
    assert f"line {len(good) + 1}: duplicate row: repeats line 8" in msg

    run_col = header.index("run")
    few = [good[0]] + [line for line in good[1:] if not (line.startswith("CODE") and line.split(",")[run_col].split("-")[1] in ("4e+07", "2e+07"))]
    msg = _cli_error(monkeypatch, capsys, write("few.csv", few), "--per-arm-exponents")
    assert "arm CODE, task logic: 4 distinct (params, tokens) points; the law needs at least 5" in msg
    fewer = [line for line in few if not (line.startswith("CODE") and line.split(",")[run_col].split("-")[1] == "1e+07")]
    msg = _cli_error(monkeypatch, capsys, write("fewer.csv", fewer))  # shared exponents: E, A, B per arm
    assert "arm CODE, task logic: 2 distinct (params, tokens) points; the law needs at least 3" in msg

    msg = _cli_error(monkeypatch, capsys, write("onearm.csv", [good[0]] + [line for line in good[1:] if line.startswith("NL")]))
    assert "only arm NL in POINTS; the difference CODE - NL needs both" in msg and "--arms NL" in msg

    cells = good[2].split(",")
    cells[header.index("accuracy")] = "45.2"
    msg = _cli_error(monkeypatch, capsys, write("pct.csv", good[:2] + [",".join(cells)] + good[3:]))
    assert "pct.csv: line 3, column 'accuracy': must be a fraction in [0, 1], got '45.2' (a percentage?" in msg

    msg = _cli_error(monkeypatch, capsys, small_ladder(tmp_path, name="ok.csv"), "--target", "N=2.6e9")
    assert "--target 'N=2.6e9': expected N=<params>,D=<tokens>" in msg


def test_parse_target() -> None:
    assert parse_target("N=2.6e9,D=4.2e10") == (2.6e9, 4.2e10)
    assert parse_target("D=1e9, N=1e8") == (1e8, 1e9)
    for bad in ("N=1e9", "N=1e9,D=x", "N=1e9,D=-1", "N=1e9,N=2e9,D=1", "n=1,d=2", "N=inf,D=1"):
        with pytest.raises(ConfigError, match="--target"):
            parse_target(bad)


# ---------------------------------------------------------------- the command end to end
@pytest.mark.slow
def test_ladder_fit_and_report_end_to_end(tmp_path, monkeypatch, capsys) -> None:
    points = small_ladder(tmp_path, tasks=("logic", "code"))
    out = tmp_path / "fit"
    code, msg = run_cli(monkeypatch, capsys, "ladder", "fit", str(points), "--out", str(out), "--bootstrap", "20",
                        "--holdout", "largest", "--seed", "3")
    assert code == 0, msg
    assert "ladder fit: predictions at N=2.6e+09, D=4.2e+10" in msg
    doc = json.loads((out / "fit.json").read_text())
    assert doc["schema"] == "codestage.ladder.fit/1"
    assert len(doc["inputs"]["sha256"]) == 64 and doc["inputs"]["params_kind"] == "non_embedding"
    assert doc["target"] == {"params": 2.6e9, "tokens": 4.2e10, "compute": 6 * 2.6e9 * 4.2e10, "params_kind": "non_embedding"}
    assert doc["arms"] == ["NL", "CODE"] and doc["difference"] == "CODE - NL"
    assert doc["settings"]["bootstrap"] == 20 and doc["settings"]["seed"] == 3 and doc["settings"]["resample"] == "runs"
    for task in ("logic", "code"):
        e = doc["tasks"][task]
        for arm in ("NL", "CODE"):
            a = e["arms"][arm]
            assert set(a["step1"]["params"]) == {"E", "A", "B", "alpha", "beta"}
            assert len(a["step1"]["residuals"]) == 8
            pr = a["prediction"]
            assert pr["loss_ci95"] is not None and pr["loss_ci95"][0] < pr["loss_ci95"][1]
            assert 0 <= pr["accuracy"] <= 1 and len(pr["accuracy_ci95"]) == 2
            assert pr["backtest"]["loss_rel_error"] is not None
        for key in ("loss", "accuracy"):
            d = e["difference"][key]
            assert d["ci95"] is not None and 0 < d["p_value"] <= 1
        assert e["predictability"]["last"] == 3 and e["predictability"]["runs"] == 16
        assert e["predictability"]["largest_run"]["run"].endswith("4e+07-40x")
        assert e["backtest"]["arms"]["NL"]["held_out"]
    report = (out / "report.md").read_text()
    assert "| logic | logic |" in report and "paper NL" in report and "45.45" in report
    assert "| code | " in report and "| code | — |" in report  # no domain: no paper number
    for task in ("logic", "code"):
        for kind in ("loss", "accuracy"):
            assert (out / "plots" / f"{task}_{kind}.png").stat().st_size > 10_000
    (out / "report.md").unlink()
    code, msg = run_cli(monkeypatch, capsys, "ladder", "report", str(out))
    assert code == 0 and (out / "report.md").read_text() == report
    code, msg = run_cli(monkeypatch, capsys, "ladder", "report", str(tmp_path))
    assert code == 2 and "no fit.json here" in msg


def test_one_arm_fit_without_difference(tmp_path) -> None:
    pts = load_points(EXAMPLE_POINTS)
    doc = fit_ladder(pts, FitSettings(arms=("chinchilla",), bootstrap=0, target=(70e9, 1.4e12), workers=1))
    entry = doc["tasks"]["massivetext"]
    assert "difference" not in entry and doc["difference"] is None
    published = 1.8172 + 482.01 / 70e9 ** 0.3478 + 2085.43 / 1.4e12 ** 0.3658  # Besiroglu et al.'s law: 1.974
    assert entry["arms"]["chinchilla"]["prediction"]["loss"] == pytest.approx(published, rel=0.03)
