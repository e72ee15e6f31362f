"""The two laws of a ladder fit and their least-squares fits (scipy; no optimizer of our own).

Step 1 (Hoffmann et al. 2022, Approach 3): L(N, D) = E + A / N^alpha + B / D^beta, fitted in log
space: log L = LSE(a - alpha log N, b - beta log D, e) with A = e^a, B = e^b, E = e^e, minimising a
Huber loss of the log residuals (delta 1e-3 as Hoffmann et al. and Besiroglu et al.). Several
groups (arms) can share alpha and beta. Starting points come from a grid over (alpha, beta) with
(E, A, B) solved by non-negative least squares for each (the law is linear in them once the
exponents are fixed); the best few start a bounded trust-region fit and the best end point wins.

Step 2 (Bhagia et al. 2024): accuracy = b + a / (1 + exp(s (L - L0))), s > 0, so accuracy falls
from a + b towards b (the chance level when known, then fixed) as the task loss grows. Bhagia et
al. write the same curve as a / (1 + e^(-k (L - L0))) + b with k = -s.

Near-ties: at delta 1e-3 the loss is nearly the absolute value of residuals of about 1e-2, and, as
with least absolute deviations, its minimum can be a whole valley: parameters that fit the points
equally well (Huber losses within `TIE_RTOL`) yet extrapolate differently. `fit_law` also runs
MINPACK from the best end point and from more grid points, keeps the best end point of all, and
records the other near-optimal ones (`LawFit.ties`), so the fit can say how far the points pin its
prediction down instead of reporting whichever end of the valley one machine's rounding reached.

Refits inside the bootstrap (`refit_law`) keep the better of a warm fit from the full fit (with E
kept away from 0, see `refit_start`: MINPACK's Levenberg-Marquardt on the same Huber objective,
written as squared residuals psi(r) with psi^2 = 2 rho(r), `HuberPsi`, falling back to the bounded
trust-region method when an exponent leaves [0, EXP_MAX] or it does not converge) and a cold
bounded trust-region fit from the replicate's own best grid start.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares, leastsq, nnls

N_LAW = 5                       # parameters of one group's step-1 law
EXP_MAX = 3.0                   # alpha, beta in [0, EXP_MAX]
LOG_LIM = (-30.0, 80.0)         # bounds of a = log A and b = log B
HUBER_DELTA = 1e-3
_GRID = np.linspace(0.05, 1.5, 16)
_TOP_STARTS = 6
_PROBE_STARTS = 24              # grid points MINPACK also starts from, to find the other near-optimal fits
TIE_RTOL = 1e-6                 # end points this close to the best Huber loss fit the points equally well


# ---------------------------------------------------------------- step 1: L(N, D)
@dataclass(frozen=True)
class Law:
    """Layout of the step-1 parameter vector for `groups` arms fitted together.

    theta = [a_g, b_g, e_g for each group] + [alpha, beta] (shared) or [alpha_g, beta_g per group].
    """

    groups: int = 1
    shared: bool = False

    @property
    def n_params(self) -> int:
        return 3 * self.groups + (2 if self.shared else 2 * self.groups)

    @property
    def pos(self) -> np.ndarray:
        """(groups, 5) index into theta of (a, b, e, alpha, beta) for each group."""
        g = np.arange(self.groups)
        out = np.empty((self.groups, N_LAW), dtype=np.int64)
        out[:, :3] = 3 * g[:, None] + np.arange(3)
        base = 3 * self.groups
        out[:, 3:] = base + (np.zeros((self.groups, 1), dtype=np.int64) + np.arange(2) if self.shared
                             else 2 * g[:, None] + np.arange(2))
        return out

    def per_group(self, theta: np.ndarray) -> np.ndarray:
        return np.asarray(theta)[self.pos]

    def bounds(self, log_loss_max: float) -> tuple[np.ndarray, np.ndarray]:
        lo = np.empty(self.n_params)
        hi = np.empty(self.n_params)
        pos = self.pos
        lo[pos[:, :2]], hi[pos[:, :2]] = LOG_LIM
        lo[pos[:, 2]], hi[pos[:, 2]] = LOG_LIM[0], log_loss_max + 0.5
        lo[pos[:, 3:]], hi[pos[:, 3:]] = 0.0, EXP_MAX
        return lo, hi

    def from_natural(self, natural: np.ndarray) -> np.ndarray:
        """theta from a (groups, 5) array of (E, A, B, alpha, beta) (exponents averaged if shared)."""
        theta = np.empty(self.n_params)
        pos = self.pos
        nat = np.asarray(natural, dtype=np.float64)
        theta[pos[:, 0]] = np.log(np.maximum(nat[:, 1], 1e-12))
        theta[pos[:, 1]] = np.log(np.maximum(nat[:, 2], 1e-12))
        theta[pos[:, 2]] = np.log(np.maximum(nat[:, 0], 1e-12))
        for k in (3, 4):
            np.put(theta, pos[:, k], nat[:, k])  # shared: the last group's value wins; callers pass equal ones
        return theta


def natural(law: Law, theta: np.ndarray) -> list[dict[str, float]]:
    """The fitted (E, A, B, alpha, beta) of each group."""
    p = law.per_group(theta)
    return [{"E": float(np.exp(r[2])), "A": float(np.exp(r[0])), "B": float(np.exp(r[1])),
             "alpha": float(r[3]), "beta": float(r[4])} for r in p]


def log_law(p: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log L and the weights of the A and B terms in L, for per-point params p (..., 5)."""
    z1 = p[..., 0] - p[..., 3] * u
    z2 = p[..., 1] - p[..., 4] * v
    z3 = p[..., 2]
    m = np.maximum(np.maximum(z1, z2), z3)
    e1, e2, e3 = np.exp(z1 - m), np.exp(z2 - m), np.exp(z3 - m)
    s = e1 + e2 + e3
    return m + np.log(s), e1 / s, e2 / s


