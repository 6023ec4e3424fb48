"""Statistics over seeds: how sure a mean is, whether a gain over a baseline is real, how
methods rank across settings, and how many seeds a difference would need.

Every distribution comes from scipy; only Holm's step-down (five lines) is written here.
Decisions, each in its function's docstring too:

- A NaN value (an empty shot group) is not a seed: it is dropped before counting `n`.
- Zero spread: when every paired difference is the same, the paired t statistic is
  d / 0. scipy then reports p = 0, which would mark "+1.00 on 2 seeds" as certain. Here
  the p-value, the interval and the seeds needed are NaN instead: no test, no mark.
- NaN p-values are left out of Holm's family (as R's `p.adjust` does), so an undefined
  test neither gets a mark nor makes the others' correction stricter.
- Friedman needs complete blocks: a (dataset, IF) cell where any method has no value is
  left out of the ranking, and the cells left out are returned to be named in the report.
"""

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

FEW_SEEDS = 3  # fewer seeds than this and a cell is marked: its interval is very wide
MAX_SEEDS = 100


# --- one cell ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CellStats:
    n: int
    mean: float
    std: float  # sample std (ddof=1); NaN for a single seed, never 0
    ci_low: float
    ci_high: float
    few_seeds: bool  # n < FEW_SEEDS


