"""What the report's tables claim about differences, on synthetic seeds whose true differences
are known: the marks against the baseline and the bold, their false-positive rates over many
draws, and the statistics as rendered in Markdown, LaTeX, CSV and HTML against scipy."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sp

from ltbench.errors import UserError
from ltbench.report import ranks, significance, stats

from test_report import read_csv, report, write_run

FACTORS = (100, 10)
SEEDS = range(5)
# true gains over CE in points; ldam_drw runs one seed only, far above the rest
GAINS = {"ce": 0.0, "focal": 0.0, "balanced_softmax": 3.0}


def synthetic_runs(rng, gains, cells=2, seeds=5, noise=0.5, seed_effect=1.0, metric="top1"):
    """Labelled runs as the report's tables see them; a seed shifts every method alike in a
    cell (the shared subset, initialisation and batch order pairing relies on)."""
    rows = []
    for c in range(cells):
        shared = rng.normal(0, seed_effect, seeds)
        for label, gain in gains.items():
            values = 70.0 - 5 * c + gain + shared + rng.normal(0, noise, seeds)
            rows += [dict(label=label, method=label, dataset=f"d{c}", imbalance_factor=100.0,
                          seed=s, **{metric: v}) for s, v in enumerate(values)]
    return pd.DataFrame(rows)


# --- false positives and power of the marks ---------------------------------------------

def test_a_zero_gain_is_marked_at_most_at_the_nominal_rate():
    """No true difference anywhere: a table carries any arrow in at most alpha of the
    sweeps (Holm over the table's comparisons), well above zero so the test has teeth."""
    rng = np.random.default_rng(18)
    draws = 200
    marked = 0
    for _ in range(draws):
        runs = synthetic_runs(rng, {"ce": 0.0, "focal": 0.0, "bs": 0.0})
        assessment = significance.assess(runs, "ce", metrics=("top1",))
        assert len(assessment.comparisons) == 4 and assessment.comparisons["tested"].all()
        marked += assessment.comparisons["significant"].any()
    assert marked / draws <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / draws)


def test_with_no_true_difference_every_method_is_best_or_tied_nearly_always():
    """Per column, a method loses its underline only when the best beats it significantly
    (Holm over the column's pairs), so with all equal some method loses it in at most alpha
    of the columns; 400 independent columns in one table."""
    rng = np.random.default_rng(5)
    columns = 400
    runs = synthetic_runs(rng, {"ce": 0.0, "focal": 0.0, "bs": 0.0, "ldam": 0.0}, cells=columns)
    assessment = significance.assess(runs, None, metrics=("top1",))
    assert len(assessment.best) == columns and not assessment.best & assessment.tied
    marked_per_column = pd.Series([k[1] for k in assessment.best | assessment.tied]).value_counts()
    lost = columns - (marked_per_column == 4).sum()
    assert lost / columns <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / columns)
    assert lost > 0  # the rule does reject sometimes: not vacuously conservative


def test_a_large_gain_is_marked_and_bold_with_nothing_tied():
    rng = np.random.default_rng(3)
    hits = bold_alone = 0
    draws = 40
    for _ in range(draws):
        runs = synthetic_runs(rng, {"ce": 0.0, "focal": 0.0, "bs": 3.0})
        assessment = significance.assess(runs, "ce", metrics=("top1",))
        for c in ("d0", "d1"):
            hits += assessment.mark("bs", c, 100.0, "top1") == significance.UP
            bold_alone += ({k[0] for k in assessment.best if k[1] == c} == {"bs"}
                           and not any(k[1] == c for k in assessment.tied))
    assert hits / (2 * draws) >= 0.95 and bold_alone / (2 * draws) >= 0.9


# --- the bold rule ----------------------------------------------------------------------

def cell(values: dict) -> pd.DataFrame:
    return pd.DataFrame([dict(label=label, seed=s, top1=v) for label, seeds in values.items()
                         for s, v in enumerate(seeds)])


def test_one_seed_is_never_bold_over_two():
    # 57.87 (n=1) beside 54.77 +- 1.69 (n=2): nothing can be claimed
    assert significance.best_and_tied(cell({"a": [57.87], "b": [53.58, 55.96]}), "top1") == (set(), set())


def test_only_methods_with_three_seeds_take_part():
    values = {"a": [60.0, 61.0, 60.5], "b": [50.0, 51.2, 50.4], "c": [90.0]}
    assert significance.best_and_tied(cell(values), "top1") == ({"a"}, set())
    assert significance.best_and_tied(cell({"a": values["a"], "c": [90.0, 91.0]}), "top1") == (set(), set())


