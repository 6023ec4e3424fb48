"""Every registered method end to end: one smoke sweep on the real Fashion-MNIST-LT at IF 100.

The two-stage methods come first in the sweep, so the first of those sharing a stage-1
method trains that stage 1 as a run of its own; the stage-1 method's own run is then
already done and the others reuse the same run.
"""

import json
import re

import pytest

from ltbench import registry
from ltbench.cli import main
from ltbench.method import Method
from ltbench.store import RESULT_COLUMNS, RunStore
from ltbench.testing import two_stage_methods

TWO_STAGE = two_stage_methods()  # method -> its stage-1 method
EVERY_METHOD = [*TWO_STAGE, *(name for name in registry.methods() if name not in TWO_STAGE)]
# the first two-stage method of each stage-1 method trains that stage 1; the others reuse it
TRAINS_STAGE1 = set({stage1: name for name, stage1 in reversed(TWO_STAGE.items())}.values())
# methods with post-hoc choices (Method.calibrate) record them in the row
CALIBRATED = {name for name, cls in registry.methods().items() if cls.calibrate is not Method.calibrate}
pytestmark = pytest.mark.slow  # a run per method, each evaluated on the 10,000 test images
SWEEP = ["run", "--methods", ",".join(EVERY_METHOD), "--dataset", "fashion_mnist_lt", "--if", "100", "--preset", "smoke",
         "--device", "cpu"]
ALWAYS_EMPTY = {"error", "slurm_job_id", "git_sha", "tag"}  # the sweep has no --tag
STAGE_COLUMNS = {"stage1_run_id", "stage1_reused", "stage1_wall_s"}
TEACHER_COLUMNS = {"teacher_run_id", "teacher_reused", "teacher_wall_s"}  # filled by methods that distil


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, fashion_mnist):
    results = tmp_path_factory.mktemp("zoo")
    capture = pytest.MonkeyPatch()
    lines = []
    capture.setattr("ltbench.commands.console.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
    try:
        code = main(SWEEP + ["--results-dir", str(results)])
    finally:
        capture.undo()
    store = RunStore(results)
    rows = {r["method"]: r for r in (store.read_result(i) for i in store.run_ids())}
    return results, code, rows, "\n".join(lines)


def test_every_method_writes_a_complete_row(sweep):
    _, code, rows, _ = sweep
    assert code == 0
    assert set(rows) == set(EVERY_METHOD)
    for method, row in rows.items():
        assert row["status"] == "done", (method, row["error"])
        empty = {c for c in RESULT_COLUMNS if row[c] == ""} - ALWAYS_EMPTY
        expected = (set() if method in TWO_STAGE else STAGE_COLUMNS) | (set() if method in CALIBRATED else {"calibration"})
        expected |= set() if registry.method(method).teacher is not None else TEACHER_COLUMNS
        assert empty == expected, method
        assert 0 <= float(row["top1"]) <= 100 and float(row["few"]) >= 0
        assert (row["n_many"], row["n_medium"], row["n_few"]) == ("2", "3", "5")


def test_stage1_is_its_methods_run_trained_once(sweep):
    _, _, rows, log = sweep
    assert {m: rows[m]["stage1_run_id"] for m in TWO_STAGE} == {m: rows[s]["run_id"] for m, s in TWO_STAGE.items()}
    # trained by the first two-stage method as the stage-1 method's run itself, reused by the rest
    assert {m: rows[m]["stage1_reused"] for m in TWO_STAGE} == {
        m: "False" if m in TRAINS_STAGE1 else "True" for m in TWO_STAGE}
    assert "done meanwhile, as another run's stage 1" in log
    assert log.count("stage 1: training") == len(set(TWO_STAGE.values()))
    for m, stage1 in TWO_STAGE.items():  # each run's cost includes its stage 1's recorded time
        assert float(rows[m]["stage1_wall_s"]) == pytest.approx(float(rows[stage1]["wall_s"]), abs=0.01)
        assert float(rows[m]["wall_s"]) >= float(rows[m]["stage1_wall_s"])


def test_post_hoc_choices_are_recorded(sweep):
    _, _, rows, _ = sweep
    chosen = json.loads(rows["tau_norm"]["calibration"])
    assert 0 <= chosen["tau"] <= 2 and chosen["selection"] == "balanced accuracy on the validation split"
    # smoke keeps 200 of a class's 6000 images at most: each class gives 50 to validation
    assert (chosen["val_images"], chosen["val_classes"]) == (500, 10)
    assert int(rows["tau_norm"]["n_val"]) == 500 and rows["tau_norm"]["val_top1"] != ""
    assert json.loads(rows["logit_adjust_posthoc"]["params"])["tau"] == 1.0


def test_a_finished_two_stage_run_resumes_to_the_same_result(sweep, capsys):
    results, _, rows, _ = sweep
    crt = rows["crt"]
    assert "crt" in TWO_STAGE
    (results / crt["run_id"] / "result.csv").unlink()
    assert main(SWEEP + ["--methods", "crt", "--results-dir", str(results)]) == 0
    assert "resuming from epoch 10 of 10" in capsys.readouterr().out
    again = RunStore(results).read_result(crt["run_id"])
    assert again["top1"] == crt["top1"] and again["stage1_reused"] == "True"


def test_list_shows_every_method_with_its_paper(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for method in EVERY_METHOD:
        line = next(line for line in out.splitlines() if f" {method} " in line)
        assert "et al." in line and re.search(r"\b(19|20)\d\d\)", line), line  # "(Cao et al., NeurIPS 2019)"