@dataclass(frozen=True)
class LawData:
    """Points of one step-1 fit: log N, log D, log loss, and each point's group (arm)."""

    u: np.ndarray
    v: np.ndarray
    y: np.ndarray
    group: np.ndarray

    @classmethod
    def build(cls, params: np.ndarray, tokens: np.ndarray, loss: np.ndarray, group: np.ndarray | None = None) -> "LawData":
        g = np.zeros(len(params), dtype=np.int64) if group is None else np.asarray(group, dtype=np.int64)
        return cls(np.log(params), np.log(tokens), np.log(loss), g)


def _residuals(law: Law, data: LawData, y: np.ndarray):
    """Residual and Jacobian functions of theta for log losses `y` (each point's five local
    derivatives land in five distinct columns, so plain fancy assignment builds the Jacobian)."""
    pos = law.pos[data.group]  # (n, 5) columns of theta per point
    n = len(data.u)
    rows = np.repeat(np.arange(n)[:, None], N_LAW, axis=1)
    single = law.groups == 1
    u, v = data.u, data.v

    def res(theta: np.ndarray) -> np.ndarray:
        p = theta if single else theta[pos]
        return log_law(p, u, v)[0] - y

    def jac(theta: np.ndarray) -> np.ndarray:
        p = theta if single else theta[pos]
        _, w1, w2 = log_law(p, u, v)
        local = np.empty((n, N_LAW))
        local[:, 0] = w1
        local[:, 1] = w2
        local[:, 2] = 1.0 - w1 - w2
        local[:, 3] = -u * w1
        local[:, 4] = -v * w2
        if single:
            return local
        out = np.zeros((n, law.n_params))
        out[rows, pos] = local
        return out

    return res, jac


def huber(r: np.ndarray, delta: float) -> float:
    a = np.abs(r)
    return float(np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta)).sum())


