"""Statistics for comparing groups of runs: descriptions, two-group tests, effect sizes, corrections.

Every distribution comes from scipy; this module only decides what to compute and how to report the cases
where an answer does not exist. Those cases never produce NaN or an exception: the field is ``None`` and the
record's ``notes`` say why, in words. The rules, for samples of any size:

* ``describe``: non-finite values (NaN, None, inf) are dropped and counted in ``n_dropped``. With n = 0 every
  statistic is ``None``; with n = 1 the centre (mean, median, min, max, percentiles) is defined but ``sd``,
  ``sem``, ``cv`` and the confidence interval are not. With zero variance the interval is the single point
  ``[mean, mean]`` (the t interval has zero width), and ``cv`` is 0.
* ``compare(a, b)``: every signed quantity is *b relative to a* (a is the baseline): ``diff = mean_b -
  mean_a``, ``welch_t`` and ``cohens_d`` are positive when b is larger. Welch's test needs n >= 2 in both
  groups and a non-zero standard error; Cohen's d needs a non-zero pooled sd (n_a + n_b >= 3). When both
  groups have zero variance the t statistic is not computable (the report TR131 prints NaN there):
  ``welch_t``/``welch_p``/ ``cohens_d`` are ``None`` and the note says whether the groups are identical or
  disjoint constants. ``mwu_u`` is the Mann–Whitney U of group a (scipy's convention); its p-value is exact
  for small samples without ties and asymptotic otherwise (scipy's ``method="auto"``).
* ``holm``/``benjamini_hochberg``: ``None`` (or NaN) p-values are tests that could not be computed. They count
  in the family size k (conservative: the family is what was planned, as in TR131's Holm table where NaN tests
  keep k = 6) and their adjusted value is ``None``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: Confidence level of every interval unless told otherwise.
DEFAULT_CONFIDENCE = 0.95
#: Significance level of tests and of the minimum detectable effect.
DEFAULT_ALPHA = 0.05
#: Power at which the minimum detectable effect is computed.
DEFAULT_POWER = 0.8
#: Bootstrap resamples and seed (fixed so that a report is reproducible).
DEFAULT_BOOTSTRAP_RESAMPLES = 9999
DEFAULT_SEED = 20260226


@dataclass(frozen=True)
class Description:
    """A description of one sample.

    Attributes:
        n: number of finite values used.
        n_dropped: non-finite values (None, NaN, inf) left out.
        mean, median, sd, sem: the usual; ``sd`` is the sample standard deviation (ddof = 1).
        cv: coefficient of variation, sd / |mean| (``None`` when the mean is 0 or n < 2).
        p90, p95, p99, q1, q3: percentiles with linear interpolation (numpy's default, R's type 7).
        min, max: extremes.
        ci_low, ci_high: t-based confidence interval of the mean (n - 1 degrees of freedom).
        confidence: the interval's level.
        iqr: q3 - q1.
        outliers: values outside the Tukey fences [q1 - 1.5 iqr, q3 + 1.5 iqr].
        notes: why a field is ``None``.
    """

    n: int
    n_dropped: int
    mean: float | None
    median: float | None
    sd: float | None
    sem: float | None
    cv: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    min: float | None
    max: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    q1: float | None
    q3: float | None
    iqr: float | None
    outliers: tuple[float, ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists instead of tuples) for JSON."""
        out = asdict(self)
        out["outliers"] = list(self.outliers)
        out["notes"] = list(self.notes)
        return out