def test_a_clearly_lower_mean_is_neither_bold_nor_tied():
    # the bold that used to mean "not significantly beaten": 57.9 beside 70.0 on 3 seeds
    values = {"ce": [57.1, 58.4, 58.2], "crt": [69.5, 70.3, 70.2]}
    assert significance.best_and_tied(cell(values), "top1") == ({"crt"}, set())


def test_ties_share_the_underline_and_equal_runs_are_a_tie():
    tied = {"a": [60.0, 61.0, 60.5, 59.8], "b": [60.2, 60.7, 60.6, 59.9],
            "c": [60.0, 61.0, 60.5, 59.8]}
    assert significance.best_and_tied(cell(tied), "top1") == ({"b"}, {"a", "c"})


def test_empty_groups_are_never_bold():
    assert significance.best_and_tied(cell({"a": [math.nan] * 3, "b": [math.nan] * 3}),
                                      "top1") == (set(), set())


def test_resolve_baseline():
    runs = pd.DataFrame({"label": ["ce (epochs=100)", "ce (epochs=200)", "focal"],
                         "method": ["ce", "ce", "focal"]})
    # the default, ce, is ambiguous here: said, not guessed
    label, warning = significance.resolve_baseline(runs, None)
    assert label is None and "2 rows are ce" in warning
    with pytest.raises(UserError, match="2 rows are ce") as named:
        significance.resolve_baseline(runs, "ce")
    assert "--baseline 'ce (epochs=100)'" in named.value.hint
    assert significance.resolve_baseline(runs[runs["method"] != "ce"], None) == (None, None)
    assert significance.resolve_baseline(runs, "ce (epochs=200)") == ("ce (epochs=200)", None)
    assert significance.resolve_baseline(runs, "focal") == ("focal", None)
    assert significance.resolve_baseline(runs, "none") == (None, None)
    with pytest.raises(UserError, match="--baseline focla: .*did you mean 'focal'") as unknown:
        significance.resolve_baseline(runs, "focla")
    assert "rows: ce (epochs=100), ce (epochs=200), focal" in unknown.value.hint


def test_best_and_tied_have_their_own_style_in_every_format():
    from ltbench.report import render
    from ltbench.report.model import Table

    table = Table(header=["Method", "IF 100"], rows=[["cRT", "70.0"], ["CE", "69.8"]],
                  bold={(0, 1)}, underline={(1, 1)})
    md = render.markdown_table(table)
    assert "| cRT | **70.0** |" in md and "| CE | <u>69.8</u> |" in md
    tex = render.latex_table(table, "t")
    assert r"\textbf{70.0}" in tex and r"\underline{69.8}" in tex
    page = render.html_table(table)
    assert "<strong>70.0</strong>" in page and "<u>69.8</u>" in page


# --- the rendered report ----------------------------------------------------------------

@pytest.fixture(scope="module")
def known(tmp_path_factory):
    """A sweep with known gains: CE, focal (+0), balanced softmax (+3) on 5 seeds at two
    IFs; LDAM-DRW far above, on one seed. Returns (out dir, values)."""
    rng = np.random.default_rng(7)
    results = tmp_path_factory.mktemp("known") / "results"
    values = {}
    for factor in FACTORS:
        shared = rng.normal(0, 1.0, len(SEEDS))
        for method, gain in GAINS.items():
            top1 = 70.0 - factor / 10 + gain + shared + rng.normal(0, 0.3, len(SEEDS))
            many = top1 + 10 + rng.normal(0, 0.3, len(SEEDS))
            values[method, factor] = dict(top1=top1, many=many)
            for seed in SEEDS:
                write_run(results, method=method, imbalance_factor=factor, seed=seed,
                          top1=top1[seed], many=many[seed], device="cpu:2 cores")
        values["ldam_drw", factor] = dict(top1=np.array([80.0]), many=np.array([90.0]))
        write_run(results, method="ldam_drw", imbalance_factor=factor, seed=0, top1=80.0,
                  many=90.0)
    out = results.parent / "out"
    assert report(results, out) == 0
    return out, values


def test_cell_intervals_match_scipy(known):
    out, values = known
    data = read_csv(out / "tables" / "main.csv")
    for (method, factor), v in values.items():
        row = data[(data["method"] == method) & (data["imbalance_factor"] == factor)].iloc[0]
        x = v["top1"]
        assert row["top1_n"] == len(x) and row["top1_mean"] == pytest.approx(x.mean())
        if len(x) > 1:
            low, high = sp.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sp.sem(x))
            assert (row["top1_ci_low"], row["top1_ci_high"]) == pytest.approx((low, high))
        else:
            assert pd.isna(row["top1_std"]) and pd.isna(row["top1_ci_low"])
        assert row["top1_few_seeds"] == (len(x) < 3)


