"""The main tables beside the last-epoch headline: top-1 at the epoch best on validation
(top1_bestval), emphasised by its own significance assessment, and the column chosen on the
test set (top1_best) named so."""

import re
import statistics

import pytest

from test_report import build, markdown_rows, one, read_csv, write_run

CE = {"top1": [70.0, 71.0, 73.0], "bestval": [71.0, 72.0, 74.0]}
LDAM = {"top1": [76.0, 77.0, 75.0], "bestval": [80.0, 81.5, 79.0]}
VARIANT = "### Top-1 accuracy at the epoch best on validation (%)"


def tables_of(markdown: str) -> list[str]:
    """The Markdown of each table of a section file, by its title."""
    return ["###" + part for part in markdown.split("###")[1:]]


@pytest.fixture
def with_validation(tmp_path):
    results = tmp_path / "results"
    for method, figures in (("ce", CE), ("ldam_drw", LDAM)):
        for seed, (last, bestval) in enumerate(zip(figures["top1"], figures["bestval"])):
            write_run(results, method=method, seed=seed, top1=last, top1_best=max(last, bestval) + 1,
                      top1_bestval=bestval, top1_bestval_epoch=150, n_val=500)
    out = tmp_path / "out"
    build(results, out)
    return out


def test_the_main_table_shows_top1_bestval_beside_the_last_epoch(with_validation):
    out = with_validation
    last, variant = tables_of((out / "tables" / "main.md").read_text())
    assert last.startswith("### Top-1 accuracy (%)") and variant.startswith(VARIANT)
    assert "Top-1 at the last epoch" in last
    assert "chosen on the validation split, never on the test set" in variant
    # each table its own figures: the last epoch's and the best-on-validation epoch's
    for table, key in ((last, "top1"), (variant, "bestval")):
        rows = markdown_rows(table)
        for label, figures in (("CE", CE), ("LDAM-DRW", LDAM)):
            values = figures[key]
            mean, std = statistics.mean(values), statistics.stdev(values)
            assert re.match(r"[*<u>]*" + re.escape(f"{mean:.2f} ± {std:.2f}"), rows[label][0]), (label, key, rows)
    data = read_csv(out / "tables" / "main.csv")
    ldam, ce = one(data, label="ldam_drw"), one(data, label="ce")
    assert ldam["top1_bestval_mean"] == pytest.approx(statistics.mean(LDAM["bestval"]))
    assert ce["top1_bestval_std"] == pytest.approx(statistics.stdev(CE["bestval"]))
    # three seeds each, LDAM-DRW 8 points above CE on validation-chosen epochs: best there,
    # and CE significantly below it
    assert ldam["top1_bestval_best"] and not ce["top1_bestval_best"] and not ce["top1_bestval_tied_with_best"]
    latex = (out / "tables" / "main.tex").read_text()
    bold = r"\textbf{" + f"{statistics.mean(LDAM['bestval']):.2f}"
    assert bold in latex.split("epoch best on validation")[1], latex
    # the variant is not compared with the baseline: no arrows, and it says so
    assert "\u2191" not in variant and "\u2193" not in variant
    assert "Compared with the baseline at the last epoch only" in variant


def test_a_column_chosen_on_test_says_so(with_validation):
    data = read_csv(with_validation / "tables" / "many_medium_few.csv")
    assert "top1_best_mean" not in data and "top1_best_std" not in data
    ldam = one(data, label="ldam_drw")
    best = [max(last, bestval) + 1 for last, bestval in zip(LDAM["top1"], LDAM["bestval"])]
    assert ldam["top1_best_on_test_mean"] == pytest.approx(statistics.mean(best))
    assert ldam["top1_bestval_mean"] == pytest.approx(statistics.mean(LDAM["bestval"]))


def test_runs_without_a_validation_split_keep_one_table_and_say_why(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    for seed, top1 in enumerate(CE["top1"]):
        write_run(results, seed=seed, top1=top1)  # rows of a version before top1_bestval
    build(results, out)
    main = (out / "tables" / "main.md").read_text()
    assert len(tables_of(main)) == 1 and VARIANT not in main
    assert "No run here recorded top1_bestval" in main