@dataclass(frozen=True)
class Comparison:
    """Two groups compared; signed quantities are b relative to a (a is the baseline).

    Attributes:
        n_a, n_b: sample sizes (finite values).
        mean_a, mean_b: group means.
        diff: mean_b - mean_a.
        rel_diff: diff / |mean_a| (``None`` when mean_a is 0).
        diff_ci_low, diff_ci_high: Welch (Satterthwaite) t interval of the difference.
        boot_ci_low, boot_ci_high: bootstrap interval of the difference (seeded, BCa, percentile when BCa
            degenerates).
        welch_t, welch_df, welch_p: Welch's unequal-variance t-test (two-sided).
        cohens_d: diff / pooled sd, pooled sd = sqrt(((n_a-1) var_a + (n_b-1) var_b) / (n_a + n_b - 2)).
        cohens_d_ci_low, cohens_d_ci_high: interval of d by inverting the noncentral t distribution.
        hedges_g: d times the exact small-sample correction J(df) = Γ(df/2) / (sqrt(df/2) Γ((df-1)/2)).
        mwu_u, mwu_p: Mann–Whitney U of group a and its two-sided p-value.
        mde_d: smallest |d| detectable with ``power`` at ``alpha`` with these sizes (two-sided pooled t-test).
        critical_d: smallest |d| that reaches significance at ``alpha`` (the "minimum detectable d" of TR131's
            power table, ``t_crit * sqrt(1/n_a + 1/n_b)``; detects it with about 50% power).
        alpha, power, confidence: the levels used.
        effect: words for |d|: negligible (< 0.2), small (< 0.5), medium (< 0.8), large.
        notes: why a field is ``None``.
    """

    n_a: int
    n_b: int
    mean_a: float | None
    mean_b: float | None
    diff: float | None
    rel_diff: float | None
    diff_ci_low: float | None
    diff_ci_high: float | None
    boot_ci_low: float | None
    boot_ci_high: float | None
    welch_t: float | None
    welch_df: float | None
    welch_p: float | None
    cohens_d: float | None
    cohens_d_ci_low: float | None
    cohens_d_ci_high: float | None
    hedges_g: float | None
    mwu_u: float | None
    mwu_p: float | None
    mde_d: float | None
    critical_d: float | None
    alpha: float
    power: float
    confidence: float
    effect: str | None
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        out = asdict(self)
        out["notes"] = list(self.notes)
        return out


def _finite(values: Iterable[Any]) -> tuple[np.ndarray, int]:
    """Return the finite values as float64, and how many were dropped."""
    kept: list[float] = []
    dropped = 0
    for v in values:
        if v is None:
            dropped += 1
            continue
        try:
            x = float(v)
        except (TypeError, ValueError):
            dropped += 1
            continue
        if math.isfinite(x):
            kept.append(x)
        else:
            dropped += 1
    return np.asarray(kept, dtype=np.float64), dropped