def _starts(law: Law, data: LawData, delta: float, top: int = _TOP_STARTS) -> list[np.ndarray]:
    """Starting points: for each (alpha, beta) on a grid, (E, A, B) >= 0 by NNLS per group in linear
    space; the `top` grid points with the lowest log-space Huber loss are kept."""
    loss = np.exp(data.y)
    n, d = np.exp(data.u), np.exp(data.v)
    res, _ = _residuals(law, data, data.y)
    scored: list[tuple[float, np.ndarray]] = []
    for alpha in _GRID:
        for beta in _GRID:
            nat = np.empty((law.groups, N_LAW))
            for g in range(law.groups):
                m = data.group == g
                design = np.column_stack([np.ones(m.sum()), n[m] ** -alpha, d[m] ** -beta])
                coef, _ = nnls(design, loss[m])
                nat[g] = [*coef, alpha, beta]
            theta = law.from_natural(nat)
            scored.append((huber(res(theta), delta), theta))
    scored.sort(key=lambda x: x[0])
    return [t for _, t in scored[:top]]


@dataclass(frozen=True)
class LawFit:
    law: Law
    theta: np.ndarray
    cost: float          # Huber loss of the log residuals
    starts: int
    converged: bool
    ties: tuple[np.ndarray, ...] = ()  # other end points within TIE_RTOL of `cost` (see the module's docstring)

    @property
    def equal_fits(self) -> tuple[np.ndarray, ...]:
        """The fit and its near-ties: every parameter vector the points cannot tell from the best."""
        return (self.theta, *self.ties)

    def log_predict(self, params: np.ndarray, tokens: np.ndarray, group: np.ndarray | int = 0) -> np.ndarray:
        g = np.broadcast_to(np.asarray(group), np.shape(params))
        p = self.law.per_group(self.theta)[g]
        return log_law(p, np.log(params), np.log(tokens))[0]


def _distinct(*cols: np.ndarray) -> int:
    """Distinct rows of the columns, rounded to 9 decimals (a set: the bootstrap asks this per draw)."""
    return len(set(zip(*(np.round(c, 9).tolist() for c in cols))))


def check_identifiable(data: LawData, law: Law) -> tuple[int | None, str] | None:
    """(group, why) when the law cannot be fitted to these points (group None: the whole fit), else None."""
    need = N_LAW if not law.shared else 3
    for g in range(law.groups):
        m = data.group == g
        design = _distinct(data.u[m], data.v[m])
        if design < need:
            return g, f"{design} distinct (params, tokens) points; the law needs at least {need}"
        if _distinct(data.u[m]) < 2:
            return g, "every point has the same params, so A / N^alpha cannot be told from E"
        if _distinct(data.v[m]) < 2:
            return g, "every point has the same tokens, so B / D^beta cannot be told from E"
    if law.shared and _distinct(data.group.astype(np.float64), data.u, data.v) < law.n_params:
        return None, f"fewer distinct points than the {law.n_params} parameters of the shared-exponent law"
    return None


def _bounded_fit(res, jac, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, delta: float, **opts):
    """scipy's bounded trust-region fit of the log residuals with the Huber loss, from x0 (clipped)."""
    return least_squares(res, np.clip(x0, lo, hi), jac=jac, bounds=(lo, hi), loss="huber", f_scale=delta,
                         x_scale="jac", **opts)


def fit_law(data: LawData, law: Law, delta: float = HUBER_DELTA) -> LawFit:
    """The best of several bounded robust fits (log space, Huber) started from the grid, and of
    MINPACK runs from its end point and from more grid points; with the near-ties of the best."""
    res, jac = _residuals(law, data, data.y)
    lo, hi = law.bounds(float(data.y.max()))
    ends: list[tuple[float, np.ndarray, bool]] = []
    starts = _starts(law, data, delta, max(_TOP_STARTS, _PROBE_STARTS))
    for x0 in starts[:_TOP_STARTS]:
        r = _bounded_fit(res, jac, x0, lo, hi, delta, max_nfev=2000)
        ends.append((huber(r.fun, delta), r.x, bool(r.status > 0)))
    first = min(ends, key=lambda e: e[0])[1]
    for x0 in [first, *starts]:
        x, _, converged = _minpack(law, data, data.y, x0, delta)
        if converged and np.all(x >= lo) and np.all(x <= hi):  # the bounded problem's points only: an A or B
            ends.append((huber(res(x), delta), x, True))          # run off to e^-700 would freeze every refit
    ends.sort(key=lambda e: e[0])
    cost, theta, converged = ends[0]
    ties = tuple(x for c, x, ok in ends[1:] if ok and c <= cost * (1 + TIE_RTOL))
    return LawFit(law, theta, cost, _TOP_STARTS + len(starts) + 1, converged, ties)  # starts of both methods


