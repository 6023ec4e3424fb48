"""What `ltbench report` draws from a run's history.csv (training curves, loss components)
and from its predictions.npz (calibration error, reliability diagram, confusion matrices),
on hand-made run folders."""

import csv

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from ltbench.report import calibration, curves
from ltbench.report.load import load_results
from ltbench.results_schema import HISTORY_FILE, PREDICTIONS_FILE

from test_report import DATASETS, build, lt_counts, read_csv, write_run

EPOCHS = 6


def write_history(folder, seed: int, components: dict | None = None, evaluate_every: int = 2):
    """One row per epoch, as the trainer writes it; `components`: column -> f(epoch)."""
    components = components or {}
    header = ["epoch", "lr", "loss", *components, "images_per_s", "wall_s", "top1", "many",
              "medium", "few"]
    with open(folder / HISTORY_FILE, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for epoch in range(1, EPOCHS + 1):
            evaluated = epoch % evaluate_every == 0 or epoch == EPOCHS
            top1 = 40 + 5 * epoch + seed
            writer.writerow([epoch, 0.1 * (1 - epoch / (EPOCHS + 1)), 2.0 / epoch + 0.1 * seed,
                             *(f(epoch) for f in components.values()), 5000, 10.0 * epoch,
                             *([top1, top1 + 10, top1 - 10, ""] if evaluated else [""] * 4)])


def write_predictions(folder, label, predicted, confidence):
    np.savez(folder / PREDICTIONS_FILE, label=np.asarray(label, np.int32),
             predicted=np.asarray(predicted, np.int32),
             confidence=np.asarray(confidence, np.float32))


HYBRID = {"loss_feature": lambda e: 3.0 - 0.2 * e, "loss_classifier": lambda e: 1.5 / e,
          "alpha": lambda e: 1 - (e / EPOCHS) ** 2}


# --- training curves --------------------------------------------------------------------

def test_curves_and_hybrid_components_are_drawn(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    for seed in range(2):
        write_history(write_run(results, seed=seed, top1=70.0 + seed), seed)
        write_history(write_run(results, method="sc_hybrid", seed=seed, top1=72.0 + seed), seed,
                      HYBRID)
    printed = build(results, out)
    assert "No training curves" not in printed
    figures = out / "figures"
    for name in ["curves_cifar10_lt_if100", "components_cifar10_lt_if100"]:
        assert Image.open(figures / f"{name}.png").size[0] > 500
        assert (figures / f"{name}.pdf").stat().st_size > 0
    page = (out / "report.md").read_text()
    assert "## Training curves" in page
    assert "band: range over seeds (lowest to highest" in page and "2 seeds per method" in page
    assert ("Feature loss, Classifier loss, \u03b1 (weight of the feature loss)" in page)


def test_sparse_evaluation_is_said_on_the_figure_and_in_its_caption(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    for seed in range(2):
        write_history(write_run(results, seed=seed, top1=70.0 + seed), seed, evaluate_every=3)
    build(results, out)
    markdown = (out / "report.md").read_text()
    assert "Top-1 only where the runs evaluated on the test set, at epochs 3, 6" in markdown
    assert "so its line joins those points" in markdown
    texts = [t.get_text() for ax in _saved_axes(out, "curves_cifar10_lt_if100") for t in [ax.title]]
    assert "evaluated at epochs 3, 6 only" in texts
    # every epoch evaluated: nothing to warn of
    for seed in range(2):
        write_history(write_run(results, method="focal", seed=seed, top1=71.0 + seed), seed,
                      evaluate_every=1)
    build(results, out, "--methods", "focal")
    assert "Top-1 at every epoch." in (out / "report.md").read_text()


def _saved_axes(out, name):
    """The axes of a figure as the report drew it (drawn again: PNGs keep no text)."""
    from ltbench.report import curves as curves_module
    from ltbench.report.figures import label_colours
    from ltbench.report.labels import label_runs

    loaded = load_results(out.parent / "results")
    runs = label_runs(loaded.runs)
    figures = []
    original = curves_module.save_figure

    def keep(fig, *args, **kwargs):
        figures.append((args[1], fig))
        return original(fig, *args, **kwargs)
    curves_module.save_figure = keep
    try:
        curves_module.training_curves(runs, loaded.history, label_colours(runs["label"]),
                                      out / "again")
    finally:
        curves_module.save_figure = original
    return [ax for n, fig in figures if n == name for ax in fig.axes]


def test_stage_two_epochs_are_drawn_apart_from_stage_one_runs(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    for seed in range(2):
        ce = write_run(results, seed=seed, top1=70.0 + seed)
        write_history(ce, seed)
        write_history(write_run(results, method="crt", seed=seed, top1=72.0 + seed,
                                stage1_run_id=ce.name, stage1_reused=True, stage1_wall_s=600.0),
                      seed)
    build(results, out)
    figures = out / "figures"
    assert (figures / "curves_cifar10_lt_if100.png").is_file()
    assert (figures / "curves_cifar10_lt_if100_stage2.png").is_file()
    markdown = (out / "report.md").read_text()
    assert "Training curves (CIFAR-10-LT, IF 100, stage 2)" in markdown
    assert "epoch 1 is the first epoch after their stage-1 run" in markdown
    # each figure holds its own stage's rows only
    stage1 = _saved_axes(out, "curves_cifar10_lt_if100")
    stage2 = _saved_axes(out, "curves_cifar10_lt_if100_stage2")
    assert len(stage1[0].get_lines()) == len(stage2[0].get_lines()) == 1


def test_a_line_is_the_mean_over_seeds_and_the_band_their_range(tmp_path):
    results = tmp_path / "results"
    for seed in range(3):
        write_history(write_run(results, seed=seed, top1=70.0 + seed), seed)
    loaded = load_results(results)
    runs = loaded.runs.assign(label="ce")
    stacked = pd.concat([loaded.history[r].assign(label="ce", run_id=r) for r in runs["run_id"]])
    fig = Figure()
    axes = fig.subplots(1, 2)
    shown = curves._draw(axes, [("top1", "Top-1"), ("loss", "Loss")], stacked,
                         {"ce": (0, 0, 1)})
    assert shown == {"ce"}
    top1_line = axes[0].lines[0]
    # evaluated at epochs 2, 4, 6; top-1 = 40 + 5 epoch + seed, seeds 0, 1, 2: mean + 1
    assert list(top1_line.get_xdata()) == [2, 4, 6]
    assert list(top1_line.get_ydata()) == [51, 61, 71]
    band = axes[1].collections[0].get_paths()[0].vertices
    losses = [2.0 / e + 0.1 * s for e in range(1, EPOCHS + 1) for s in range(3)]
    assert band[:, 1].min() == pytest.approx(min(losses))
    assert band[:, 1].max() == pytest.approx(max(losses))


def test_runs_without_history_get_one_line_and_no_curves(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    write_run(results, seed=0)
    printed = build(results, out)
    assert "No training curves: no run has a history.csv" in printed
    assert not list((out / "figures").glob("curves_*"))
    assert "Training curves" not in (out / "report.md").read_text()


def test_an_unreadable_history_is_left_out_and_the_run_still_counts(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    folder = write_run(results, seed=0)
    (folder / HISTORY_FILE).write_text("epoch,lr,loss\n1,0.1,two\n")
    build(results, out)
    left = read_csv(out / "tables" / "left_out.csv")
    assert left.iloc[0]["kind"] == "skipped file"
    assert "not a number in column loss" in left.iloc[0]["reason"]
    assert "only its training curves are missing" in left.iloc[0]["reason"]
    assert len(read_csv(out / "tables" / "main.csv")) == 1


# --- predictions: calibration and confusion ---------------------------------------------

def reference_ece(confidence, correct, bins=15):
    """The textbook loop, bin by bin: (lo, hi] with the first bin closed at 0."""
    n, total = len(confidence), 0.0
    for m in range(bins):
        lo, hi = m / bins, (m + 1) / bins
        inside = [(c, k) for c, k in zip(confidence, correct) if (lo < c <= hi) or (m == 0 and c == 0)]
        if inside:
            accuracy = sum(k for _, k in inside) / len(inside)
            mean_conf = sum(c for c, _ in inside) / len(inside)
            total += len(inside) / n * abs(accuracy - mean_conf)
    return total


def test_ece_matches_the_textbook_definition():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.1, 1.0, 2000)
    correct = rng.uniform(size=2000) < confidence ** 2  # overconfident
    ours = calibration.expected_calibration_error(confidence, correct)
    assert ours == pytest.approx(reference_ece(confidence, correct), abs=1e-12)
    assert ours > 0.1
    # calibrated by construction: correct with probability equal to the confidence
    calibrated = rng.uniform(size=200_000) < (c := rng.uniform(0, 1, 200_000))
    assert calibration.expected_calibration_error(c, calibrated) < 0.01
    # every prediction right at confidence 1: no gap at all; at 0.6: a 0.4 gap
    assert calibration.expected_calibration_error(np.ones(10), np.ones(10, bool)) == 0
    assert calibration.expected_calibration_error(np.full(10, 0.6), np.ones(10, bool)) == pytest.approx(0.4)


def fake_predictions(n_classes, per_class, seed, right):
    """`per_class` test images of each class; a fraction `right` predicted correctly (the
    rest as the next class), every confidence 0.9."""
    label = np.repeat(np.arange(n_classes), per_class)
    predicted = label.copy()
    wrong = np.arange(len(label)) % per_class >= round(right * per_class)
    predicted[wrong] = (label[wrong] + 1) % n_classes
    return label, predicted, np.full(len(label), 0.9)


def test_calibration_table_and_confusion_matrices(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    n_classes, per_test_class = DATASETS["cifar10_lt"][1], DATASETS["cifar10_lt"][2]
    rights = {0: 0.7, 1: 0.8}
    for seed, right in rights.items():
        folder = write_run(results, seed=seed, top1=70.0 + seed)
        table = pd.read_csv(folder / "per_class.csv")
        table["name"] = [f"class-{c}" for c in table["class"]]
        table.to_csv(folder / "per_class.csv", index=False)
        write_predictions(folder, *fake_predictions(n_classes, per_test_class, seed, right))
    write_run(results, method="focal", seed=0, top1=72.0)  # no predictions saved
    build(results, out)
    data = read_csv(out / "tables" / "calibration.csv")
    ce = data[data["label"] == "ce"].iloc[0]
    # confidence 0.9 everywhere: ECE = |accuracy - 0.9|, 20 and 10 points
    assert ce["ece_mean"] == pytest.approx(15.0)
    assert ce["ece_std"] == pytest.approx(np.std([20.0, 10.0], ddof=1))
    assert ce["accuracy_mean"] == pytest.approx(75.0) and ce["seeds"] == 2
    assert "focal" not in set(data["label"])
    for suffix in ("md", "tex", "csv"):
        assert (out / "tables" / f"calibration.{suffix}").is_file()
    markdown = (out / "tables" / "calibration.md").read_text()
    assert "15.00 ± 7.07" in markdown and "15 equal-width bins" in markdown
    assert "Expected calibration error" in (out / "index.html").read_text()
    companion = read_csv(out / "tables" / "calibration.provenance.csv")
    assert len(companion) == 2
    assert Image.open(out / "figures" / "confusion_cifar10_lt_if100.png").size[0] > 300
    assert (out / "figures" / "reliability.png").is_file()
    assert "Confusion matrices on the test set" in (out / "report.md").read_text()
    assert "classes by name" in (out / "report.md").read_text()


def test_confusion_counts_are_exact_and_rows_normalise(tmp_path):
    results = tmp_path / "results"
    folder = write_run(results, seed=0)
    label, predicted, confidence = fake_predictions(10, 4, 0, 0.75)
    write_predictions(folder, label, predicted, confidence)
    loaded = load_results(results)
    found = calibration.collect(loaded.runs.assign(label="ce"), loaded.predictions)
    counts = found.confusion[folder.name]
    assert counts.sum() == 40 and np.trace(counts) == 30
    assert all(counts[c, (c + 1) % 10] == 1 for c in range(10))
    normalised = calibration._row_normalised(counts, 10)
    assert np.allclose(normalised.sum(axis=1), 1) and np.allclose(np.diag(normalised), 0.75)


def test_no_confusion_matrix_beyond_ten_classes(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    folder = write_run(results, method="ce", dataset="cifar100_lt", seed=0)
    write_predictions(folder, *fake_predictions(100, 3, 0, 0.5))
    build(results, out)
    assert not list((out / "figures").glob("confusion_*"))
    assert (out / "tables" / "calibration.csv").is_file()


@pytest.mark.parametrize("arrays, reason", [
    ({"label": [0, 1], "predicted": [0, 1]}, "missing arrays confidence"),
    ({"label": [0, 1], "predicted": [0, 12], "confidence": [0.5, 0.5]}, "class indices outside 0..9"),
    ({"label": [0, 1], "predicted": [0, 1], "confidence": [0.5, 1.5]}, "between 0 and 1"),
    ({"label": [0, 1, 2], "predicted": [0, 1], "confidence": [0.5, 0.5]}, "of one length"),
])
def test_a_bad_predictions_file_is_left_out_with_its_reason(tmp_path, arrays, reason):
    results, out = tmp_path / "results", tmp_path / "out"
    folder = write_run(results, seed=0)
    np.savez(folder / PREDICTIONS_FILE, **{k: np.asarray(v) for k, v in arrays.items()})
    build(results, out)
    left = read_csv(out / "tables" / "left_out.csv")
    assert reason in left.iloc[0]["reason"] and left.iloc[0]["kind"] == "skipped file"
    assert len(read_csv(out / "tables" / "calibration.csv")) == 0
    assert len(read_csv(out / "tables" / "main.csv")) == 1


def test_an_empty_calibration_section_names_the_command_that_fills_it(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    write_run(results, seed=0)  # no predictions.npz
    build(results, out)
    assert len(read_csv(out / "tables" / "calibration.csv")) == 0
    for page in ("index.html", "report.md"):
        assert "ltbench evaluate --results-dir" in (out / page).read_text(), page


def test_lt_counts_helper_matches_the_profile():
    """The fabricated per_class.csv and the terciles test use the library's counts."""
    from ltbench.data.profiles import class_counts

    assert lt_counts("cifar10_lt", 100) == class_counts(10, 5000, 100)