def _f(x: Any) -> float | None:
    """Return a Python float, or None when not finite."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def positive_mean_interval(x: np.ndarray, confidence: float) -> tuple[float, float]:
    """Interval of the mean of a positive quantity: Cox's log-scale interval (t quantile).

    A throughput or a latency cannot be negative, but the t interval ``mean ± t·sem`` of a few widely
    spread values can be (a sweep's throughput showed [-1,493, ...] tok/s; issue 16). Such
    quantities are closer to log-normal than to normal, so the interval is built on ``y = log x``: the mean
    of a log-normal is ``exp(mu + sigma²/2)``, and Cox's interval (Land 1972; Zhou & Gao 1997; with the t
    quantile, Olsson 2005) is ``exp(ȳ + s²/2 ± t·sqrt(s²/n + s⁴/(2(n - 1))))``. Both ends are > 0 and it is
    wider above the mean than below, as the spread of such samples is; for tightly clustered values it
    agrees with the t interval. Needs every value > 0 and n >= 2.
    """
    from scipy import stats as st

    y = np.log(x)
    n = y.size
    s2 = float(np.var(y, ddof=1))
    centre = float(np.mean(y)) + s2 / 2
    half = float(st.t.ppf(0.5 + confidence / 2, n - 1)) * math.sqrt(s2 / n + s2 * s2 / (2 * (n - 1)))
    return math.exp(centre - half), math.exp(centre + half)


def describe(
    values: Iterable[Any], *, confidence: float = DEFAULT_CONFIDENCE, positive: bool = False
) -> Description:
    """Describe a sample: centre, spread, percentiles, t interval of the mean, Tukey outliers.

    Args:
        values: numbers; None/NaN/inf are dropped and counted.
        confidence: level of the interval of the mean.
        positive: the quantity cannot be negative (a throughput, a latency): the interval of the mean is
            :func:`positive_mean_interval` when every value is > 0 and that interval holds the sample mean
            (else the t interval, its low end clipped at 0), so it never goes below zero.

    Returns:
        A :class:`Description`; see the module docstring for n = 0, n = 1 and zero variance.
    """
    from scipy import stats as st

    x, dropped = _finite(values)
    n = int(x.size)
    notes: list[str] = []
    if n == 0:
        notes.append("empty sample: nothing to describe")
        nothing: dict[str, Any] = dict.fromkeys(
            ("mean", "median", "sd", "sem", "cv", "p90", "p95", "p99", "min", "max", "ci_low", "ci_high")
        )
        return Description(
            0, dropped, **nothing, confidence=confidence, q1=None, q3=None, iqr=None, notes=tuple(notes)
        )
    mean = float(np.mean(x))
    median = float(np.median(x))
    p90, p95, p99, q1, q3 = (float(v) for v in np.percentile(x, [90, 95, 99, 25, 75]))
    iqr = q3 - q1
    lo_fence, hi_fence = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    outliers = tuple(float(v) for v in x if v < lo_fence or v > hi_fence)
    sd = sem = cv = ci_low = ci_high = None
    if n < 2:
        notes.append("n=1: sd, sem, cv and the confidence interval are not computable")
    else:
        sd = float(np.std(x, ddof=1))
        sem = sd / math.sqrt(n)
        half = float(st.t.ppf(0.5 + confidence / 2, n - 1)) * sem
        ci_low, ci_high = mean - half, mean + half
        if positive and sd > 0:
            cox = positive_mean_interval(x, confidence) if bool(np.all(x > 0)) else None
            if cox is not None and cox[0] <= mean <= cox[1]:
                ci_low, ci_high = cox
                notes.append("positive quantity: Cox's log-scale interval of the mean")
            elif ci_low < 0:
                # Zero values (no log), or values so far from log-normal (one tiny outlier) that Cox's
                # interval misses the sample mean: the t interval, which cannot go below zero here.
                ci_low = 0.0
                notes.append("positive quantity: t interval clipped at 0")
        if sd == 0:
            notes.append("zero variance: the interval is the single value")
        if mean != 0:
            cv = sd / abs(mean)
        else:
            notes.append("mean is 0: cv is not computable")
    return Description(
        n=n,
        n_dropped=dropped,
        mean=mean,
        median=median,
        sd=sd,
        sem=sem,
        cv=cv,
        p90=p90,
        p95=p95,
        p99=p99,
        min=float(np.min(x)),
        max=float(np.max(x)),
        ci_low=ci_low,
        ci_high=ci_high,
        confidence=confidence,
        q1=q1,
        q3=q3,
        iqr=iqr,
        outliers=outliers,
        notes=tuple(notes),
    )


def effect_words(d: float | None) -> str | None:
    """Cohen's conventional words for |d|: negligible, small, medium, large."""
    if d is None:
        return None
    a = abs(d)
    if a < 0.2:
        return "negligible"
    if a < 0.5:
        return "small"
    if a < 0.8:
        return "medium"
    return "large"


def critical_effect(n_a: int, n_b: int, *, alpha: float = DEFAULT_ALPHA) -> float | None:
    """Smallest |d| that a pooled two-sample t-test declares significant: ``t_crit * sqrt(1/n_a + 1/n_b)``.

    This is the "minimum detectable effect" formula of TR131's power analysis (there with n_a = n_b = n:
    ``t_crit(alpha/2, 2n-2) * sqrt(2/n)``). An effect of exactly this size is detected about half the time;
    use :func:`minimum_detectable_effect` for a stated power. ``None`` when n_a + n_b < 3 or a size is 0.
    """
    from scipy import stats as st

    if n_a < 1 or n_b < 1 or n_a + n_b < 3:
        return None
    df = n_a + n_b - 2
    return float(st.t.ppf(1 - alpha / 2, df) * math.sqrt(1 / n_a + 1 / n_b))