def _minpack(law: Law, data: LawData, y: np.ndarray, x0: np.ndarray, delta: float) -> tuple[np.ndarray, bool, bool]:
    """MINPACK's Levenberg-Marquardt on the Huber objective (`HuberPsi`) from x0, unbounded: its end
    point, whether the exponents ended inside [0, EXP_MAX] (log E may run below its bound: E near 0
    is a legitimate end point), and whether it converged."""
    psi = HuberPsi(law, data, y, delta)
    try:
        with warnings.catch_warnings():  # a run that stops short is handled by the caller
            warnings.simplefilter("ignore", RuntimeWarning)
            x, status = leastsq(psi.fun, x0, Dfun=psi.jac, maxfev=400)
    except (ValueError, np.linalg.LinAlgError):
        return x0, False, False
    exps = x[law.pos[:, 3:]]
    in_range = bool(np.all(np.isfinite(x)) and np.all(exps >= 0) and np.all(exps <= EXP_MAX))
    return x, in_range, status in (1, 2, 3, 4)


class HuberPsi:
    """Step-1 residuals rewritten for MINPACK, with their Jacobian, for one set of points.

    MINPACK minimises a plain sum of squares, so each log residual r becomes psi(r) with
    psi^2 = 2 Huber(r): psi = r inside [-delta, delta], sign(r) sqrt(2 delta |r| - delta^2) outside.
    The sum of squares is then exactly the Huber loss that `fit_law` minimises. MINPACK asks for the
    function and the Jacobian at the same point, so both are computed in one pass and kept.
    """

    def __init__(self, law: Law, data: LawData, y: np.ndarray, delta: float) -> None:
        self.cols = law.pos[data.group]                  # (n, 5) columns of theta per point
        self.rows = np.arange(len(y))[:, None]
        self.shape = (len(y), law.n_params)
        self.u, self.v, self.y, self.delta = data.u, data.v, y, delta
        self._at = b""

    def _evaluate(self, theta: np.ndarray) -> None:
        key = theta.tobytes()
        if key == self._at:
            return
        p = theta[self.cols]
        z1 = p[:, 0] - p[:, 3] * self.u                   # log L = LSE(z1, z2, z3), as in `log_law`
        z2 = p[:, 1] - p[:, 4] * self.v
        z3 = p[:, 2]
        m = np.maximum(np.maximum(z1, z2), z3)
        e1, e2, e3 = np.exp(z1 - m), np.exp(z2 - m), np.exp(z3 - m)
        total = e1 + e2 + e3
        r = m + np.log(total) - self.y
        d = self.delta
        outside = np.abs(r) > d
        root = np.sqrt(np.where(outside, 2.0 * d * np.abs(r) - d * d, 1.0))
        self.psi = np.where(outside, np.copysign(root, r), r)
        scale = np.where(outside, d / root, 1.0) / total   # d psi / d r, over the sum of the three terms
        local = np.empty((len(r), N_LAW))                  # d psi / d (log A, log B, log E, alpha, beta)
        local[:, 0] = e1 * scale
        local[:, 1] = e2 * scale
        local[:, 2] = e3 * scale                           # not 1 - the others: E near 0 needs its own digits
        local[:, 3] = -self.u * local[:, 0]
        local[:, 4] = -self.v * local[:, 1]
        self.jacobian = np.zeros(self.shape)
        self.jacobian[self.rows, self.cols] = local
        self._at = key

    def fun(self, theta: np.ndarray) -> np.ndarray:
        self._evaluate(theta)
        return self.psi

    def jac(self, theta: np.ndarray) -> np.ndarray:
        self._evaluate(theta)
        return self.jacobian


E_FLOOR = 5.0  # refits start with log E >= log(smallest loss) - E_FLOOR


