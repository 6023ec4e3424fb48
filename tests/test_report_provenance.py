"""Provenance of every report number (the runs, code and data behind each cell, and warnings
where a cell mixes them), the terciles shot rule, and the LaTeX tables compiling."""

import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from ltbench.data.profiles import SHOT_RULES, class_counts, many_medium_few
from ltbench.metrics import group_sizes

from test_report import build, one, parse, read_csv, write_run


class Cells(HTMLParser):
    """Every <td> of a page: its text, classes and title."""

    def __init__(self):
        super().__init__()
        self.cells, self._open = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "td":
            attrs = dict(attrs)
            self._open = {"text": "", "class": attrs.get("class") or "",
                          "title": attrs.get("title")}

    def handle_data(self, data):
        if self._open is not None:
            self._open["text"] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._open is not None:
            self.cells.append(self._open)
            self._open = None


def html_cells(out):
    parser = Cells()
    parser.feed((out / "index.html").read_text())
    return parser.cells


# --- mixing data or code in one cell ----------------------------------------------------

def test_two_split_fingerprints_in_one_cell_are_warned_everywhere(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    a = write_run(results, seed=0, top1=70.0, split_fingerprint="aaaa1111aaaa1111").name
    b = write_run(results, seed=1, top1=71.0, split_fingerprint="bbbb2222bbbb2222").name
    printed = build(results, out)
    flat = " ".join(printed.split())
    assert ("Warning: CE, CIFAR-10-LT IF 100: runs with different split fingerprints "
            "aaaa1111aaaa1111 (1 run), bbbb2222bbbb2222 (1 run).") in flat
    # in the report text, the page, the provenance table and the companion of the main table
    assert "runs with different split fingerprints" in (out / "report.md").read_text()
    provenance = (out / "tables" / "provenance.md").read_text()
    assert "Cells that mix data or code" in provenance and "bbbb2222bbbb2222" in provenance
    companion = read_csv(out / "tables" / "main.provenance.csv")
    assert set(companion["run_id"]) == {a, b}
    assert companion["warning"].str.contains("split fingerprints").all()
    assert set(companion["split_fingerprint"]) == {"aaaa1111aaaa1111", "bbbb2222bbbb2222"}
    mixed = [c for c in html_cells(out) if "mixed" in c["class"].split()]
    assert mixed and all(c["title"].startswith("Warning: CE, CIFAR-10-LT IF 100") for c in mixed)
    main_cell = next(c for c in mixed if c["text"].startswith("70.50"))
    assert a in main_cell["title"] and b in main_cell["title"]


def test_one_split_and_one_code_version_warn_nothing(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    for seed in range(3):
        write_run(results, seed=seed, top1=70.0 + seed, split_fingerprint="aaaa1111aaaa1111")
        write_run(results, method="focal", seed=seed, top1=72.0 + seed,
                  split_fingerprint="aaaa1111aaaa1111")
    printed = build(results, out)
    assert "Warning" not in printed
    assert "No cell mixes runs" in (out / "tables" / "provenance.md").read_text()
    assert not [c for c in html_cells(out) if "mixed" in c["class"].split()]


def test_seeds_of_different_code_versions_are_warned(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    write_run(results, seed=0, git_sha="1111111")
    write_run(results, seed=1, git_sha="2222222", ltbench_version="0.2.0")
    flat = " ".join(build(results, out).split())
    assert "git SHAs 1111111 (1 run), 2222222 (1 run)" in flat
    assert "ltbench versions 0.1.0 (1 run), 0.2.0 (1 run)" in flat


def test_methods_compared_on_different_splits_are_warned(tmp_path):
    """Each method consistent on its own, but CE and focal, built alike, saw different data:
    the comparison cells (not each method's own cell) carry the warning."""
    results, out = tmp_path / "results", tmp_path / "out"
    for seed in range(3):
        write_run(results, seed=seed, top1=70.0 + seed, split_fingerprint="aaaa1111aaaa1111")
        write_run(results, method="focal", seed=seed, top1=72.0 + seed,
                  split_fingerprint="bbbb2222bbbb2222")
    flat = " ".join(build(results, out).split())
    assert ("CIFAR-10-LT IF 100 (methods compared): runs with different split fingerprints "
            "between methods: aaaa1111aaaa1111 (CE); bbbb2222bbbb2222 (Focal).") in flat
    main = read_csv(out / "tables" / "main.provenance.csv")
    assert main["warning"].isna().all()  # each method's mean is one split
    baseline = read_csv(out / "tables" / "baseline.provenance.csv")
    assert baseline["warning"].str.contains("between methods").all()
    top1 = baseline[baseline["table"].str.startswith("Top-1")]
    assert len(top1) == 6  # focal's 3 runs paired with CE's 3


def test_every_cell_names_its_runs(tmp_path):
    """Each table's companion lists, per cell, exactly the runs averaged into it, with what
    they recorded; each HTML cell's tooltip names them."""
    results, out = tmp_path / "results", tmp_path / "out"
    ids = {}
    for seed in range(3):
        for method, top1 in [("ce", 70.0), ("focal", 72.0)]:
            for factor in (100, 10):
                folder = write_run(results, method=method, seed=seed, imbalance_factor=factor,
                                   top1=top1 + seed + factor / 100, torch="2.5.1",
                                   split_fingerprint=f"fp{factor}", device="cpu:2 cores")
                ids.setdefault((method, factor), set()).add(folder.name)
    build(results, out)
    for name in ["main", "intervals", "baseline", "ranking", "many_medium_few", "cost"]:
        assert (out / "tables" / f"{name}.provenance.csv").is_file(), name
    main = read_csv(out / "tables" / "main.provenance.csv")
    assert list(main.columns[:6]) == ["table", "row", "column", "row_label", "column_header",
                                      "cell"]
    for (method, factor), runs in ids.items():
        here = main[(main["method"] == method) & (main["imbalance_factor"] == factor)]
        assert set(here["run_id"]) == runs
        assert here["column_header"].iloc[0] == f"CIFAR-10-LT IF {factor}"
        assert set(here["split_fingerprint"]) == {f"fp{factor}"}
        assert set(here["device"]) == {"cpu:2 cores"} and set(here["git_sha"]) == {"abc1234"}
    ranking = read_csv(out / "tables" / "ranking.provenance.csv")
    top1 = ranking[(ranking["row_label"] == "CE") & (ranking["column_header"] == "Top-1")]
    assert set(top1["run_id"]) == ids[("ce", 100)] | ids[("ce", 10)]
    numbers = [c for c in html_cells(out) if re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d.*", c["text"])]
    assert numbers and all(c["title"] and c["title"].startswith("3 runs:") for c in numbers)
    cell = next(c for c in html_cells(out) if c["text"].startswith("72.00 ± 1.00"))
    assert all(run in cell["title"] for run in ids[("ce", 100)])
    assert "git abc1234, ltbench 0.1.0, torch 2.5.1, device cpu:2 cores, split fp100" in cell["title"]
    assert "tables/main.provenance.csv" in (out / "report.md").read_text()


# --- the terciles rule ------------------------------------------------------------------

def test_terciles_give_three_groups_where_thresholds_leave_one_empty():
    counts = class_counts(10, 5000, 100, "exp")  # CIFAR-10-LT at IF 100: 5000 ... 50
    assert many_medium_few(counts, "cb").count("few") == 0
    groups = many_medium_few(counts, "terciles")
    assert groups == ["many"] * 4 + ["medium"] * 3 + ["few"] * 3
    assert group_sizes(counts, "terciles") == {"many": 4, "medium": 3, "few": 3}


def test_terciles_sort_by_count_and_break_ties_by_class_index():
    assert many_medium_few([1, 50, 7, 50, 50, 3], "terciles") == [
        "few", "many", "medium", "many", "medium", "few"]
    assert many_medium_few([5] * 6, "terciles") == ["many"] * 2 + ["medium"] * 2 + ["few"] * 2
    counts = class_counts(100, 500, 100)
    assert [many_medium_few(counts, "terciles").count(g) for g in ("many", "medium", "few")] == [
        34, 33, 33]


def test_the_report_offers_every_shot_rule():
    assert parse("--shot-rule", "terciles").shot_rule == "terciles"
    parser_rules = next(a.choices for a in _parser()._actions if a.dest == "shot_rule")
    assert tuple(parser_rules) == SHOT_RULES


def _parser():
    import argparse

    from ltbench.report import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser


def test_report_under_terciles_names_the_rule_and_fills_every_group(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    for seed in range(3):
        write_run(results, seed=seed, top1=70.0 + seed)  # CIFAR-10-LT-shaped counts, IF 100
    build(results, out, "--shot-rule", "terciles")
    data = read_csv(out / "tables" / "many_medium_few.csv")
    row = data.iloc[0]
    assert row["mmf_convention"] == "terciles"
    assert (row["n_many"], row["n_medium"], row["n_few"]) == (4, 3, 3)
    assert all(row[f"{g}_mean"] > 0 for g in ("many", "medium", "few"))
    text = (out / "tables" / "many_medium_few.md").read_text()
    assert "terciles rule: classes sorted by training images" in text
    assert "CIFAR-10-LT IF 100: many 4 classes, medium 3 classes, few 3 classes" in text
    assert "—" not in text.split("### ")[1].split("\n\n")[1]  # no empty group in the rows


@pytest.mark.slow
def test_a_dataset_declaring_terciles_is_trained_and_reported_under_it(tmp_path, monkeypatch):
    """A dataset plugin whose rule is terciles: the run records it and fills every group,
    and the report's caption names it, with no --shot-rule."""
    import csv
    import sys

    from ltbench import registry
    from ltbench.cli import main
    from ltbench.report import names
    from test_plugins import DATASET_MODULE, install

    module = DATASET_MODULE.replace('shot_rule="oltr"', 'shot_rule="terciles"')
    assert module != DATASET_MODULE
    install(tmp_path, monkeypatch, "my_tercile_data", module, "ltbench.datasets",
            "stripes_lt = my_tercile_data:STRIPES_LT")
    registry.clear()
    names._registered.cache_clear()
    try:
        results, out = tmp_path / "results", tmp_path / "out"
        assert main(["run", "--methods", "ce", "--dataset", "stripes_lt", "--if", "10", "--preset",
                     "smoke", "--results-dir", str(results), "--device", "cpu"]) == 0
        with open(next(results.glob("*/result.csv")), newline="") as f:
            row = next(csv.DictReader(f))
        assert row["mmf_convention"] == "terciles"
        assert (row["n_many"], row["n_medium"], row["n_few"]) == ("2", "2", "2")
        assert all(row[g] != "" for g in ("many", "medium", "few"))
        build(results, out)
        text = (out / "tables" / "many_medium_few.md").read_text()
        assert "terciles rule" in text and "many 2 classes, medium 2 classes, few 2 classes" in text
    finally:
        monkeypatch.undo()
        registry.clear()
        names._registered.cache_clear()
        sys.modules.pop("my_tercile_data", None)


# --- LaTeX ------------------------------------------------------------------------------

def test_latex_prints_comparison_signs_in_any_font_encoding():
    from ltbench.report.render import tex

    # in OT1, the default encoding, a bare ">" prints as an inverted question mark
    assert tex("> 100") == r"\textgreater{} 100" and tex("< 0.001") == r"\textless{} 0.001"
    assert tex("a | b") == r"a \textbar{} b"


@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="pdflatex not installed (apt-get install texlive-latex-base "
                           "texlive-latex-recommended)")
@pytest.mark.parametrize("width, document_class, extra", [
    (None, "{article}", ""),  # the default, --latex-width column
    ("page", "[twocolumn]{article}", ""),
    ("landscape", "{article}", "\\usepackage{rotating}\n"),
])
def test_every_latex_table_compiles(tmp_path, width, document_class, extra):
    """Each tables/*.tex, \\input into an article with the packages its header names: no
    error, no missing character, and no box wider than the article's column or page."""
    from test_report import write_bench
    from test_report_history import fake_predictions, write_predictions

    results, out = tmp_path / "results", tmp_path / "out"
    for seed in range(3):
        folder = write_run(results, seed=seed, top1=70.0 + seed, split_fingerprint=f"fp{seed % 2}")
        write_predictions(folder, *fake_predictions(10, 20, seed, 0.7))  # the calibration table
        write_run(results, method="ldam_drw", seed=seed, top1=77.0 + seed)
        write_run(results, method="focal", dataset="cifar100_lt", seed=seed, top1=40.0 + seed,
                  params={"lr": 0.1, "gamma": 1.0})
    write_run(results, method="cb_focal", seed=0, top1=74.5, preset="quick")
    write_run(results, seed=9, status="failed", error="CUDA out of memory: 50% & $5 #1 ~ ^_^")
    write_bench(results / "bench" / "feature_loss_memory.csv")
    build(results, out, *(["--latex-width", width] if width else []))
    tex_files = sorted((out / "tables").glob("*.tex"))
    assert {"main", "calibration", "provenance", "many_medium_few", "baseline"} <= {
        p.stem for p in tex_files}
    packages = set()
    for path in tex_files:
        packages |= set(re.findall(r"\\usepackage\{(\w+)\}", path.read_text()))
    assert packages <= {"booktabs", "graphicx"} | ({"rotating"} if extra else set()), packages
    document = tmp_path / "all_tables.tex"
    # no T1 font encoding: "> 100" must print right in the default OT1 too
    document.write_text("\\documentclass" + document_class + "\n"
                        "\\usepackage[utf8]{inputenc}\n\\usepackage{booktabs}\n"
                        "\\usepackage{graphicx}\n" + extra + "\\begin{document}\n"
                        + "".join(f"\\input{{{p.as_posix()}}}\n\\clearpage\n" for p in tex_files)
                        + "\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                           document.name], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    log = done.stdout[-3000:]
    assert done.returncode == 0, log
    assert (tmp_path / "all_tables.pdf").stat().st_size > 1000
    assert "Undefined control sequence" not in done.stdout
    log = (tmp_path / "all_tables.log").read_text()
    assert "Missing character" not in log
    overfull = [line for line in log.splitlines() if line.startswith("Overfull \\hbox")]
    assert not overfull, overfull


# --- which published figures a run is compared with ---------------------------------------

def test_a_custom_run_with_a_figures_protocol_is_compared_with_it(tmp_path):
    from ltbench.report.comparison import paper_comparison
    from ltbench.report.reference import load_published

    from test_report import _labelled

    results = tmp_path / "results"
    # Ren et al.'s Balanced Softmax on CIFAR-100-LT IF 100 as the paper preset gives it, and
    # the same run set (custom) to Cui et al.'s LDAM-DRW row's settings, and one that is not
    cao = {"drw_beta": 0.9999, "drw_start": 0.8, "lr": 0.1, "lr_factors": [0.01, 0.0001], "max_margin": 0.5,
           "milestones": [0.8, 0.9], "scale": 30.0, "warmup_epochs": 5, "weight_decay": 0.0002}
    write_run(results, method="ldam_drw", dataset="cifar100_lt", preset="custom", top1=41.0, top1_best=42.0,
              params=cao, per_class=False)
    write_run(results, method="ldam_drw", dataset="cifar10_lt", preset="custom", top1=70.0,
              params={**cao, "max_margin": 0.3}, per_class=False)
    write_run(results, method="ce", dataset="cifar10_lt", preset="quick", top1=60.0, epochs=12, per_class=False)
    data = paper_comparison(_labelled(results), load_published()).data
    matched = data[(data["method"] == "ldam_drw") & (data["status"] != "no run yet")]
    assert list(zip(matched["dataset"], matched["status"], matched["published_top1"])) == [
        ("cifar100_lt", "compared", 42.04)]
    assert matched["difference"].iloc[0] == pytest.approx(42.0 - 42.04)  # best test epoch, as Cao et al.'s code
    # a quick run has no figure's protocol: CE's figures only wait for a paper-protocol run
    assert set(data[data["method"] == "ce"]["status"]) == {"no run yet"}


def test_a_methods_published_figures_wait_for_a_paper_protocol_run(tmp_path):
    """A comparison of quick runs still lists each method's published figures, with no value
    of ours and the command that would give one; a paper-protocol run of a cell takes its
    figure out of that list and compares it."""
    from ltbench.report.comparison import paper_comparison
    from ltbench.report.reference import load_published

    from test_report import _labelled

    results = tmp_path / "results"
    for method in ("bbn", "ce"):
        write_run(results, method=method, dataset="tiny_lt", imbalance_factor=5, preset="quick", top1=60.0,
                  epochs=12, per_class=False)
    published = load_published()
    data = paper_comparison(_labelled(results), published).data
    waiting = data[data["status"] == "no run yet"]
    assert set(data["status"]) == {"no run yet"}
    bbn = waiting[waiting["method"] == "bbn"]
    assert len(bbn) == (published["method"] == "bbn").sum() and bbn["ours_mean"].isna().all()
    cell = one(bbn, dataset="cifar10_lt", imbalance_factor=100)
    assert cell["published_top1"] == 79.82 and cell["published_confirmed"]

    write_run(results, method="bbn", dataset="cifar10_lt", preset="paper", top1=79.0, top1_best=79.5,
              per_class=False)
    data = paper_comparison(_labelled(results), published).data
    bbn = data[data["method"] == "bbn"]
    ran = bbn[(bbn["dataset"] == "cifar10_lt") & (bbn["imbalance_factor"] == 100)]
    assert list(ran["status"]) != ["no run yet"] and not ran["status"].eq("no run yet").any()
    assert (bbn["status"] == "no run yet").sum() == len(waiting[waiting["method"] == "bbn"]) - 1

    section = paper_comparison(_labelled(results), published)
    table = next(t for t in section.tables if t.title.startswith("Published figures of these methods"))
    rows = {(r[1], r[2]): r for r in table.rows if "--methods bbn " in r[5]}
    assert ("CIFAR-10-LT", "100") not in rows
    assert rows[("CIFAR-100-LT", "100")][3] == "42.56"
    assert rows[("CIFAR-100-LT", "100")][5] == "`ltbench run --methods bbn --dataset cifar100_lt --if 100`"
    # BBN's iNaturalist 2017 figures are kept for the record: no command builds that dataset
    inat2017 = [r for r in table.rows if r[1] == "inat2017"]
    assert inat2017 and all(r[5] == "(a dataset ltbench does not build)" for r in inat2017)


def test_published_rows_name_their_code_base_and_data_split_and_epoch_rule():
    from ltbench.report.reference import load_published

    published = load_published()
    cui = published[published["code"].str.startswith("Cui et al.'s TensorFlow")]
    assert len(cui) and cui["mismatch"].str.contains("code: Cui et al.'s TensorFlow").all()
    on_cifar = cui["dataset"].str.startswith("cifar")
    assert cui[on_cifar]["mismatch"].str.contains("own long-tailed subsample").all()
    assert not cui[~on_cifar]["mismatch"].str.contains("subsample").any()  # iNaturalist's own split
    bbn = published[published["source"].str.startswith("Zhou et al. 2020 (BBN")]
    reruns = bbn[bbn["method"] != "bbn"]
    assert len(reruns) == 8 and set(bbn["selection"]) == {"best_on_test"}


def test_bbn_rows_are_the_accuracies_of_its_printed_errors_and_the_paper_preset_matches_them():
    """Zhou et al. print top-1 error: each row is 100 - the error its source names, and a
    paper-preset run has the protocol of the CIFAR rows and of the 2x iNaturalist 2018 row."""
    import json

    from ltbench.report.reference import has_protocol, load_published, lookup
    from ltbench.sweep import resolve

    published = load_published()
    bbn = published[published["method"] == "bbn"]
    expected = {("cifar10_lt", 100): 20.18, ("cifar10_lt", 50): 17.82, ("cifar10_lt", 10): 11.68,
                ("cifar100_lt", 100): 57.44, ("cifar100_lt", 50): 52.98, ("cifar100_lt", 10): 40.88}
    for (dataset, factor), error in expected.items():
        row = bbn[(bbn["dataset"] == dataset) & (bbn["imbalance_factor"] == factor)].iloc[0]
        assert f"(error {error:.2f})" in row["source"] and row["top1"] == pytest.approx(100 - error)
        assert row["confirmed"] and "Table 1: row 'Our BBN'" in row["source"]
    inat = bbn[bbn["dataset"] == "inat2018"].set_index("epochs")
    assert (inat.loc["180", "top1"], inat.loc["90", "top1"]) == (69.62, 66.29)  # 2x, 1x of Table 2
    for dataset, factor in [("cifar10_lt", 100), ("cifar100_lt", 10), ("inat2018", 500)]:
        spec = resolve("bbn", dataset, factor, 0, "paper")
        run = {"backbone": spec.backbone, "epochs": spec.epochs, "profile": spec.profile,
               "params_key": json.dumps(spec.flat_params())}
        row = lookup(published, "bbn", dataset, factor)
        assert row["confirmed"] and has_protocol(run, row), (dataset, row["source"])