def cell_stats(values, confidence: float = 0.95) -> CellStats:
    """Mean, sample std and the Student-t interval of the mean over seeds."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    mean = x.mean() if n else math.nan
    std = x.std(ddof=1) if n > 1 else math.nan
    half = _t_half_width(std, n, confidence)
    return CellStats(n, float(mean), float(std), float(mean - half), float(mean + half),
                     n < FEW_SEEDS)


def _t_half_width(std: float, n: int, confidence: float) -> float:
    if n < 2 or math.isnan(std):
        return math.nan
    return stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)


def describe_cells(runs: pd.DataFrame, metric: str,
                   by=("label", "dataset", "imbalance_factor"),
                   confidence: float = 0.95) -> pd.DataFrame:
    """One row per `by` group: `by` columns, then n, mean, std, ci_low, ci_high, few_seeds."""
    rows = [{**dict(zip(by, key)), **vars(cell_stats(group[metric], confidence))}
            for key, group in runs.groupby(list(by), dropna=False, sort=False)]
    return pd.DataFrame(rows, columns=[*by, *CellStats.__dataclass_fields__])


# --- a method against a baseline --------------------------------------------------------

@dataclass(frozen=True)
class PairedDifference:
    n_pairs: int
    seeds: tuple  # the seeds both have, sorted
    mean: float  # method - baseline, mean over the paired seeds
    std: float  # sample std of the per-seed differences
    ci_low: float
    ci_high: float
    p_value: float  # paired t-test, two-sided; NaN below 2 pairs or at zero spread


def paired_difference(method, baseline, confidence: float = 0.95) -> PairedDifference:
    """`method` and `baseline` map seed -> value (dict or Series); paired by seed.

    Seeds only one side has, and seeds where either value is NaN, are left out. With
    fewer than two pairs there is no spread to test against; with zero spread (all
    differences equal) the t statistic is d / 0: both give NaN p-value and interval.
    """
    # Plain dicts, not aligned Series: the report calls this for every pair of every cell.
    a_of, b_of = _present(method), _present(baseline)
    seeds = tuple(sorted(a_of.keys() & b_of.keys()))
    a = np.array([a_of[s] for s in seeds])
    b = np.array([b_of[s] for s in seeds])
    d = a - b
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    std = float(d.std(ddof=1)) if n > 1 else math.nan
    if n < 2 or _no_spread(d):
        return PairedDifference(n, seeds, mean, std, math.nan, math.nan, math.nan)
    half = _t_half_width(std, n, confidence)
    # scipy's ttest_rel(a, b), less its per-call input checking (the tests compare the two)
    t = mean / (std / math.sqrt(n))
    p = float(2 * stats.t.sf(abs(t), n - 1))
    return PairedDifference(n, seeds, mean, std, mean - half, mean + half, p)


def _present(values) -> dict:
    """seed -> value (from a dict or a Series), NaN values left out."""
    return {seed: float(v) for seed, v in dict(values).items() if not math.isnan(float(v))}


def _no_spread(d: np.ndarray) -> bool:
    # Differences equal in exact arithmetic can differ by an ulp once subtracted.
    return bool(np.allclose(d, d[0], rtol=1e-9, atol=1e-9))


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (reject where adjusted <= alpha); NaN stays NaN
    and is not counted in the family."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    present = np.flatnonzero(~np.isnan(p))
    m = len(present)
    order = present[np.argsort(p[present], kind="stable")]
    # The i-th smallest (from 0) is compared with alpha / (m - i); the running maximum
    # keeps the step-down rule: once one hypothesis is kept, all larger p's are kept.
    steps = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted[order] = np.maximum.accumulate(steps)
    return adjusted


def compare_to_baseline(runs: pd.DataFrame, baseline: str, metric: str = "top1",
                        row: str = "label", cells=("dataset", "imbalance_factor"),
                        seed: str = "seed", alpha: float = 0.05, confidence: float = 0.95,
                        power: float = 0.8, max_seeds: int = MAX_SEEDS) -> pd.DataFrame:
    """Each `row` value against `baseline` (a value of `row`) in every cell both have.

    One call is one Holm family: every comparison returned, over all rows and cells, for
    this metric, which is the set of marks one table shows. Columns: `row`, *cells,
    n_pairs, seeds (space-separated), diff, diff_std, ci_low, ci_high, p_value, p_holm,
    significant (p_holm <= alpha; False where untested), seeds_needed (see `seeds_needed`).
    """
    records = []
    for key, cell in runs.groupby(list(cells), dropna=False, sort=False):
        by_row = {name: _by_seed(group, seed, metric, name)
                  for name, group in cell.groupby(row, sort=False)}
        if baseline not in by_row:
            continue
        for name, values in by_row.items():
            if name == baseline:
                continue
            diff = paired_difference(values, by_row[baseline], confidence)
            records.append({row: name, **dict(zip(cells, key)), "n_pairs": diff.n_pairs,
                            "seeds": " ".join(str(s) for s in diff.seeds),
                            "diff": diff.mean, "diff_std": diff.std,
                            "ci_low": diff.ci_low, "ci_high": diff.ci_high,
                            "p_value": diff.p_value,
                            "seeds_needed": seeds_needed(diff.mean, diff.std, power, alpha,
                                                         max_seeds)})
    columns = [row, *cells, "n_pairs", "seeds", "diff", "diff_std", "ci_low", "ci_high",
               "p_value", "p_holm", "significant", "seeds_needed"]
    table = pd.DataFrame(records, columns=[c for c in columns
                                           if c not in ("p_holm", "significant")])
    table["p_holm"] = holm(table["p_value"]) if len(table) else []
    table["significant"] = (table["p_holm"] <= alpha).astype(bool)
    return table[columns]


def _by_seed(group: pd.DataFrame, seed: str, metric: str, name) -> pd.Series:
    if group[seed].duplicated().any():
        raise ValueError(f"{name!r} has two runs with one seed in a cell: label_runs should "
                         "have told their specs apart")
    return group.set_index(seed)[metric]


# --- seeds needed -----------------------------------------------------------------------

def paired_power(effect_size, n, alpha: float = 0.05):
    """Power of the two-sided paired t-test with n pairs at effect size d / s_d.

    Both tails as survival functions: P(T < -c) for noncentrality delta is P(T > c) for
    -delta. scipy's `nct.cdf` returns NaN far out in the lower tail (effect 9.6 at n = 4),
    where `nct.sf` stays finite.
    """
    n = np.asarray(n, dtype=float)
    df = n - 1
    critical = stats.t.isf(alpha / 2, df)
    shift = effect_size * np.sqrt(n)
    return stats.nct.sf(critical, df, shift) + stats.nct.sf(critical, df, -shift)


def seeds_needed(diff: float, std: float, power: float = 0.8, alpha: float = 0.05,
                 max_seeds: int = MAX_SEEDS) -> float:
    """Smallest number of seeds (paired) at which a paired t-test detects a true difference
    `diff` with probability `power`, if the differences' std is the observed `std`.

    A count as a float: inf past `max_seeds` (diff = 0 included: never detectable); NaN
    where there is nothing to go on (no std from one seed, or zero spread, where the
    test itself is undefined). The observed std from a few seeds is itself uncertain, so
    this is a rough guide to whether more seeds are worth running, not a guarantee.
    """
    if any(math.isnan(v) for v in (diff, std)) or std <= 0:
        return math.nan
    n = np.arange(2, max_seeds + 1)
    enough = np.flatnonzero(paired_power(abs(diff) / std, n, alpha) >= power)
    return float(n[enough[0]]) if len(enough) else math.inf


# --- across settings --------------------------------------------------------------------

@dataclass
class Ranking:
    average_ranks: pd.Series  # method -> mean rank over the cells used, best (1) first
    n_cells: int  # cells used (every method has a value)
    dropped_cells: list = field(default_factory=list)  # cells some method lacks
    statistic: float = math.nan  # Friedman chi-square
    p_value: float = math.nan  # NaN below 3 methods or 2 cells, or when all cells tie
    cd: float = math.nan  # Nemenyi critical difference of average ranks at `alpha`
    alpha: float = 0.05

    @property
    def rejects(self) -> bool:
        """Friedman ran and rejects equal ranks: only then do Nemenyi's pairs mean anything."""
        return not math.isnan(self.p_value) and self.p_value <= self.alpha

    @property
    def groups(self) -> list[tuple]:
        """The CD diagram's bars; none unless Friedman rejects (Demšar's post-hoc order)."""
        return nemenyi_groups(self.average_ranks, self.cd) if self.rejects else []