def refit_start(fit: LawFit, y: np.ndarray) -> np.ndarray:
    """The full fit's parameters with E raised to at least e^-5 of the smallest loss.

    A full fit may end with E near 0 (log E near -20): the Jacobian's E column then all but
    vanishes, MINPACK scales that variable by the column's tiny norm, its first steps jump absurdly
    far and are rejected until the step bound falls below xtol, and it reports convergence at the
    start without having moved. On the bench ladder (bench/ladder_fit.py, its first task) that
    happened in a third of the replicates, which then repeated the full fit and made the intervals
    too narrow. Starting from a small positive E avoids it; a replicate can still end at E = 0.
    """
    x0 = np.array(fit.theta, dtype=np.float64)
    e = fit.law.pos[:, 2]
    x0[e] = np.maximum(x0[e], float(np.min(y)) - E_FLOOR)
    return x0


def refit_law(fit: LawFit, data: LawData, y: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray | None:
    """One refit to new log losses `y` (`data` built from them); None if it fails.

    The better of two fits. Warm: MINPACK's Levenberg-Marquardt on the Huber objective
    (`HuberPsi`) from the full fit, kept when it converged with the exponents inside [0, EXP_MAX]
    (log E may run below its bound: E near 0 is a legitimate end point); otherwise the bounded
    trust-region fit of `fit_law` finishes the job, from where Levenberg-Marquardt stopped when it
    ran out of steps with the exponents in range (mostly a replicate whose E creeps towards 0 at an
    unchanged loss, which the bound on log E stops), from the start when an exponent left its range.
    Cold: one bounded trust-region fit from the replicate's own best grid start, as `fit_law`'s
    first. On the real GPU ladder the warm fit alone ended more than 1e-3 above the replicate's own
    multi-start minimum in half the replicates (the objective has several basins, some at a bound)
    and the intervals came out too narrow; with the cold fit beside it 94% end within 1e-3 of it
    (docs/ladder.md, "How the replicates are refitted").
    """
    res, jac = _residuals(fit.law, data, y)
    lo, hi = fit.law.bounds(float(max(y.max(), data.y.max())))
    ends = [x for x in (_refit_warm(fit, data, y, delta, res, jac, lo, hi), _refit_cold(fit.law, data, delta, res, jac, lo, hi))
            if x is not None]
    if not ends:
        return None
    return min(ends, key=lambda x: huber(res(x), delta))


def _refit_warm(fit: LawFit, data: LawData, y: np.ndarray, delta: float, res, jac, lo: np.ndarray,
                hi: np.ndarray) -> np.ndarray | None:
    x0 = refit_start(fit, y)
    x, in_range, converged = _minpack(fit.law, data, y, x0, delta)
    if in_range and converged:
        return x
    try:
        r = _bounded_fit(res, jac, x if in_range else x0, lo, hi, delta, max_nfev=1000, ftol=1e-10, xtol=1e-10)
        return r.x if r.status > 0 else None
    except (ValueError, np.linalg.LinAlgError):
        return None


def _refit_cold(law: Law, data: LawData, delta: float, res, jac, lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
    if not np.all(np.isfinite(data.y)):
        return None
    try:
        x0 = _starts(law, data, delta, 1)[0]
        r = _bounded_fit(res, jac, x0, lo, hi, delta, max_nfev=2000)
        return r.x if r.status > 0 else None
    except (ValueError, np.linalg.LinAlgError):
        return None


def log_predict(law: Law, theta: np.ndarray, params: float, tokens: float, group: int = 0) -> float:
    p = law.per_group(theta)[group]
    return float(log_law(p, np.log(params), np.log(tokens))[0])


# ---------------------------------------------------------------- step 2: accuracy(L)
@dataclass(frozen=True)
class Sigmoid:
    """accuracy = b + a / (1 + exp(s (L - L0))); b fixed to `chance` when given."""

    chance: float | None

    @property
    def n_params(self) -> int:
        return 3 if self.chance is not None else 4

    def unpack(self, p: np.ndarray) -> tuple[float, float, float, float]:
        if self.chance is not None:
            return p[0], self.chance, p[1], p[2]
        return p[0], p[1], p[2], p[3]

    def __call__(self, p: np.ndarray, loss: np.ndarray) -> np.ndarray:
        a, b, s, l0 = self.unpack(p)
        return b + a / (1.0 + np.exp(np.clip(s * (np.asarray(loss) - l0), -700, 700)))

    def jac(self, p: np.ndarray, loss: np.ndarray) -> np.ndarray:
        a, _, s, l0 = self.unpack(p)
        sig = 1.0 / (1.0 + np.exp(np.clip(s * (loss - l0), -700, 700)))
        d = a * sig * (1.0 - sig)
        cols = [sig] + ([] if self.chance is not None else [np.ones_like(loss)]) + [-(loss - l0) * d, s * d]
        return np.column_stack(cols)

    def bounds(self, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        span = max(float(np.ptp(loss)), 1e-3)
        l0 = (float(loss.min()) - 10 * span, float(loss.max()) + 10 * span)
        if self.chance is not None:
            return np.array([0.0, 1e-3, l0[0]]), np.array([1.0 - self.chance, 1e3, l0[1]])
        return np.array([0.0, 0.0, 1e-3, l0[0]]), np.array([1.0, 1.0, 1e3, l0[1]])

    def natural(self, p: np.ndarray) -> dict[str, float]:
        a, b, s, l0 = self.unpack(p)
        return {"a": float(a), "b": float(b), "s": float(s), "L0": float(l0), "k": float(-s)}


@dataclass(frozen=True)
class SigmoidFit:
    curve: Sigmoid
    p: np.ndarray
    rmse: float

    def predict(self, loss: np.ndarray | float) -> np.ndarray:
        return np.clip(self.curve(self.p, np.asarray(loss, dtype=np.float64)), 0.0, 1.0)


def fit_sigmoid(loss: np.ndarray, acc: np.ndarray, chance: float | None) -> tuple[SigmoidFit | None, str | None]:
    """Least-squares sigmoid from several starts; (None, why) when it does not converge."""
    curve = Sigmoid(chance)
    lo, hi = curve.bounds(loss)
    span = max(float(np.ptp(loss)), 1e-3)
    b0 = chance if chance is not None else float(acc.min())
    a0 = float(np.clip(acc.max() - b0, 0.01, hi[0]))
    best = None
    for l0 in np.quantile(loss, [0.1, 0.5, 0.9]).tolist() + [float(loss.min()) - span]:
        for s in (1.0 / span, 4.0 / span, 16.0 / span):
            x0 = [a0, s, l0] if chance is not None else [a0, b0, s, l0]
            x0 = np.clip(np.array(x0, dtype=np.float64), lo, hi)
            r = least_squares(lambda p: curve(p, loss) - acc, x0, jac=lambda p: curve.jac(p, loss),
                              bounds=(lo, hi), x_scale="jac", max_nfev=2000)
            if r.status > 0 and (best is None or r.cost < best.cost):
                best = r
    if best is None:
        return None, "the sigmoid fit did not converge from any start"
    rmse = float(np.sqrt(np.mean(best.fun ** 2)))
    return SigmoidFit(curve, best.x, rmse), None


def refit_sigmoid(fit: SigmoidFit, loss: np.ndarray, acc: np.ndarray) -> np.ndarray | None:
    curve = fit.curve
    lo, hi = curve.bounds(loss)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            x, status = leastsq(lambda p: curve(p, loss) - acc, fit.p, Dfun=lambda p: curve.jac(p, loss), maxfev=400)
        if status in (1, 2, 3, 4) and np.all(np.isfinite(x)) and np.all(x >= lo) and np.all(x <= hi):
            return x
        r = least_squares(lambda p: curve(p, loss) - acc, np.clip(fit.p, lo, hi), jac=lambda p: curve.jac(p, loss),
                          bounds=(lo, hi), x_scale="jac", max_nfev=2000)
        return r.x if r.status > 0 else None
    except (ValueError, np.linalg.LinAlgError):
        return None
