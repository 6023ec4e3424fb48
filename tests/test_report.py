"""`ltbench report` on hand-made result folders: every number in the tables, the figures,
filters, grouping, and what happens to failed, partial and corrupt inputs."""

import argparse
import base64
import contextlib
import csv
import hashlib
import io
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from ltbench.errors import UserError
from ltbench.report import cli
from ltbench.report.aggregate import aggregate
from ltbench.report.comparison import paper_comparison
from ltbench.report.formats import fmt_device
from ltbench.report.labels import filter_runs, label_runs
from ltbench.report.load import load_results
from ltbench.results_schema import RESULT_COLUMNS
from ltbench.report.reference import load_published


REPO = Path(__file__).resolve().parents[1]
# n_max, classes, test images per class
DATASETS = {"cifar10_lt": (5000, 10, 1000), "cifar100_lt": (500, 100, 100),
            "imagenet_lt": (1280, 1000, 50), "tiny_lt": (100, 5, 20)}


def lt_counts(dataset: str, factor: float) -> list[int]:
    """Training images per class, as LDAM-DRW builds CIFAR-LT."""
    n_max, n_classes, _ = DATASETS[dataset]
    return [int(n_max * (1 / factor) ** (i / (n_classes - 1))) for i in range(n_classes)]


def group_sizes(counts: list[int]) -> tuple[int, int, int]:
    return (sum(n > 100 for n in counts), sum(20 <= n <= 100 for n in counts),
            sum(n < 20 for n in counts))


def _title(method: str) -> str:
    """The display name the runner records in a row (a method no longer registered: none)."""
    from ltbench import registry

    return registry.methods()[method].title() if method in registry.methods() else ""


def write_run(root: Path, *, method="ce", dataset="cifar10_lt", imbalance_factor=100, seed=0,
              top1=70.0, many=None, medium=None, few=None, top1_best=None, preset="paper",
              params=None, status="done", error="", per_class=True, run_id=None,
              **fields) -> Path:
    """Write one run folder as the store does; accuracies default to plausible values,
    and a group with no classes gets an empty cell, as the trainer writes it."""
    params = {"lr": 0.1} if params is None else params
    counts = lt_counts(dataset, imbalance_factor)
    sizes = group_sizes(counts)
    given = {"many": many, "medium": medium, "few": few}
    defaults = {"many": top1 + 10, "medium": top1 - 10, "few": top1 - 30}
    row = {column: "" for column in RESULT_COLUMNS}
    row.update(
        method=method, method_title=_title(method), dataset=dataset, imbalance_factor=imbalance_factor, profile="exp",
        backbone="resnet32_cifar", seed=seed, epochs=200, batch_size=128, preset=preset,
        params=json.dumps(params), mmf_convention="cb",
        n_train=sum(counts), n_classes=len(counts), n_many=sizes[0], n_medium=sizes[1],
        n_few=sizes[2], wall_s=600.0, images_per_s=5000.0, peak_mem_mb=1500.0,
        device="cuda:NVIDIA H100", torch="2.5.1", ltbench_version="0.1.0", git_sha="abc1234",
        started_at="2025-01-01T00:00:00", finished_at="2025-01-01T00:10:00", status=status,
        error=error)
    if status == "done":
        row.update(top1=top1, top1_best=top1 + 0.5 if top1_best is None else top1_best,
                   top1_best_epoch=190)
        for group, size in zip(given, sizes):
            value = given[group] if given[group] is not None else defaults[group]
            row[group] = value if size else ""
    row.update(fields)
    spec = {k: row[k] for k in ["method", "dataset", "imbalance_factor", "seed", "epochs",
                                "batch_size", "preset", "params", "backbone", "profile"]}
    digest = hashlib.sha1(json.dumps({**fields, **spec}, sort_keys=True).encode()).hexdigest()
    row["run_id"] = run_id or digest[:12]
    folder = root / row["run_id"]
    folder.mkdir(parents=True)
    with open(folder / "result.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerow(row)
    (folder / "spec.json").write_text(json.dumps(spec))
    if per_class and status == "done":
        total = DATASETS[dataset][2]
        with open(folder / "per_class.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class", "n_train", "correct", "total"])
            for c, n in enumerate(counts):
                accuracy = max(0.0, min(1.0, (top1 + 25 - 50 * c / len(counts) + seed) / 100))
                writer.writerow([c, n, round(accuracy * total), total])
    return folder


def write_bench(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["loss", "batch_size", "peak_mem_mb", "step_ms", "device"])
        for batch in [64, 128, 256, 512, 1024]:
            device = "cuda:NVIDIA H100"
            writer.writerow(["sc", batch, 200 + batch ** 2 / 500, 2 + batch / 100, device])
            writer.writerow(["psc", batch, 200 + batch / 2, 2 + batch / 200, device])


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def report(results: Path, out: Path, *argv: str) -> int:
    return cli.run(parse("--results-dir", str(results), "--out", str(out), *argv))


def build(results: Path, out: Path, *argv: str) -> str:
    """Build a report that must succeed; what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = report(results, out, *argv)
    assert code == 0
    return printed.getvalue()


def refused(results: Path, out: Path, capsys, *argv: str) -> str:
    """Run `ltbench report` that must be refused: exit 2, nothing on stdout, nothing written,
    and on stderr the one error line (and an optional hint line) every command uses."""
    from ltbench.cli import main

    capsys.readouterr()
    code = main(["report", "--results-dir", str(results), "--out", str(out), *argv])
    printed = capsys.readouterr()
    lines = printed.err.splitlines()
    assert code == 2 and printed.out == "", printed
    assert lines[0].startswith("ltbench: error: ") and len(lines) <= 2, lines
    assert all(line.startswith("  hint: ") for line in lines[1:]), lines
    assert not out.exists()
    return printed.err


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def one(frame: pd.DataFrame, **where) -> pd.Series:
    rows = frame
    for column, value in where.items():
        rows = rows[rows[column] == value]
    assert len(rows) == 1, f"expected one row for {where}, found {len(rows)}"
    return rows.iloc[0]


def markdown_rows(text: str) -> dict[str, list[str]]:
    """First cell -> the other cells, for every row of every Markdown table in `text`."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| Method"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows.setdefault(cells[0], cells[1:])
    return rows


# --- the full report on a small sweep ---------------------------------------------------