def rank_methods(scores: pd.DataFrame, alpha: float = 0.05) -> Ranking:
    """Average ranks, Friedman test and Nemenyi CD (Demšar 2006, sections 3.2.2 and 3.2.3).

    `scores`: methods as rows, (dataset, IF) cells as columns, higher is better (mean
    accuracy), e.g. `agg.pivot(index="label", columns=["dataset", "imbalance_factor"],
    values="top1_mean")`. In each cell the best method gets rank 1 and ties share the
    average rank. Cells where any method lacks a value are left out. Friedman needs at
    least 3 methods (with 2, the paired comparison is the test) and 2 cells; the CD is
    given for 2 or more methods, and is the one to draw only once Friedman rejects.
    """
    complete = scores.notna().all(axis=0)
    used = scores.loc[:, complete].to_numpy(dtype=float)
    k, n_cells = used.shape
    ranks = np.apply_along_axis(lambda col: stats.rankdata(-col), 0, used) if n_cells else used
    average = pd.Series(ranks.mean(axis=1) if n_cells else math.nan, index=scores.index,
                        dtype=float).sort_values(kind="stable")
    ranking = Ranking(average, n_cells, list(scores.columns[~complete]), alpha=alpha)
    if k >= 3 and n_cells >= 2 and not (used == used[0]).all():
        result = stats.friedmanchisquare(*used)
        ranking.statistic, ranking.p_value = float(result.statistic), float(result.pvalue)
    if k >= 2 and n_cells >= 1:
        ranking.cd = critical_difference(k, n_cells, alpha)
    return ranking


def nemenyi_q(k: int, alpha: float = 0.05) -> float:
    """Demšar's q_alpha: the studentized range quantile for k groups over sqrt(2)."""
    return float(stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))


def critical_difference(k: int, n_cells: int, alpha: float = 0.05) -> float:
    """Two average ranks over `n_cells` cells of `k` methods differ (Nemenyi) by >= this."""
    return nemenyi_q(k, alpha) * math.sqrt(k * (k + 1) / (6 * n_cells))


def nemenyi_groups(average_ranks: pd.Series, cd: float) -> list[tuple]:
    """Maximal runs of methods (in rank order) whose ranks all lie within less than `cd`
    of each other: the bars of a critical-difference diagram. Single methods are left out.
    """
    if math.isnan(cd):
        return []
    ranked = average_ranks.sort_values(kind="stable")
    names, values = list(ranked.index), ranked.to_numpy()
    groups, last_end = [], 0
    for i in range(len(names)):
        end = i
        while end + 1 < len(names) and values[end + 1] - values[i] < cd:
            end += 1
        # A run ending where the previous one ended lies inside it.
        if end > i and end > last_end:
            groups.append(tuple(names[i:end + 1]))
            last_end = end
    return groups