def t_test_power(d: float, n_a: int, n_b: int, *, alpha: float = DEFAULT_ALPHA) -> float:
    """Power of the two-sided pooled two-sample t-test to detect a true effect ``d`` (noncentral t)."""
    from scipy import stats as st

    df = n_a + n_b - 2
    tcrit = st.t.ppf(1 - alpha / 2, df)
    ncp = d * math.sqrt(n_a * n_b / (n_a + n_b))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(st.nct.sf(tcrit, df, ncp) + st.nct.cdf(-tcrit, df, ncp))
    if not math.isfinite(p):
        # scipy's noncentral t loses precision far in the tail, where the power is 1 for practical purposes.
        return 1.0 if abs(ncp) > tcrit else 0.0
    return min(1.0, max(0.0, p))


def minimum_detectable_effect(
    n_a: int, n_b: int, *, alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER
) -> float | None:
    """Smallest |d| detected with probability ``power`` by a two-sided pooled t-test at ``alpha``.

    Solved on the noncentral t distribution (the computation G*Power and R's ``power.t.test`` make).
    ``None`` when n_a + n_b < 3 (no degrees of freedom) or the power cannot be reached below d = 1000.
    """
    from scipy.optimize import brentq

    if n_a < 1 or n_b < 1 or n_a + n_b < 3 or not 0 < power < 1:
        return None
    lo, hi = 1e-9, 1.0
    while t_test_power(hi, n_a, n_b, alpha=alpha) < power:
        lo, hi = hi, hi * 2
        if hi > 1000:
            return None
    return float(brentq(lambda d: t_test_power(d, n_a, n_b, alpha=alpha) - power, lo, hi, xtol=1e-10))


def _hedges_j(df: int) -> float:
    """Exact small-sample bias correction of Cohen's d (Hedges 1981)."""
    from scipy.special import gammaln

    return math.exp(gammaln(df / 2) - gammaln((df - 1) / 2)) / math.sqrt(df / 2)


def _d_interval(
    d: float, n_a: int, n_b: int, confidence: float
) -> tuple[float | None, float | None, str | None]:
    """Interval of Cohen's d by inverting the noncentral t (Steiger & Fouladi), with a normal fallback."""
    from scipy import stats as st
    from scipy.optimize import brentq

    df = n_a + n_b - 2
    scale = math.sqrt(1 / n_a + 1 / n_b)
    t_obs = d / scale
    lo_q, hi_q = 0.5 + confidence / 2, 0.5 - confidence / 2

    def solve(q: float) -> float:
        # cdf(t_obs; ncp) falls as ncp grows: walk outwards from t_obs until the root is bracketed.
        def f(ncp: float) -> float:
            v = float(st.nct.cdf(t_obs, df, ncp)) - q
            if not math.isfinite(v):
                raise ValueError("noncentral t not finite")
            return v

        step = 1.0
        a, b = t_obs - step, t_obs + step
        while f(a) < 0:
            step *= 2
            a = t_obs - step
            if step > 1e4:
                raise ValueError("no bracket")
        step = 1.0
        while f(b) > 0:
            step *= 2
            b = t_obs + step
            if step > 1e4:
                raise ValueError("no bracket")
        return float(brentq(f, a, b, xtol=1e-12))

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lo, hi = solve(lo_q) * scale, solve(hi_q) * scale
        if math.isfinite(lo) and math.isfinite(hi):
            return lo, hi, None
    except (ValueError, RuntimeError, OverflowError):
        pass
    # Hedges & Olkin's large-sample standard error; only used when the noncentral t cannot be inverted.
    se = math.sqrt((n_a + n_b) / (n_a * n_b) + d * d / (2 * (n_a + n_b)))
    z = float(st.norm.ppf(lo_q))
    return (
        d - z * se,
        d + z * se,
        "cohens_d interval from the normal approximation (noncentral t did not converge)",
    )