def test_paired_differences_match_scipy_and_holm(known):
    out, values = known
    data = read_csv(out / "tables" / "baseline.csv")
    top1 = data[data["family"] == "top1"]
    p_values = []
    for method in ("focal", "balanced_softmax"):
        for factor in FACTORS:
            row = top1[(top1["label"] == method) & (top1["imbalance_factor"] == factor)].iloc[0]
            a, b = values[method, factor]["top1"], values["ce", factor]["top1"]
            result = sp.ttest_rel(a, b)
            assert row["diff"] == pytest.approx((a - b).mean())
            assert row["p_value"] == pytest.approx(result.pvalue)
            low, high = result.confidence_interval(0.95)
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
            p_values.append((row["p_value"], row["p_holm"]))
    # Holm by hand over the four tested comparisons (ldam_drw's single seed is untested)
    ordered = sorted(p_values)
    adjusted = np.maximum.accumulate([min(1, (4 - i) * p) for i, (p, _) in enumerate(ordered)])
    assert [h for _, h in ordered] == pytest.approx(list(adjusted))
    ldam = top1[top1["label"] == "ldam_drw"]
    assert not ldam["tested"].any() and ldam["p_holm"].isna().all()
    marked = top1[top1["significant"]]
    assert set(marked["label"]) == {"balanced_softmax"} and (marked["diff"] > 2).all()


def test_seeds_needed_use_the_marks_alpha_and_say_they_are_optimistic(known):
    out, _ = known
    data = read_csv(out / "tables" / "baseline.csv")
    for family, rows in data.groupby("family"):
        m = int(rows["diff"].notna().sum())
        assert list(rows["power_alpha"]) == pytest.approx([0.05 / m] * len(rows)), family
        for r in rows[rows["diff_std"] > 0].itertuples():
            expected = max(3, stats.seeds_needed(r.diff, r.diff_std, alpha=0.05 / m))
            assert r.seeds_needed == expected
    md = (out / "tables" / "baseline.md").read_text()
    assert "Holm's first step over the table's" in md and "optimistic" in md


def test_ranks_and_friedman_match_scipy(known):
    out, values = known
    data = read_csv(out / "tables" / "ranking.csv")
    top1 = data[data["metric"] == "top1"].set_index("label")
    methods = ["ce", "focal", "balanced_softmax", "ldam_drw"]
    means = np.array([[values[m, f]["top1"].mean() for f in FACTORS] for m in methods])
    ranks = np.apply_along_axis(lambda col: sp.rankdata(-col), 0, means).mean(axis=1)
    assert [top1.loc[m, "average_rank"] for m in methods] == pytest.approx(list(ranks))
    friedman = sp.friedmanchisquare(*means)
    assert top1["friedman_p"].iloc[0] == pytest.approx(friedman.pvalue)
    assert top1["cd"].iloc[0] == pytest.approx(stats.critical_difference(4, 2))
    # two cells: no ordering can make Friedman reject, so no Nemenyi groups and no diagram
    assert friedman.pvalue > 0.05
    assert not (out / "figures" / "critical_difference.png").exists()


def test_marks_bold_and_italic_in_all_four_formats(known):
    out, _ = known
    md = (out / "tables" / "main.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines()
            if line.startswith("| ")}
    # 5 seeds everywhere but LDAM-DRW's one: counts in the cells
    assert rows["Balanced Softmax"].count("\u2191 (n=5)**") == 2
    assert rows["Balanced Softmax"].count("| **") == 2
    assert "\u2191" not in rows["Focal"] and "\u2193" not in rows["Focal"] and "**" not in rows["Focal"]
    # one seed: no +-, italic, never bold although its mean is the highest
    assert rows["LDAM-DRW"].count("| *80.00 (n=1)* ") == 2
    assert "significantly above / below CE" in md and "Italic: fewer than 3 seeds" in md
    assert "Bold: best mean in the column; underlined: not significantly below it" in md
    assert "Seeds for 80 % power" in md
    tex = (out / "tables" / "main.tex").read_text()
    assert r"\textbf{" in tex and r"$^{\uparrow}$" in tex
    assert r"\textit{80.00 {\scriptsize (n=1)}}" in tex
    assert "\u2191" not in tex and "\u03b1" not in tex  # every symbol made LaTeX
    page = (out / "index.html").read_text()
    assert "<strong>" in page and "\u2191" in page and '<em>80.00 <span class="n">(n=1)</span></em>' in page
    for heading in ["Confidence intervals", "Compared with CE", "Ranks across settings"]:
        assert f"<h2>{heading}</h2>" in page
    data = read_csv(out / "tables" / "main.csv")
    bs = data[data["method"] == "balanced_softmax"]
    assert bs["best_in_column"].all() and bs["top1_vs_baseline_significant"].all()
    assert not data.loc[data["method"] != "balanced_softmax", "best_in_column"].any()


