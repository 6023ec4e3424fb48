"""The report's statistics against scipy's own computations and hand-worked examples, and
the significance marks on synthetic seeds whose true difference is known."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sp

from ltbench.report import stats

# Demšar (2006), Table 5(a): q_0.05 for the Nemenyi test, k = 2 .. 10 methods.
DEMSAR_Q05 = [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]


# --- one cell ---------------------------------------------------------------------------

def test_cell_stats_match_scipy():
    values = [71.2, 70.4, 72.9, 69.8, 71.5]
    cell = stats.cell_stats(values)
    low, high = sp.t.interval(0.95, 4, loc=np.mean(values), scale=sp.sem(values))
    assert cell.n == 5 and not cell.few_seeds
    assert cell.mean == pytest.approx(np.mean(values))
    assert cell.std == pytest.approx(np.std(values, ddof=1))
    assert (cell.ci_low, cell.ci_high) == pytest.approx((low, high))


def test_one_seed_has_no_spread_and_nan_is_not_a_seed():
    one = stats.cell_stats([70.0, math.nan])
    assert one.n == 1 and one.mean == 70.0 and one.few_seeds
    assert all(math.isnan(v) for v in (one.std, one.ci_low, one.ci_high))
    empty = stats.cell_stats([math.nan, math.nan])  # a shot group with no classes
    assert empty.n == 0 and math.isnan(empty.mean)
    assert stats.cell_stats([1.0, 2.0]).few_seeds and not stats.cell_stats([1, 2, 3]).few_seeds


def test_describe_cells_groups_runs():
    runs = pd.DataFrame({"label": ["ce"] * 3 + ["focal"], "dataset": "cifar10_lt",
                         "imbalance_factor": 100.0, "seed": [0, 1, 2, 0],
                         "top1": [70.0, 71.0, 72.0, 68.0]})
    table = stats.describe_cells(runs, "top1").set_index("label")
    assert table.loc["ce", "n"] == 3 and table.loc["ce", "mean"] == pytest.approx(71.0)
    assert table.loc["focal", "few_seeds"] and math.isnan(table.loc["focal", "std"])


# --- paired comparison ------------------------------------------------------------------

def test_paired_difference_matches_scipy_and_pairs_by_seed():
    method = {0: 72.1, 1: 71.0, 2: 73.4, 3: 72.2, 9: 80.0}  # seed 9: no baseline to pair
    baseline = {3: 70.9, 2: 71.5, 1: 70.6, 0: 70.2, 7: 60.0}
    diff = stats.paired_difference(method, baseline)
    a, b = [method[s] for s in range(4)], [baseline[s] for s in range(4)]
    d = np.subtract(a, b)
    assert diff.n_pairs == 4 and diff.seeds == (0, 1, 2, 3)
    assert diff.mean == pytest.approx(d.mean()) and diff.std == pytest.approx(d.std(ddof=1))
    assert diff.p_value == pytest.approx(sp.ttest_rel(a, b).pvalue)
    low, high = sp.t.interval(0.95, 3, loc=d.mean(), scale=sp.sem(d))
    assert (diff.ci_low, diff.ci_high) == pytest.approx((low, high))


def test_paired_difference_degenerate_cases_are_untested():
    one = stats.paired_difference({0: 72.0, 1: 71.0}, {0: 70.0})
    assert one.n_pairs == 1 and one.mean == 2.0 and math.isnan(one.p_value)
    # Identical non-zero differences: scipy says p = 0 (t = inf); that is no evidence.
    same = stats.paired_difference({0: 71.1, 1: 72.3, 2: 70.7}, {0: 70.1, 1: 71.3, 2: 69.7})
    assert same.mean == pytest.approx(1.0)
    assert math.isnan(same.p_value) and math.isnan(same.ci_low)
    assert math.isnan(stats.paired_difference({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0}).p_value)
    assert stats.paired_difference({}, {0: 1.0}).n_pairs == 0


def test_holm_against_a_hand_computed_example():
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; the
    # running maximum makes the last 0.06: kept once a smaller p was kept.
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, math.nan, 0.02]) == pytest.approx([0.5, math.nan, 0.04],
                                                                nan_ok=True)
    assert stats.holm([0.02, 0.04]) == pytest.approx([0.04, 0.04])
    assert stats.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])
    assert len(stats.holm([])) == 0


def synthetic_runs(rng, gains, cells=3, seeds=5, noise=0.5, seed_effect=1.0):
    """Seeds of a baseline `ce` and of methods with the given true gains (points), in
    `cells` settings; a seed shifts every method alike (shared data order), as pairing
    assumes."""
    rows = []
    for c in range(cells):
        base = 70.0 - 5 * c
        shared = rng.normal(0, seed_effect, seeds)
        for label, gain in {"ce": 0.0, **gains}.items():
            values = base + gain + shared + rng.normal(0, noise, seeds)
            rows += [dict(label=label, dataset=f"d{c}", imbalance_factor=100.0, seed=s,
                          top1=v) for s, v in enumerate(values)]
    return pd.DataFrame(rows)


def test_compare_to_baseline_table():
    rng = np.random.default_rng(0)
    runs = synthetic_runs(rng, {"focal": 0.0, "bs": 3.0})
    runs = runs[~((runs["label"] == "bs") & (runs["seed"] == 4) & (runs["dataset"] == "d0"))]
    table = stats.compare_to_baseline(runs, "ce")
    assert len(table) == 6 and "ce" not in set(table["label"])
    first = table[(table["label"] == "bs") & (table["dataset"] == "d0")].iloc[0]
    assert first["n_pairs"] == 4 and first["seeds"] == "0 1 2 3"
    assert table["p_holm"].to_numpy() == pytest.approx(stats.holm(table["p_value"]))
    assert table.loc[table["label"] == "bs", "significant"].all()
    assert not table.loc[table["label"] == "focal", "significant"].any()
    no_baseline = stats.compare_to_baseline(runs[runs["label"] != "ce"], "ce")
    assert list(no_baseline.columns) == list(table.columns) and not len(no_baseline)


def test_a_zero_gain_is_marked_at_most_at_the_nominal_rate():
    """Over many synthetic sweeps with no true difference, the chance that any Holm mark
    appears (the family-wise error rate) stays at or below alpha; the uncorrected tests
    reject at about alpha, so the correction is not vacuously conservative."""
    rng = np.random.default_rng(18)
    draws, methods, cells, seeds = 2000, 4, 3, 5
    any_mark = raw_rejections = 0
    for _ in range(draws):
        shared = rng.normal(0, 1.0, (cells, 1, seeds))
        values = 70 + shared + rng.normal(0, 0.5, (cells, methods + 1, seeds))
        p = sp.ttest_rel(values[:, 1:], values[:, :1], axis=2).pvalue.ravel()
        any_mark += (stats.holm(p) <= 0.05).any()
        raw_rejections += (p <= 0.05).sum()
    tolerance = 3 * math.sqrt(0.05 * 0.95 / draws)
    assert any_mark / draws <= 0.05 + tolerance
    assert abs(raw_rejections / (draws * methods * cells) - 0.05) <= tolerance


def test_a_large_gain_is_detected():
    """3 points with a seed noise of 0.5, 5 seeds: marked in (nearly) every sweep, even
    corrected over 6 comparisons; the zero-gain method beside it rarely is."""
    rng = np.random.default_rng(1)
    tables = [stats.compare_to_baseline(synthetic_runs(rng, {"bs": 3.0, "focal": 0.0}), "ce")
              for _ in range(40)]
    assert np.mean([t.query("label == 'bs'")["significant"].all() for t in tables]) >= 0.95
    assert np.mean([t.query("label == 'focal'")["significant"].any() for t in tables]) <= 0.1


# --- seeds needed -----------------------------------------------------------------------

# Power of the two-sided paired (one-sample) t-test, from statsmodels 0.15.0:
# TTestPower().power(effect_size=e, nobs=n, alpha=alpha, alternative="two-sided"), rounded to
# 4 places. Where statsmodels itself returns NaN (large effects: its lower tail uses the
# noncentral t cdf), the value is its alternative="larger" power at alpha / 2 (the upper tail;
# the lower one is below 1e-10 there).
POWER_NS = [2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 25, 30]
POWER_TABLE = {
    0.05: {
        0.2: [0.052, 0.0555, 0.0598, 0.0643, 0.0689, 0.0735, 0.0782, 0.0829, 0.0877, 0.0972, 0.1116, 0.136, 0.1605, 0.1852],
        0.5: [0.0619, 0.0841, 0.1113, 0.1405, 0.1707, 0.2013, 0.2321, 0.2627, 0.2932, 0.3528, 0.4379, 0.5645, 0.6697, 0.754],
        0.8: [0.0788, 0.1349, 0.2056, 0.281, 0.3562, 0.4285, 0.4964, 0.5591, 0.6162, 0.7137, 0.8213, 0.9239, 0.9696, 0.9885],
        1.2: [0.1082, 0.2304, 0.3832, 0.5302, 0.655, 0.7536, 0.8279, 0.882, 0.9203, 0.9651, 0.9906, 0.9991, 0.9999, 1.0],
        2.0: [0.1757, 0.4707, 0.755, 0.9089, 0.9705, 0.9913, 0.9976, 0.9994, 0.9998, 1.0, 1.0, 1.0, 1.0, 1.0],
        3.0: [0.2608, 0.7453, 0.967, 0.9977, 0.9999, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        5.0: [0.421, 0.9755, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        9.6: [0.7132, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        20.0: [0.9735, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        40.0: [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    },
    0.01: {
        0.2: [0.0104, 0.0112, 0.0123, 0.0135, 0.0149, 0.0164, 0.018, 0.0196, 0.0212, 0.0246, 0.0301, 0.0399, 0.0504, 0.0617],
        0.5: [0.0124, 0.0174, 0.0248, 0.0342, 0.0453, 0.0579, 0.0717, 0.0867, 0.1027, 0.1373, 0.1944, 0.2973, 0.4023, 0.5026],
        0.8: [0.0158, 0.0287, 0.0502, 0.08, 0.1171, 0.16, 0.2073, 0.2576, 0.3097, 0.4146, 0.5619, 0.7536, 0.8735, 0.9395],
        1.2: [0.0217, 0.0517, 0.1085, 0.192, 0.2939, 0.4035, 0.511, 0.6098, 0.6959, 0.826, 0.9333, 0.9893, 0.9986, 0.9998],
        2.0: [0.0355, 0.1214, 0.3077, 0.5472, 0.752, 0.8829, 0.9509, 0.9813, 0.9934, 0.9993, 1.0, 1.0, 1.0, 1.0],
        3.0: [0.0531, 0.2432, 0.6199, 0.8947, 0.9827, 0.9981, 0.9998, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        5.0: [0.0884, 0.5306, 0.9589, 0.9996, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        9.6: [0.1689, 0.9368, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        20.0: [0.3432, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        40.0: [0.6257, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    },
}


@pytest.mark.parametrize("alpha", sorted(POWER_TABLE))
def test_paired_power_matches_a_reference_table(alpha):
    for effect, expected in POWER_TABLE[alpha].items():
        power = stats.paired_power(effect, POWER_NS, alpha)
        assert not np.isnan(power).any(), (effect, power)
        assert power == pytest.approx(expected, abs=0.01), effect
    # every n from 2 to 30 and effects between the table's rows: a probability, never NaN
    grid = stats.paired_power(np.linspace(0.2, 40, 200)[:, None], np.arange(2, 31), alpha)
    assert np.isfinite(grid).all() and ((grid >= 0) & (grid <= 1 + 1e-12)).all()


def test_seeds_needed_matches_power_tables():
    # G*Power, paired t-test, two-sided, alpha 0.05, power 0.8: dz 0.5 -> 34, dz 1 -> 10.
    assert stats.seeds_needed(0.5, 1.0) == 34
    assert stats.seeds_needed(-1.0, 1.0) == 10
    n = int(stats.seeds_needed(1.2, 0.9))
    assert stats.paired_power(1.2 / 0.9, n) >= 0.8 > stats.paired_power(1.2 / 0.9, n - 1)


def test_seeds_needed_power_by_simulation():
    n = int(stats.seeds_needed(1.0, 1.0))
    d = np.random.default_rng(3).normal(1.0, 1.0, (20000, n))
    power = (sp.ttest_1samp(d, 0, axis=1).pvalue <= 0.05).mean()
    assert power == pytest.approx(stats.paired_power(1.0, n), abs=0.015)
    assert power >= 0.78


def test_seeds_needed_edge_cases():
    assert stats.seeds_needed(0.0, 1.0) == math.inf
    assert stats.seeds_needed(0.1, 5.0) == math.inf  # past MAX_SEEDS
    assert stats.seeds_needed(0.1, 5.0, max_seeds=10_000) > stats.MAX_SEEDS
    assert math.isnan(stats.seeds_needed(1.0, 0.0))  # zero spread: no test to power
    assert math.isnan(stats.seeds_needed(1.0, math.nan))
    assert stats.seeds_needed(10.0, 0.1) == 2


# --- ranks, Friedman, critical difference -----------------------------------------------

@pytest.mark.parametrize("k, q", list(zip(range(2, 11), DEMSAR_Q05)))
def test_nemenyi_q_matches_demsar_table(k, q):
    # Demšar's table is rounded from older tables: it differs in the third decimal at k=3, 7.
    assert stats.nemenyi_q(k, 0.05) == pytest.approx(q, abs=1.5e-3)


def scores_table():
    cells = pd.MultiIndex.from_product([["cifar10_lt", "cifar100_lt"], [10.0, 100.0]])
    return pd.DataFrame([[80.0, 50.0, 60.0, 40.0],
                         [82.0, 52.0, 61.0, 41.0],
                         [82.0, 51.0, 63.0, 42.0],
                         [79.0, 49.0, 59.0, 43.0]],
                        index=["ce", "focal", "bs", "ldam_drw"], columns=cells)


def test_rank_methods_against_scipy():
    scores = scores_table()
    ranking = stats.rank_methods(scores)
    # Per cell, best = 1, ties averaged: e.g. focal and bs share 1.5 in the first cell.
    expected = {"ce": (3 + 3 + 3 + 4) / 4, "focal": (1.5 + 1 + 2 + 3) / 4,
                "bs": (1.5 + 2 + 1 + 2) / 4, "ldam_drw": (4 + 4 + 4 + 1) / 4}
    assert ranking.average_ranks.to_dict() == pytest.approx(expected)
    assert list(ranking.average_ranks.index) == ["bs", "focal", "ce", "ldam_drw"]
    result = sp.friedmanchisquare(*scores.to_numpy())
    assert ranking.statistic == pytest.approx(result.statistic)
    assert ranking.p_value == pytest.approx(result.pvalue)
    assert ranking.cd == pytest.approx(2.569 * math.sqrt(4 * 5 / (6 * 4)), abs=1e-3)
    assert ranking.n_cells == 4 and ranking.dropped_cells == []


def test_rank_methods_incomplete_and_too_small():
    scores = scores_table()
    scores.iloc[0, 0] = math.nan  # ce never run on the first cell: the cell is left out
    ranking = stats.rank_methods(scores)
    assert ranking.n_cells == 3 and ranking.dropped_cells == [("cifar10_lt", 10.0)]
    two = stats.rank_methods(scores_table().iloc[:2])
    assert math.isnan(two.p_value) and two.cd == pytest.approx(1.960 * math.sqrt(1 / 4),
                                                                 abs=1e-3)
    one_cell = stats.rank_methods(scores_table().iloc[:, :1])
    assert math.isnan(one_cell.p_value) and not math.isnan(one_cell.cd)
    tied = stats.rank_methods(pd.DataFrame(np.ones((3, 4))))
    assert math.isnan(tied.p_value) and (tied.average_ranks == 2).all()


def test_nemenyi_groups():
    ranks = pd.Series({"a": 1.0, "b": 1.5, "c": 2.4, "d": 3.9, "e": 4.0})
    assert stats.nemenyi_groups(ranks, 1.0) == [("a", "b"), ("b", "c"), ("d", "e")]
    assert stats.nemenyi_groups(ranks, 10.0) == [("a", "b", "c", "d", "e")]
    assert stats.nemenyi_groups(ranks, 0.1) == []
    assert stats.nemenyi_groups(ranks, math.nan) == []


# --- the critical-difference diagram ----------------------------------------------------

def test_cd_diagram_writes_a_png(tmp_path):
    from PIL import Image

    from ltbench.report.cd_diagram import cd_figure

    ranking = stats.rank_methods(scores_table())
    for name, cd in (("cd", ranking.cd), ("no_cd", math.nan)):
        path = tmp_path / f"{name}.png"
        cd_figure(ranking.average_ranks, cd, title="Top-1").savefig(path, dpi=100)
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 50