CE_C10_100 = [70.0, 71.0, 73.0]  # three seeds
FOCAL_C10_100 = [72.5]  # one seed: no +-
CE_C10_10 = [86.0, 87.0]
LDAM_C10_100 = [76.0, 77.0]
LDAM_C100_100 = dict(top1=[41.0, 43.0], many=[60.0, 61.0], medium=[40.0, 42.0], few=[15.0, 18.0])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Results of a small sweep, plus one failed, one partial and two unusable files."""
    root = tmp_path_factory.mktemp("sweep")
    results = root / "results"
    for seed, top1 in enumerate(CE_C10_100):
        write_run(results, seed=seed, top1=top1, wall_s=600.0 + 60 * seed,
                  images_per_s=5000.0 + 100 * seed, peak_mem_mb=1500.0 + 10 * seed)
    for seed, top1 in enumerate(FOCAL_C10_100):
        write_run(results, method="focal", seed=seed, top1=top1, params={"lr": 0.1, "gamma": 1.0})
    for seed, top1 in enumerate(CE_C10_10):
        write_run(results, imbalance_factor=10, seed=seed, top1=top1)
    for seed, top1 in enumerate(LDAM_C10_100):
        write_run(results, method="ldam_drw", seed=seed, top1=top1, many=90.0, medium=50.0 + seed)
    for seed in range(2):
        write_run(results, method="ldam_drw", dataset="cifar100_lt", seed=seed,
                  **{k: v[seed] for k, v in LDAM_C100_100.items()})
    write_run(results, seed=3, top1=72.0, device="cpu", wall_s=7200.0, images_per_s=300.0,
              peak_mem_mb=900.0)
    write_run(results, seed=7, status="failed", error="CUDA out of memory")
    partial = results / "0123partial"
    partial.mkdir()
    (partial / "spec.json").write_text(json.dumps({"method": "ce", "dataset": "cifar10_lt",
                                                   "imbalance_factor": 100}))
    (partial / "checkpoint.pt").write_bytes(b"\x80\x02}q\x00.")
    corrupt = results / "badrun"
    corrupt.mkdir()
    (corrupt / "result.csv").write_bytes(b"\xff\xfe\x00garbage\x00\n\x01,\x02")
    (results / "notes.csv").write_text("who,what\nme,a note\n")
    write_bench(results / "bench" / "feature_loss_memory.csv")
    (results / "bench" / "throughput.csv").write_text("method,batch_size,images_per_s\n"
                                                      "ce,128,9000\n")
    (results / "README.md").write_text("what lands here\n")
    out = root / "reports"
    return results, out


@pytest.fixture(scope="module")
def built(sweep):
    """The report of the sweep, built once: (exit code, out dir, what it printed)."""
    results, out = sweep
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = report(results, out)
    return code, out, printed.getvalue()


def test_report_exits_zero_and_says_where(built):
    code, out, printed = built
    assert code == 0
    assert str(out / "index.html") in printed.replace("\n", "")
    assert (out / "index.html").is_file() and (out / "report.md").is_file()
    for name in ["main", "intervals", "baseline", "ranking", "paper_comparison",
                 "many_medium_few", "cost"]:
        for suffix in ["md", "tex", "csv"]:
            assert (out / "tables" / f"{name}.{suffix}").is_file(), f"{name}.{suffix}"


def test_main_table_means_stds_and_seed_counts(built):
    _, out, _ = built
    data = read_csv(out / "tables" / "main.csv")
    # Seed 3 of ce ran on the CPU: still the same spec, so a fourth seed.
    ce = CE_C10_100 + [72.0]
    expected = {("ce", 100): ce, ("focal", 100): FOCAL_C10_100, ("ce", 10): CE_C10_10,
                ("ldam_drw", 100): LDAM_C10_100}
    for (method, factor), values in expected.items():
        row = one(data, label=method, dataset="cifar10_lt", imbalance_factor=factor)
        assert row["seeds"] == len(values)
        assert row["top1_mean"] == pytest.approx(statistics.mean(values))
        if len(values) > 1:
            assert row["top1_std"] == pytest.approx(statistics.stdev(values))
        else:
            assert pd.isna(row["top1_std"])
    c100 = one(data, label="ldam_drw", dataset="cifar100_lt")
    assert c100["top1_mean"] == pytest.approx(42.0)
    assert c100["top1_std"] == pytest.approx(statistics.stdev([41.0, 43.0]))

    rows = markdown_rows((out / "tables" / "main.md").read_text())
    # Columns: CIFAR-10-LT IF 100, IF 10, CIFAR-100-LT IF 100.
    # methods by their display names, from the registry; fewer than 3 seeds in italic, a
    # single seed without +-, a cell never run blank
    assert rows["CE"] == ["71.50 ± 1.29 (n=4)", "*86.50 ± 0.71 (n=2)*", ""]
    assert rows["Focal"] == ["*72.50 (n=1)*", "", ""]
    assert rows["LDAM-DRW"] == ["*76.50 ± 0.71 (n=2)*", "", "*42.00 ± 1.41 (n=2)*"]
    header = (out / "tables" / "main.md").read_text().splitlines()[2]
    assert header == ("| Method | CIFAR-10-LT IF 100 | CIFAR-10-LT IF 10 | "
                      "CIFAR-100-LT IF 100 |")


def test_no_bold_where_seeds_are_too_few_to_tell(built):
    # 76.50 (n=2) over 71.50 (n=4) and 72.50 (n=1): only CE has 3 seeds, nothing is bold
    _, out, _ = built
    data = read_csv(out / "tables" / "main.csv")
    assert not data["best_in_column"].any()
    assert list(data.loc[data["top1_few_seeds"], "label"]) == ["ce", "focal", "ldam_drw",
                                                                "ldam_drw"]
    latex = (out / "tables" / "main.tex").read_text()
    assert r"\textit{76.50 $\pm$ 0.71 {\scriptsize (n=2)}}" in latex and r"\textbf" not in latex
    page = (out / "index.html").read_text()
    assert '<em>76.50 ± 0.71 <span class="n">(n=2)</span></em>' in page
    main = (out / "tables" / "main.md").read_text()
    assert "none in a column with fewer than two" in main
    assert "Italic: fewer than 3 seeds" in main


def test_latex_is_booktabs_and_escaped(built):
    _, out, _ = built
    latex = (out / "tables" / "main.tex").read_text()
    for command in [r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lrrr}",
                    r"\multicolumn{2}{c}{CIFAR-10-LT}", r"\cmidrule(lr){2-3}"]:
        assert command in latex
    assert r"LDAM-DRW & \textit{" in latex
    assert "_drw" not in latex.replace(r"\_drw", "")
    mmf = (out / "tables" / "many_medium_few.tex").read_text()
    assert mmf.count(r"\begin{table}") == 1
    assert r"\multicolumn{3}{c}{CIFAR-10-LT, IF 100}" in mmf and "---" in mmf


def test_published_figures_and_differences(built):
    _, out, _ = built
    data = read_csv(out / "tables" / "paper_comparison.csv")
    ce_mean = statistics.mean(CE_C10_100 + [72.0])
    ce = data[(data["label"] == "ce") & (data["imbalance_factor"] == 100)]
    # Cui et al.'s Table 2 (the CE figure later papers re-print; their TensorFlow code on their
    # own subsample: shown, not compared), Menon et al.'s own ERM run, and Ren et al.'s Softmax
    # under their 13k-iteration protocol (shown, not compared)
    assert list(ce["published_top1"]) == [70.36, 72.84, 77.4]
    assert list(ce["status"]) == ["different protocol", "compared", "different protocol"]
    assert all(ce["published_confirmed"]) and set(ce["selection"]) == {"unknown"}
    cui = one(ce, published_top1=70.36)
    assert cui["our_column"] == "top1" and pd.isna(cui["difference"])
    assert "code: Cui et al.'s TensorFlow" in cui["differs"] and "own long-tailed subsample" in cui["differs"]
    assert cui["source"].startswith("Cui et al. 2019 (CVPR, arXiv:1901.05555v1), Table 2: row 'Softmax'")
    assert pd.isna(one(ce, published_top1=77.4)["difference"])
    # LDAM-DRW's code reports the best test epoch: compared with our top1_best
    ldam = one(data, label="ldam_drw", dataset="cifar10_lt", imbalance_factor=100)
    assert (ldam["published_top1"], ldam["selection"], ldam["our_column"]) == (77.03, "best_on_test", "top1_best")
    assert ldam["ours_mean"] == pytest.approx(statistics.mean(LDAM_C10_100) + 0.5)
    assert ldam["difference"] == pytest.approx(77.0 - 77.03)
    ldam100 = one(data, label="ldam_drw", dataset="cifar100_lt")
    assert ldam100["difference"] == pytest.approx(42.5 - 42.04)
    ce10 = one(data, label="ce", imbalance_factor=10, published_top1=86.39)
    assert ce10["published_top1"] == 86.39 and ce10["status"] == "different protocol"
    # Cui et al.'s focal loss is the sigmoid one, ltbench's the softmax one: not compared
    focal = one(data, label="focal")
    assert focal["status"] == "different protocol" and "loss: sigmoid focal" in focal["differs"]
    # no leads for these methods; their figures in cells nobody ran wait for a run
    assert set(data["status"]) == {"compared", "different protocol", "no run yet"}
    waiting = data[data["status"] == "no run yet"]
    assert set(waiting["method"]) <= {"ce", "ldam_drw", "focal"} and waiting["ours_mean"].isna().all()
    assert not len(waiting.merge(data[data["status"] != "no run yet"][["method", "dataset", "imbalance_factor"]]))

    text = (out / "tables" / "paper_comparison.md").read_text()
    lines = {tuple(c.strip() for c in line.strip("|").split("|")) for line in text.splitlines()
             if line.startswith("| ") and "Method" not in line}
    # Method, Dataset, IF, Seeds, Epoch rule, Ours, Published, difference, Source
    assert lines >= {
        ("ce", "CIFAR-10-LT", "100", "4", "not stated (ours: last epoch)", "71.50 ± 1.29", "72.84",
         "−1.34", "[2]"),
        ("ldam_drw", "CIFAR-10-LT", "100", "2", "best test epoch", "77.00 ± 0.71", "77.03", "−0.03",
         "[4]"),
        ("ldam_drw", "CIFAR-100-LT", "100", "2", "best test epoch", "42.50 ± 1.41", "42.04", "+0.46",
         "[4]"),
        ("ce", "CIFAR-10-LT", "100", "4", "71.50 ± 1.29", "77.40", "epochs 200 vs 13k iterations", "[3]")}
    assert "[1] Cui et al. 2019 (CVPR, arXiv:1901.05555v1), Table 2" in text
    assert "[4] Cao et al. 2019 (NeurIPS, arXiv:1906.07413v2), Table 2" in text
    assert "Confirmed figures under another protocol: shown, not compared" in text
    assert "Unconfirmed leads" not in text


def test_other_protocols_are_not_compared(tmp_path):
    results = tmp_path / "results"
    write_run(results, seed=0, top1=70.0, per_class=False)
    write_run(results, seed=0, top1=60.0, preset="quick", epochs=20, per_class=False)
    assert report(results, tmp_path / "out") == 0
    data = read_csv(tmp_path / "out" / "tables" / "paper_comparison.csv")
    assert set(data[data["status"] != "no run yet"]["label"]) == {"ce (preset=paper)"}
    main = read_csv(tmp_path / "out" / "tables" / "main.csv")
    assert sorted(main["label"]) == ["ce (preset=paper)", "ce (preset=quick)"]
    assert "1 result(s) under other protocols" in (tmp_path / "out" / "report.md").read_text()


def test_many_medium_few_with_an_empty_group(built):
    _, out, _ = built
    data = read_csv(out / "tables" / "many_medium_few.csv")
    ldam = one(data, label="ldam_drw", dataset="cifar10_lt", imbalance_factor=100)
    assert (ldam["n_many"], ldam["n_medium"], ldam["n_few"]) == (8, 2, 0)
    assert ldam["many_mean"] == 90.0 and ldam["many_std"] == 0.0
    assert ldam["medium_mean"] == 50.5
    assert ldam["medium_std"] == pytest.approx(statistics.stdev([50.0, 51.0]))
    assert pd.isna(ldam["few_mean"]) and pd.isna(ldam["few_std"]) and ldam["few_n"] == 0
    assert ldam["medium_n"] == 2 and ldam["medium_few_seeds"]
    c100 = one(data, label="ldam_drw", dataset="cifar100_lt")
    assert (c100["n_many"], c100["n_medium"], c100["n_few"]) == (35, 35, 30)
    for group in ["many", "medium", "few", "top1"]:
        assert c100[f"{group}_mean"] == pytest.approx(statistics.mean(LDAM_C100_100[group]))
        assert c100[f"{group}_std"] == pytest.approx(statistics.stdev(LDAM_C100_100[group]))

    text = (out / "tables" / "many_medium_few.md").read_text()
    # one paper-style table: a column group per (dataset, IF), Many / Med. / Few under each
    assert text.count("### ") == 1
    assert ("| Method | CIFAR-10-LT, IF 100 Many | CIFAR-10-LT, IF 100 Med. | CIFAR-10-LT, IF 100 "
            "Few | CIFAR-10-LT, IF 10 Many |") in text
    rows = markdown_rows(text)
    # An empty group is a dash, a cell never run is blank; italic: fewer than 3 seeds.
    assert rows["LDAM-DRW"] == ["*90.00 ± 0.00*", "*50.50 ± 0.71*", "—", "", "", "",
                                "*60.50 ± 0.71*", "*41.00 ± 1.41*", "*16.50 ± 2.12*"]
    assert rows["Focal"] == ["*82.50*", "*62.50*", "—", "", "", "", "", "", ""]
    assert rows["CE"] == ["81.50 ± 1.29", "61.50 ± 1.29", "—", "*96.50 ± 0.71*", "—", "—",
                          "", "", ""]
    assert ("Classes per group: CIFAR-10-LT IF 100: many 8 classes, medium 2 classes, few 0 "
            "classes; IF 10: many 10 classes, medium 0 classes, few 0 classes; CIFAR-100-LT IF 100: "
            "many 35 classes, medium 35 classes, few 30 classes.") in text
    assert "cb rule: Many, more than 100 training images; Medium, 20 to 100; Few, fewer than 20" in text
    assert "—: the group has no classes at this imbalance factor; blank: not run." in text


def test_one_class_is_one_class(tmp_path):
    results = tmp_path / "results"
    write_run(results, imbalance_factor=50, top1=74.0, per_class=False)  # 9 many, 1 medium
    assert report(results, tmp_path / "out") == 0
    text = (tmp_path / "out" / "tables" / "many_medium_few.md").read_text()
    assert "many 9 classes, medium 1 class, few 0 classes" in text


def test_cost_table(built):
    _, out, _ = built
    data = read_csv(out / "tables" / "cost.csv")
    gpu = one(data, label="ce", dataset="cifar10_lt", imbalance_factor=100,
              device="cuda:NVIDIA H100")  # the CSV keeps the recorded value
    assert gpu["runs"] == 3
    assert gpu["wall_s_mean"] == pytest.approx(660.0) and gpu["own_s_total"] == 1980.0
    assert gpu["stage1_s_mean"] == pytest.approx(660.0) and pd.isna(gpu["stage2_s_mean"])
    assert gpu["stage1_images_per_s_mean"] == pytest.approx(5100.0)
    assert gpu["peak_mem_mb_max"] == 1520.0
    cpu = one(data, label="ce", dataset="cifar10_lt", imbalance_factor=100, device="cpu")
    assert cpu["runs"] == 1 and cpu["wall_s_mean"] == 7200.0
    rows = {tuple(c.strip() for c in line.strip("|").split("|"))
            for line in (out / "tables" / "cost.md").read_text().splitlines()
            if line.startswith("| CE ")}
    assert ("CE", "CIFAR-10-LT", "100", "NVIDIA H100", "3", "11.0 min", "5100", "", "",
            "33.0 min", "1520") in rows
    assert ("CE", "CIFAR-10-LT", "100", "cpu", "1", "2.0 h", "300", "", "", "2.0 h",
            "900") in rows


def test_cost_of_two_stages_apart_and_each_run_counted_once(tmp_path):
    """cRT starts from CE's run of its seed: 600 s at 5000 images/s, then 100 s of its own
    at 2000 images/s, recorded as one row of 700 s at the mixed rate."""
    results = tmp_path / "results"
    for seed in range(3):
        ce = write_run(results, seed=seed, top1=70.0, wall_s=600.0, images_per_s=5000.0,
                       per_class=False)
        write_run(results, method="crt", seed=seed, top1=72.0, wall_s=700.0,
                  images_per_s=(5000.0 * 600 + 2000.0 * 100) / 700, per_class=False,
                  stage1_run_id=ce.name, stage1_reused=True, stage1_wall_s=600.0)
    out = tmp_path / "out"
    build(results, out)
    data = read_csv(out / "tables" / "cost.csv")
    crt = one(data, label="crt")
    assert (crt["stage1_s_mean"], crt["stage2_s_mean"]) == (600.0, pytest.approx(100.0))
    assert crt["stage1_images_per_s_mean"] == 5000.0
    assert crt["stage2_images_per_s_mean"] == pytest.approx(2000.0)
    assert crt["own_s_total"] == pytest.approx(300.0) and crt["wall_s_mean"] == 700.0
    assert len(crt["stage1_run_ids"].split()) == 3
    text = (out / "tables" / "cost.md").read_text()
    # 3 x 600 s of CE and 3 x 100 s of cRT's own: not 3 x 700 s more
    assert "Total: 35.0 min of training over 6 runs, each counted once." in text
    # without CE's rows, its runs still count, once, as the stage 1 cRT started from
    build(results, out, "--methods", "crt")
    text = (out / "tables" / "cost.md").read_text()
    assert ("Total: 35.0 min of training over 6 runs, each counted once (3 stage-1 runs that "
            "two-stage rows start from but the table does not show: 30.0 min).") in text


def test_devices_read_as_recorded():
    # environment.device_label writes "cuda:<model>" and "cpu:<n> cores"
    assert fmt_device("cuda:NVIDIA H200") == "NVIDIA H200"
    assert fmt_device("cpu:2 cores") == "cpu (2 cores)"
    assert fmt_device("cpu") == "cpu" and fmt_device("cuda") == "GPU"


def test_left_out_is_reported_not_averaged(built):
    _, out, printed = built
    summary = "Left out 3 runs (1 failed, 1 partial, 1 corrupt) and skipped 1 file."
    assert summary in printed.replace("\n", " ")
    markdown = (out / "report.md").read_text()
    assert "## Left out" in markdown and summary in markdown
    assert "CUDA out of memory" in markdown and "notes.csv" in markdown
    assert "still running or interrupted" in markdown and "unreadable CSV" in markdown
    assert "Left out" in (out / "index.html").read_text()
    left = read_csv(out / "tables" / "left_out.csv")
    # Another benchmark's output is listed as unused, but is no problem worth counting.
    assert sorted(left["kind"]) == ["corrupt", "failed", "partial", "skipped file",
                                    "unused file"]
    assert "throughput.csv" in one(left, kind="unused file")["path"]
    # The failed seed 7 of ce is not in the mean: four seeds, as in the main table test.
    main = read_csv(out / "tables" / "main.csv")
    assert one(main, label="ce", imbalance_factor=100)["seeds"] == 4


def test_figures_render(built):
    _, out, _ = built
    # one cell where every method ran: no Friedman test, so no critical-difference diagram
    names = ["accuracy_vs_imbalance", "many_medium_few", "per_class_cifar10_lt_if100",
             "per_class_cifar10_lt_if10", "per_class_cifar100_lt_if100", "feature_loss_memory"]
    for name in names:
        png, pdf = out / "figures" / f"{name}.png", out / "figures" / f"{name}.pdf"
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            width, height = image.size
            assert image.format == "PNG"
        assert 500 <= width <= 4000 and 300 <= height <= 4000, (name, width, height)
        assert pdf.read_bytes().startswith(b"%PDF")
    assert sorted(p.stem for p in (out / "figures").glob("*.png")) == sorted(names)


def test_html_page_is_self_contained(built):
    _, out, _ = built
    page = (out / "index.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == len(list((out / "figures").glob("*.png")))
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<link" not in page and "<script" not in page
    for heading in ["Main table", "Confidence intervals", "Compared with CE",
                    "Ranks across settings", "Compared with published results",
                    "Many / medium / few", "Per-class accuracy", "Cost", "Feature-loss memory",
                    "Left out"]:
        assert f"<h2>{heading}</h2>" in page


# --- labelling and grouping -------------------------------------------------------------

def _labelled(results: Path, group_by=()) -> pd.DataFrame:
    runs = label_runs(load_results(results).runs, group_by)
    return aggregate(runs)


def test_specs_that_share_a_cell_are_told_apart(tmp_path):
    results = tmp_path / "results"
    for seed, (low, high) in enumerate([(44.0, 40.0), (45.0, 41.0)]):
        write_run(results, method="psc_hybrid", dataset="cifar100_lt", seed=seed, top1=low,
                  params={"lr": 0.5, "temperature": 0.1})
        write_run(results, method="psc_hybrid", dataset="cifar100_lt", seed=seed, top1=high,
                  params={"lr": 0.5, "temperature": 1.0})
    write_run(results, method="psc_hybrid", top1=78.0, params={"lr": 0.5, "temperature": 1.0})
    agg = _labelled(results)
    rows = {(r.label, r.dataset): (r.seeds, r.top1_mean) for r in agg.itertuples()}
    assert rows == {("psc_hybrid (temperature=0.1)", "cifar100_lt"): (2, 44.5),
                    ("psc_hybrid (temperature=1)", "cifar100_lt"): (2, 40.5),
                    ("psc_hybrid (temperature=1)", "cifar10_lt"): (1, 78.0)}


def test_specs_in_different_cells_share_a_row(tmp_path):
    # The paper's own protocol: temperature 1.0 on CIFAR-10, 0.1 on CIFAR-100.
    results = tmp_path / "results"
    write_run(results, method="psc_hybrid", top1=78.0, params={"temperature": 1.0})
    write_run(results, method="psc_hybrid", dataset="cifar100_lt", top1=44.0,
              params={"temperature": 0.1})
    assert set(_labelled(results)["label"]) == {"psc_hybrid"}
    assert set(_labelled(results, ["temperature"])["label"]) == {
        "psc_hybrid (temperature=1)", "psc_hybrid (temperature=0.1)"}


def test_settings_outside_params_also_separate(tmp_path):
    results = tmp_path / "results"
    write_run(results, top1=70.0, epochs=200)
    write_run(results, top1=60.0, epochs=100)
    write_run(results, top1=61.0, epochs=100, seed=1)
    agg = _labelled(results)
    assert {(r.label, r.seeds, r.top1_mean) for r in agg.itertuples()} == {
        ("ce (epochs=200)", 1, 70.0), ("ce (epochs=100)", 2, 60.5)}


def test_a_custom_spec_names_what_it_changed(tmp_path):
    results = tmp_path / "results"
    quick = {"lr": 0.125, "alpha_schedule": "parabolic", "loader": "device"}
    write_run(results, method="sc_hybrid", preset="quick", epochs=12, top1=67.0, params=quick)
    write_run(results, method="sc_hybrid", preset="custom", epochs=12, top1=76.0,
              params={**quick, "alpha_schedule": "classifier_only"})
    write_run(results, method="sc_hybrid", preset="paper", top1=81.0, params={**quick, "lr": 0.5})
    agg = _labelled(results)
    assert {(r.label, r.top1_mean) for r in agg.itertuples()} == {
        ("sc_hybrid (preset=quick)", 67.0), ("sc_hybrid (preset=paper)", 81.0),
        # the closest named spec is the quick one: one setting apart, where paper is three
        ("sc_hybrid (preset=custom, alpha_schedule=classifier_only)", 76.0)}


def test_group_by_on_the_command_line(tmp_path):
    results = tmp_path / "results"
    for temperature, top1 in [(0.1, 44.0), (0.2, 43.0)]:
        write_run(results, method="psc_hybrid", dataset="cifar100_lt", top1=top1,
                  params={"lr": 0.5, "temperature": temperature}, per_class=False)
    write_run(results, method="ce", dataset="cifar100_lt", top1=38.0, per_class=False)
    out = tmp_path / "out"
    assert report(results, out, "--group-by", "temperature") == 0
    main = read_csv(out / "tables" / "main.csv")
    assert list(main["label"]) == ["ce", "psc_hybrid (temperature=0.1)",
                                   "psc_hybrid (temperature=0.2)"]
    assert list(main["top1_mean"]) == [38.0, 44.0, 43.0]


def test_a_different_head_class_size_is_a_different_spec(tmp_path):
    # n_max is in the spec but not in result.csv; the training-set size tells them apart.
    results = tmp_path / "results"
    write_run(results, top1=70.0)
    write_run(results, top1=50.0, n_train=1240)
    agg = _labelled(results)
    assert {(r.label, r.top1_mean) for r in agg.itertuples()} == {
        ("ce (n_train=12406)", 70.0), ("ce (n_train=1240)", 50.0)}


def test_key_order_in_params_does_not_split_a_spec(tmp_path):
    results = tmp_path / "results"
    write_run(results, seed=0, top1=70.0, params={"lr": 0.1, "wd": 2e-4})
    write_run(results, seed=1, top1=72.0, params={"wd": 2e-4, "lr": 0.1})
    agg = _labelled(results)
    assert len(agg) == 1 and agg.iloc[0]["seeds"] == 2 and agg.iloc[0]["top1_mean"] == 71.0


def test_natural_distributions_match_the_published_figure(tmp_path):
    # ImageNet-LT's figures carry no imbalance factor: they match whatever the run records.
    results = tmp_path / "results"
    for seed, top1 in enumerate([49.0, 50.0]):
        write_run(results, method="crt", dataset="imagenet_lt", imbalance_factor=256,
                  seed=seed, top1=top1, per_class=False, backbone="resnext50_32x4d", epochs=90)
        write_run(results, method="ce", dataset="imagenet_lt", imbalance_factor=256,
                  seed=seed, top1=top1 - 5, per_class=False, backbone="resnext50_32x4d", epochs=90)
    agg = _labelled(results)
    data = paper_comparison(agg, load_published()).data
    # decoupling's ImageNet-LT figures were seen only in its README: leads, never compared
    row = one(data, label="crt")
    assert row["published_top1"] == 49.6 and row["status"] == "unconfirmed lead"
    assert pd.isna(row["difference"]) and not row["published_confirmed"]
    ce = data[data["label"] == "ce"].set_index("published_top1")
    assert ce.loc[44.4, "status"] == "unconfirmed lead"
    # Menon et al.'s ERM is confirmed but trained a ResNet-50
    assert ce.loc[46.89, "status"] == "different protocol"
    assert "backbone resnext50_32x4d vs resnet50" in ce.loc[46.89, "differs"]


def test_unknown_names_are_shown_after_known_ones(tmp_path):
    results = tmp_path / "results"
    write_run(results, method="my_loss", dataset="tiny_lt", imbalance_factor=5, top1=50.0,
              per_class=False)
    write_run(results, method="ce", dataset="tiny_lt", imbalance_factor=5, top1=40.0,
              per_class=False)
    write_run(results, method="ce", top1=70.0, per_class=False)
    out = tmp_path / "out"
    assert report(results, out) == 0
    text = (out / "tables" / "main.md").read_text()
    assert "| Method | CIFAR-10-LT IF 100 | tiny_lt IF 5 |" in text
    rows = markdown_rows(text)
    assert list(rows) == ["CE", "my_loss"]
    assert rows["my_loss"] == ["", "*50.00*"]  # one seed in every cell: said once, in the caption
    assert "1 seed in every cell" in text
    assert not read_csv(out / "tables" / "paper_comparison.csv")["label"].eq("my_loss").any()


def test_group_by_a_setting_no_run_has_is_refused(tmp_path, capsys):
    results = tmp_path / "results"
    write_run(results, top1=70.0, params={"lr": 0.1, "temperature": 0.1}, per_class=False)
    error = refused(results, tmp_path / "out", capsys, "--group-by", "temprature")
    assert ("--group-by temprature: no selected run has this setting; did you mean "
            "'temperature'?" in error)
    assert "epochs, batch_size" in error and "params: lr, temperature" in error
    build(results, tmp_path / "out", "--group-by", "temperature")
    assert list(read_csv(tmp_path / "out" / "tables" / "main.csv")["label"]) == [
        "ce (temperature=0.1)"]


def test_an_unknown_baseline_is_refused_naming_the_rows(tmp_path, capsys):
    results = tmp_path / "results"
    for method in ("ce", "focal"):
        write_run(results, method=method, top1=70.0, per_class=False)
    error = refused(results, tmp_path / "out", capsys, "--baseline", "nosuch")
    assert "--baseline nosuch: no selected finished run is this method or row" in error
    assert "rows: ce, focal; or --baseline none" in error


# --- filters ----------------------------------------------------------------------------

@pytest.fixture
def grid(tmp_path):
    results = tmp_path / "results"
    for method, base in [("ce", 60.0), ("focal", 61.0), ("ldam_drw", 65.0)]:
        for dataset in DATASETS:
            for factor in [100, 10]:
                write_run(results, method=method, dataset=dataset, imbalance_factor=factor,
                          top1=base + factor / 10 - 20 * (dataset == "cifar100_lt"),
                          per_class=False)
    return results


def test_filters_select_rows_and_columns(grid):
    runs = load_results(grid).runs
    picked = filter_runs(runs, methods=["ce", "focal"], datasets=["cifar100_lt"],
                         imbalance_factors=["10"])
    assert sorted(zip(picked["method"], picked["dataset"], picked["imbalance_factor"])) == [
        ("ce", "cifar100_lt", 10.0), ("focal", "cifar100_lt", 10.0)]


def test_filters_on_the_command_line(grid, tmp_path):
    out = tmp_path / "out"
    assert report(grid, out, "--methods", "ce,ldam_drw", "--datasets", "cifar10_lt",
                  "--if", "100") == 0
    main = read_csv(out / "tables" / "main.csv")
    assert list(zip(main["label"], main["dataset"], main["imbalance_factor"],
                    main["top1_mean"])) == [("ce", "cifar10_lt", 100, 70.0),
                                            ("ldam_drw", "cifar10_lt", 100, 75.0)]
    assert len(read_csv(out / "tables" / "cost.csv")) == 2
    # Figures follow the filter, and a narrower report leaves no stale files behind.
    assert report(grid, out, "--methods", "ce", "focal", "--if", "10") == 0
    assert sorted(p.name for p in (out / "figures").glob("*.png")) == ["many_medium_few.png"]
    main = read_csv(out / "tables" / "main.csv")
    assert set(main["method"]) == {"ce", "focal"} and set(main["imbalance_factor"]) == {10}


def test_critical_differences_only_where_friedman_rejects(grid, tmp_path):
    # 3 methods in the same order over 8 cells: Friedman rejects, Nemenyi groups and diagram
    out = tmp_path / "out"
    build(grid, out)
    ranking = (out / "tables" / "ranking.md").read_text()
    assert "Nemenyi critical difference" in ranking
    with Image.open(out / "figures" / "critical_difference.png") as image:
        assert image.size[0] >= 500 and image.size[1] >= 100  # a strip: names under an axis
    assert "drawn because Friedman rejects equal ranks" in (out / "report.md").read_text()
    # one cell: no Friedman test, so neither groups nor a diagram, and the note says why
    build(grid, out, "--datasets", "cifar10_lt", "--if", "100")
    ranking = (out / "tables" / "ranking.md").read_text()
    assert "no Friedman test" in ranking and "not significantly apart" not in ranking
    assert "Nemenyi critical difference" not in ranking and "no Nemenyi groups" in ranking
    assert not (out / "figures" / "critical_difference.png").exists()


# --- bad input --------------------------------------------------------------------------

def test_no_results_directory(tmp_path, capsys):
    assert "does not exist" in refused(tmp_path / "missing", tmp_path / "out", capsys)
    with pytest.raises(UserError, match="no results directory"):
        report(tmp_path / "missing", tmp_path / "out")


def test_no_finished_runs(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    error = refused(results, tmp_path / "out", capsys)
    assert f"ltbench: error: no finished runs in '{results}'" in error
    assert "hint: a run counts once its folder holds a result.csv with status done" in error
    write_run(results, status="failed", error="diverged: loss is nan")
    error = refused(results, tmp_path / "out", capsys)
    assert "no finished runs" in error and "1 failed" in error and "loss is nan" in error


def test_filters_that_match_nothing(grid, tmp_path, capsys):
    error = refused(grid, tmp_path / "out", capsys, "--methods", "crt")
    assert "matches the filters" in error and "available: methods ce, focal, ldam_drw" in error


def test_unusable_files_never_stop_the_report(tmp_path):
    results = tmp_path / "results"
    write_run(results, seed=0, top1=70.0)
    bad = write_run(results, seed=1, top1=99.0, per_class=False)
    (bad / "result.csv").write_text("run_id,method\nabc,ce\n")  # missing columns
    text = write_run(results, seed=2, top1=98.0, per_class=False)
    (text / "result.csv").write_text((text / "result.csv").read_text().replace(",98.0,", ",n/a,"))
    broken_per_class = write_run(results, seed=3, top1=72.0)
    (broken_per_class / "per_class.csv").write_text('class,n_train\n"0,1\n')
    (results / "bench").mkdir()
    (results / "bench" / "feature_loss_memory.csv").write_text("loss,batch\nsc,\"")
    loaded = load_results(results)
    assert sorted(loaded.runs["top1"]) == [70.0, 72.0]
    entries = sorted((Path(e.path).name, e.kind, e.reason.split(" (")[0])
                     for e in loaded.left_out)
    assert [e[:2] for e in entries] == [("feature_loss_memory.csv", "skipped file"),
                                        ("per_class.csv", "skipped file"),
                                        ("result.csv", "corrupt"), ("result.csv", "corrupt")]
    assert {e[2] for e in entries if e[0] == "result.csv"} == {
        "missing columns dataset, imbalance_factor, profile, backbone and 7 more",
        "not a number: top1"}
    assert report(results, tmp_path / "out") == 0


def test_duplicate_run_folders_count_once(tmp_path):
    results = tmp_path / "results"
    folder = write_run(results, seed=0, top1=70.0)
    copy = results / "copied" / folder.name
    copy.parent.mkdir()
    copy.mkdir()
    for path in folder.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    write_run(results, seed=1, top1=72.0)
    loaded = load_results(results)
    assert len(loaded.runs) == 2
    assert [e.kind for e in loaded.left_out] == ["duplicate"]


# --- published numbers ------------------------------------------------------------------

def test_published_rows_name_their_source_and_rule():
    published = load_published()
    assert list(published.columns) == ["method", "dataset", "imbalance_factor", "top1", "source",
                                       "backbone", "epochs", "code", "selection", "confirmed",
                                       "profile", "params", "mismatch", "note"]
    assert published["source"].str.contains(": row ").all()  # paper + table: row, column
    assert set(published["selection"]) <= {"best_on_test", "last_epoch", "best_on_val", "unknown"}
    confirmed = published[published["confirmed"]]
    assert confirmed["source"].str.contains(r"Table \d", regex=True).all()
    assert (published["note"] != "").all() and (published["code"] != "").all()
    assert not published.duplicated(["method", "dataset", "imbalance_factor", "source"]).any()
    assert published["top1"].between(0, 100).all()
    assert all(isinstance(p, dict) for p in published["params"])


def test_published_values_as_the_primary_tables_print_them():
    published = load_published()

    def row(method, dataset, factor, source):
        return one(published[published["source"].str.startswith(source)], method=method,
                   dataset=dataset, imbalance_factor=factor)

    cells = [(d, f) for d in ["cifar10_lt", "cifar100_lt"] for f in [100, 50, 10]]
    cui = "Cui et al. 2019 (CVPR, arXiv:1901.05555v1), Table 2"
    # accuracy = 100 - the printed error; focal at gamma 1 (76.71, not the gamma-0.5 76.72)
    for method, values in {"ce": [70.36, 74.81, 86.39, 38.32, 43.85, 55.71],
                           "focal": [70.38, 76.71, 86.66, 38.41, 44.32, 55.78]}.items():
        for (dataset, factor), value in zip(cells, values):
            r = row(method, dataset, factor, cui)
            assert (r["top1"], r["confirmed"], r["selection"]) == (value, True, "unknown")
    cao = "Cao et al. 2019 (NeurIPS, arXiv:1906.07413v2), Table 2"
    for (dataset, factor), value in zip([c for c in cells if c[1] != 50], [77.03, 88.16, 42.04, 58.71]):
        r = row("ldam_drw", dataset, factor, cao)
        assert (r["top1"], r["confirmed"], r["selection"]) == (value, True, "best_on_test")
    bbn = "Zhou et al. 2020 (BBN, CVPR), Table 1"
    assert row("ldam_drw", "cifar10_lt", 50, bbn)["top1"] == 81.03
    assert row("ldam_drw", "cifar100_lt", 50, bbn)["top1"] == 46.62
    assert row("cb_focal", "cifar100_lt", 100, cui)["params"]["cb_beta"] == 0.9
    # the hybrids' figures could not be checked against Wang et al.'s text: leads only
    hybrids = published[published["method"].isin(["sc_hybrid", "psc_hybrid"])]
    assert len(hybrids) and not hybrids["confirmed"].any()
    inat = hybrids[hybrids["dataset"] == "inat2018"]
    assert sorted(zip(inat["method"], inat["top1"])) == [
        ("psc_hybrid", 68.1), ("psc_hybrid", 70.35), ("sc_hybrid", 68.1), ("sc_hybrid", 70.35)]
    kang = published[published["source"].str.startswith("Kang et al. 2020")]
    assert len(kang) and not kang["confirmed"].any()


def test_lookup_prefers_a_confirmed_figure():
    from ltbench.report.reference import lookup, matches
    published = load_published()
    assert lookup(published, "ce", "cifar10_lt", 100.0)["top1"] == 70.36
    assert len(matches(published, "ce", "cifar10_lt", 100.0)) == 3
    assert lookup(published, "sc_hybrid", "cifar10_lt", 100.0)["confirmed"] == False  # noqa: E712
    assert lookup(published, "ce", "cifar10_lt", 7.0) is None
    assert len(matches(published, "ce", "imagenet_lt", 256.0)) == 2  # natural: any factor


def test_paper_comparison_uses_the_sources_epoch_rule(tmp_path):
    results = tmp_path / "results"
    for seed, (last, best) in enumerate([(76.0, 78.0), (77.0, 79.0)]):
        write_run(results, method="ldam_drw", seed=seed, top1=last, top1_best=best, per_class=False)
        write_run(results, seed=seed, top1=last - 6, top1_best=best - 6, per_class=False)
    data = paper_comparison(_labelled(results), load_published()).data
    ldam = one(data, label="ldam_drw")  # Cao et al.: best test epoch
    assert ldam["ours_mean"] == pytest.approx(78.5) and ldam["difference"] == pytest.approx(78.5 - 77.03)
    menon = one(data, label="ce", published_top1=72.84)  # not stated: our last epoch
    assert menon["ours_mean"] == pytest.approx(70.5) and menon["difference"] == pytest.approx(70.5 - 72.84)


def test_a_figure_chosen_on_validation_is_compared_with_ours_chosen_on_validation(tmp_path):
    results = tmp_path / "results"
    for seed, (last, bestval) in enumerate([(76.0, 75.0), (77.0, 76.0)]):
        write_run(results, method="ldam_drw", seed=seed, top1=last, top1_bestval=bestval, per_class=False)
    published = load_published()
    cao = (published["method"] == "ldam_drw") & (published["top1"] == 77.03)
    published.loc[cao, "selection"] = "best_on_val"  # as if Cao et al. had kept their best validation epoch
    ldam = one(paper_comparison(_labelled(results), published).data, label="ldam_drw")
    assert ldam["our_column"] == "top1_bestval"
    assert ldam["ours_mean"] == pytest.approx(75.5) and ldam["difference"] == pytest.approx(75.5 - 77.03)


def test_a_recorded_setting_that_differs_keeps_a_figure_out_of_the_comparison(tmp_path):
    results = tmp_path / "results"
    write_run(results, top1=71.0, per_class=False, params={"lr": 0.1, "weight_decay": 2e-4})
    data = paper_comparison(_labelled(results), load_published()).data.set_index("published_top1")
    assert data.loc[72.84, "status"] == "different protocol"  # Menon et al.: 1e-4
    assert "weight_decay" not in data.loc[70.36, "differs"]  # Cui et al. do not state a weight decay
    assert "weight_decay 0.0002 vs 0.0001" in data.loc[72.84, "differs"]
    assert pd.isna(data.loc[72.84, "difference"])


def test_unconfirmed_leads_are_shown_apart_and_never_compared(tmp_path):
    results = tmp_path / "results"
    write_run(results, method="sc_hybrid", top1=80.0, per_class=False)
    out = tmp_path / "out"
    assert report(results, out) == 0
    data = read_csv(out / "tables" / "paper_comparison.csv")
    row = one(data, label="sc_hybrid")
    assert (row["published_top1"], row["status"]) == (81.40, "unconfirmed lead")
    assert pd.isna(row["difference"]) and not row["published_confirmed"]
    text = (out / "tables" / "paper_comparison.md").read_text()
    assert "### Unconfirmed leads, not compared" in text and "81.40†" in text
    assert "same protocol" not in text  # no main comparison table without a confirmed figure
    assert "Δ" not in text


# --- the long format and the files' modes ---------------------------------------------

def test_long_format_has_one_row_per_run_and_metric(sweep, tmp_path, capsys):
    results, _ = sweep
    out = tmp_path / "long"
    assert report(results, out, "--long") == 0
    assert sorted(p.name for p in out.iterdir()) == ["runs_long.csv"]  # no tables, no figures
    assert "runs_long.csv" in capsys.readouterr().out
    long = read_csv(out / "runs_long.csv")
    runs = load_results(results).runs
    assert set(long["run_id"]) == set(runs["run_id"])
    assert not long.duplicated(["run_id", "metric"]).any()
    for run in runs.itertuples():
        mine = long[long["run_id"] == run.run_id].set_index("metric")
        for metric in ("top1", "top1_bestval", "top1_best", "many", "medium", "few", "val_top1", "wall_s",
                       "images_per_s", "peak_mem_mb"):
            value = getattr(run, metric)
            if pd.isna(value):  # an empty shot group has no row, not a 0
                assert metric not in mine.index
            else:
                assert mine.loc[metric, "value"] == pytest.approx(value)
        assert set(mine["method"]) == {run.method} and set(mine["seed"]) == {run.seed}
    assert one(long, run_id=runs["run_id"].iloc[0], metric="top1")["unit"] == "%"
    expected = {"top1_bestval": "best_on_val", "top1_best": "best_on_test"}  # a figure chosen on test says so
    for metric, selection in long.drop_duplicates("metric")[["metric", "selection"]].itertuples(index=False):
        assert selection == expected.get(metric, "last_epoch"), metric
    assert {"top1", "top1_best"} <= set(long["metric"])
    # the wide table back from the long one, as pandas users would
    wide = long.pivot_table(index="run_id", columns="metric", values="value")
    assert wide.loc[runs["run_id"], "top1"].to_numpy() == pytest.approx(runs["top1"].to_numpy())


def test_report_files_take_the_stores_modes_whatever_the_umask(sweep, tmp_path):
    from ltbench.file_modes import DIR_MODE, FILE_MODE

    results, _ = sweep
    out = tmp_path / "out"
    before = os.umask(0o002)  # a group-writable umask, common on shared machines
    try:
        build(results, out)
        assert report(results, tmp_path / "long", "--long") == 0
    finally:
        os.umask(before)
    paths = [out, *out.rglob("*"), tmp_path / "long", *(tmp_path / "long").iterdir()]
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in paths}
    assert len(modes) > 20
    wanted = {p: DIR_MODE if (tmp_path / p).is_dir() else FILE_MODE for p in modes}
    assert modes == wanted  # 755 folders and 644 files: no one but the owner writes


# --- imports ----------------------------------------------------------------------------

TORCH_BLOCKED = (
    "import sys, importlib.abc\n"
    "class NoTorch(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'timm'):\n"
    "            raise ImportError('the report imported ' + name)\n"
    "sys.meta_path.insert(0, NoTorch())\n")


@pytest.mark.parametrize("extra", [[], ["--long"]])
def test_the_report_itself_never_imports_torch(sweep, tmp_path, extra):
    """Building every table and figure with torch and timm unimportable."""
    results, _ = sweep
    code = TORCH_BLOCKED + (
        "import argparse; import ltbench.report.cli as cli\n"
        "parser = argparse.ArgumentParser(); cli.add_arguments(parser)\n"
        f"args = parser.parse_args(['--results-dir', {str(results)!r}, '--out', "
        f"{str(tmp_path / 'out')!r}] + {extra!r})\n"
        "assert cli.run(args) == 0\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]


# --- per-class figures ------------------------------------------------------------------

def test_per_class_names_and_seed_spread(tmp_path):
    from ltbench.report.plots import _per_class_seeds

    results = tmp_path / "results"
    for seed in range(3):
        folder = write_run(results, seed=seed, top1=70.0 + seed)
        table = pd.read_csv(folder / "per_class.csv")
        if seed < 2:  # a per_class.csv without names still plots, by index
            table["name"] = [f"name {c}" for c in table["class"]]
        table.to_csv(folder / "per_class.csv", index=False)
    loaded = load_results(results)
    tables_ = [loaded.per_class[r] for r in loaded.runs["run_id"]]
    classes = _per_class_seeds(tables_)
    assert list(classes["name"]) == [f"name {c}" for c in range(10)]  # head to tail
    accuracy = pd.concat(t.assign(acc=100 * t["correct"] / t["total"]) for t in tables_)
    spread = accuracy.groupby("class")["acc"].agg(["mean", "min", "max"])
    assert classes["mean"].to_numpy() == pytest.approx(spread["mean"].to_numpy())
    assert (classes["low"].to_numpy(), classes["high"].to_numpy()) == (
        pytest.approx(spread["min"].to_numpy()), pytest.approx(spread["max"].to_numpy()))
    assert list(_per_class_seeds(tables_[2:])["name"]) == [str(c) for c in range(10)]
    assert report(results, tmp_path / "out") == 0
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "bar: range over seeds" in markdown and "no line joining classes" in markdown