def test_comparison_and_rank_tables_render(known):
    out, _ = known
    md = (out / "tables" / "baseline.md").read_text()
    assert "### Top-1: paired difference to CE (percentage points)" in md
    assert "### Many / medium / few: paired difference to CE" in md
    line = next(x for x in md.splitlines() if x.startswith("| Balanced Softmax | CIFAR-10-LT | 100 | 5 | +"))
    assert "\u2191" in line
    ranking = (out / "tables" / "ranking.md").read_text()
    assert "Friedman \u03c7\u00b2" in ranking and "Nemenyi critical difference" not in ranking
    assert "not significantly apart" not in ranking and "no Nemenyi groups" in ranking
    tex = (out / "tables" / "ranking.tex").read_text()
    assert r"$\chi$$^2$" in tex


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    results = tmp_path_factory.mktemp("small") / "results"
    for seed, (ce, focal) in enumerate([(70.0, 73.0), (71.0, 74.5), (69.5, 72.0)]):
        write_run(results, seed=seed, top1=ce, per_class=False)
        write_run(results, method="focal", seed=seed, top1=focal, per_class=False)
    return results


def test_no_baseline_no_arrows(small, tmp_path):
    assert report(small, tmp_path / "out", "--baseline", "none") == 0
    md = (tmp_path / "out" / "tables" / "main.md").read_text()
    assert "\u2191" not in md and "Bold:" in md and "**73.17 \u00b1 1.26**" in md
    assert "No baseline" in (tmp_path / "out" / "report.md").read_text()
    assert report(small, tmp_path / "focal", "--baseline", "focal") == 0
    md = (tmp_path / "focal" / "tables" / "main.md").read_text()
    assert "significantly above / below Focal" in md and "70.17 \u00b1 0.76\u2193" in md


def test_an_unknown_baseline_is_refused(small, tmp_path):
    with pytest.raises(UserError, match="--baseline crt: no selected finished run"):
        report(small, tmp_path / "out", "--baseline", "crt")
    assert not (tmp_path / "out").exists()


# --- what pairing by seed assumes of the harness ----------------------------------------

def test_runs_of_one_seed_share_initialisation_and_batches():
    """The README's claim behind the paired tests: methods that draw batches alike (CE,
    focal, balanced softmax) start, with one seed, from the same weights and see the same
    first batch; another seed changes both. The long-tailed subset takes no run seed."""
    import inspect

    import torch

    from ltbench.data.datasets import DatasetInfo
    from ltbench.runner import make_trainer
    from ltbench.sweep import resolve
    from ltbench.testing import TOY_SETTINGS, toy_data

    data = toy_data()

    def start(method, seed):
        spec = resolve(method, "cifar10_lt", 100, seed, "smoke", dict(TOY_SETTINGS))
        trainer = make_trainer(spec, data, torch.device("cpu"))
        batch = next(iter(trainer.loader.epoch()))["main"]
        return [p.detach().clone() for p in trainer.backbone.parameters()], batch

    def same(a, b):
        weights = all(torch.equal(x, y) for x, y in zip(a[0], b[0]))
        return weights, torch.equal(a[1].views[0], b[1].views[0]) and torch.equal(a[1].labels, b[1].labels)

    ce = start("ce", 3)
    for method in ("focal", "balanced_softmax"):
        assert same(ce, start(method, 3)) == (True, True), method
    assert same(ce, start("ce", 4)) == (False, False)
    assert "seed" not in inspect.signature(DatasetInfo.build).parameters


def test_friedman_says_when_too_few_cells_can_reject():
    # 3 methods on 2 cells: even the same order twice gives p = 0.135
    agg = pd.DataFrame([dict(label=m, dataset="cifar10_lt", imbalance_factor=f, top1_mean=v + f,
                             many_mean=v, medium_mean=v, few_mean=v)
                        for f in (10.0, 100.0) for m, v in (("ce", 1.0), ("focal", 2.0), ("bs", 3.0))])
    rankings = ranks.ranking_section(agg)
    assert rankings.by_metric["top1"].p_value == pytest.approx(sp.chi2.sf(4, 2))
    notes = " ".join(rankings.section.tables[0].notes)
    assert "the smallest possible p is 0.135" in notes