def _bootstrap_diff(
    a: np.ndarray, b: np.ndarray, confidence: float, resamples: int, seed: int
) -> tuple[float | None, float | None, str | None]:
    from scipy import stats as st

    if a.size < 2 or b.size < 2:
        return None, None, "bootstrap interval needs n >= 2 in both groups"
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        d = float(b.mean() - a.mean())
        return d, d, None

    def stat(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(y, axis=axis) - np.mean(x, axis=axis)

    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = st.bootstrap(
                (a, b),
                stat,
                n_resamples=resamples,
                confidence_level=confidence,
                method=method,
                vectorized=True,
                rng=np.random.default_rng(seed),
            )
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(lo) and math.isfinite(hi):
            note = None if method == "BCa" else "bootstrap BCa degenerate: percentile interval"
            return lo, hi, note
    return None, None, "bootstrap interval not computable"


def compare(
    a: Iterable[Any],
    b: Iterable[Any],
    *,
    alpha: float = DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
    confidence: float = DEFAULT_CONFIDENCE,
    bootstrap_resamples: int = DEFAULT_BOOTSTRAP_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Comparison:
    """Compare group b with baseline group a.

    Args:
        a: baseline sample (None/NaN/inf dropped).
        b: other sample.
        alpha: significance level for the minimum detectable effect.
        power: power for the minimum detectable effect.
        confidence: level of every interval.
        bootstrap_resamples: resamples of the bootstrap interval (0 to skip it).
        seed: seed of the bootstrap's generator (same inputs, same interval).

    Returns:
        A :class:`Comparison`; see the module docstring for small and constant samples.

    Raises:
        QueryError: a group is empty.
    """
    from scipy import stats as st

    from ..errors import QueryError

    xa, _ = _finite(a)
    xb, _ = _finite(b)
    if xa.size == 0 or xb.size == 0:
        which = "a (baseline)" if xa.size == 0 else "b"
        raise QueryError(f"cannot compare: group {which} has no finite values")
    na, nb = int(xa.size), int(xb.size)
    notes: list[str] = []
    mean_a, mean_b = float(xa.mean()), float(xb.mean())
    diff = mean_b - mean_a
    rel = diff / abs(mean_a) if mean_a != 0 else None
    if rel is None:
        notes.append("baseline mean is 0: relative difference not computable")
    va = float(xa.var(ddof=1)) if na > 1 else None
    vb = float(xb.var(ddof=1)) if nb > 1 else None

    welch_t = welch_df = welch_p = diff_lo = diff_hi = None
    if va is None or vb is None:
        notes.append("Welch's t-test needs n >= 2 in both groups")
    elif va == 0 and vb == 0:
        if diff == 0:
            notes.append("zero variance in both groups, identical values: t-test not computable")
        else:
            notes.append("zero variance in both groups, different constants: t-test not computable")
    else:
        se2a, se2b = va / na, vb / nb
        se = math.sqrt(se2a + se2b)
        welch_t = diff / se
        welch_df = (se2a + se2b) ** 2 / (se2a**2 / (na - 1) + se2b**2 / (nb - 1))
        with warnings.catch_warnings():
            # scipy warns on nearly identical samples; the p-value it returns is still the right one
            warnings.simplefilter("ignore", RuntimeWarning)
            res = st.ttest_ind(xb, xa, equal_var=False)
        welch_p = _f(res.pvalue)
        half = float(st.t.ppf(0.5 + confidence / 2, welch_df)) * se
        diff_lo, diff_hi = diff - half, diff + half

    d = d_lo = d_hi = g = None
    if na + nb < 3:
        notes.append("Cohen's d needs n_a + n_b >= 3")
    else:
        pooled = ((na - 1) * (va or 0.0) + (nb - 1) * (vb or 0.0)) / (na + nb - 2)
        if pooled == 0:
            notes.append("pooled sd is 0: Cohen's d not computable")
        else:
            d = diff / math.sqrt(pooled)
            if na + nb - 2 >= 2:
                g = d * _hedges_j(na + nb - 2)
            else:
                notes.append("Hedges' g needs n_a + n_b >= 4 (its correction is undefined with 1 df)")
            d_lo, d_hi, note = _d_interval(d, na, nb, confidence)
            if note:
                notes.append(note)

    mwu_u = mwu_p = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mw = st.mannwhitneyu(xa, xb, alternative="two-sided")
    mwu_u = _f(mw.statistic)
    mwu_p = _f(mw.pvalue)
    if mwu_p is None:
        notes.append("Mann-Whitney p not computable (all values tied)")

    boot_lo = boot_hi = None
    if bootstrap_resamples > 0:
        boot_lo, boot_hi, note = _bootstrap_diff(xa, xb, confidence, bootstrap_resamples, seed)
        if note:
            notes.append(note)

    mde = minimum_detectable_effect(na, nb, alpha=alpha, power=power)
    return Comparison(
        n_a=na,
        n_b=nb,
        mean_a=mean_a,
        mean_b=mean_b,
        diff=diff,
        rel_diff=rel,
        diff_ci_low=diff_lo,
        diff_ci_high=diff_hi,
        boot_ci_low=boot_lo,
        boot_ci_high=boot_hi,
        welch_t=_f(welch_t),
        welch_df=_f(welch_df),
        welch_p=welch_p,
        cohens_d=_f(d),
        cohens_d_ci_low=_f(d_lo),
        cohens_d_ci_high=_f(d_hi),
        hedges_g=_f(g),
        mwu_u=mwu_u,
        mwu_p=mwu_p,
        mde_d=mde,
        critical_d=critical_effect(na, nb, alpha=alpha),
        alpha=alpha,
        power=power,
        confidence=confidence,
        effect=effect_words(d),
        notes=tuple(notes),
    )


def _valid_p(pvalues: Sequence[float | None]) -> list[tuple[int, float]]:
    out = []
    for i, p in enumerate(pvalues):
        if p is None:
            continue
        p = float(p)
        if math.isnan(p):
            continue
        if not 0 <= p <= 1:
            raise ValueError(f"p-value {p} at position {i} is outside [0, 1]")
        out.append((i, p))
    return out


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values, in the input's order.

    The adjusted value of the i-th smallest of k p-values is ``max_{j<=i} min(1, (k - j + 1) p_(j))``: a test
    is rejected at family-wise level alpha exactly when its adjusted p is <= alpha
    (R's ``p.adjust(p, "holm")``).
    ``None``/NaN entries (tests that could not be computed) stay ``None`` and still count in k.
    """
    k = len(pvalues)
    valid = sorted(_valid_p(pvalues), key=lambda t: t[1])
    out: list[float | None] = [None] * k
    running = 0.0
    for rank, (i, p) in enumerate(valid):
        running = max(running, min(1.0, (k - rank) * p))
        out[i] = running
    return out


def benjamini_hochberg(pvalues: Sequence[float | None]) -> list[float | None]:
    """Benjamini–Hochberg adjusted p-values (false discovery rate), in the input's order.

    The adjusted value of the i-th smallest of m p-values is ``min_{j>=i} min(1, m p_(j) / j)``
    (R's ``p.adjust(p, "BH")``). ``None``/NaN entries stay ``None`` and count in m.
    """
    m = len(pvalues)
    valid = sorted(_valid_p(pvalues), key=lambda t: t[1])
    out: list[float | None] = [None] * m
    running = 1.0
    for rank in range(len(valid) - 1, -1, -1):
        i, p = valid[rank]
        running = min(running, m * p / (rank + 1))
        out[i] = min(1.0, running)
    return out


def adjust(pvalues: Sequence[float | None], method: str = "holm") -> list[float | None]:
    """Adjust a family of p-values: ``method`` is ``holm``, ``bh`` (Benjamini–Hochberg) or ``none``."""
    if method == "holm":
        return holm(pvalues)
    if method in ("bh", "fdr", "benjamini-hochberg"):
        return benjamini_hochberg(pvalues)
    if method == "none":
        return [None if p is None or math.isnan(float(p)) else float(p) for p in pvalues]
    raise ValueError(f"unknown correction {method!r} (holm, bh, none)")
