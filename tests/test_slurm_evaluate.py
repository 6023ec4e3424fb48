"""`ltbench evaluate --launcher slurm` on the single-node test cluster: finished runs evaluated
as one job array, recorded apart from the training jobs, giving what a local evaluation gives."""

import json
import shutil

import numpy as np
import pytest

from ltbench.cli import main
from ltbench.launch.slurm import scheduler_states
from ltbench.results_schema import PREDICTIONS_FILE
from ltbench.store import RunStore

pytestmark = [pytest.mark.slurm, pytest.mark.slow]  # real evaluations on the Slurm cluster the session starts

SMOKE = ["--dataset", "fashion_mnist_lt", "--if", "10", "--preset", "smoke", "--n-max", "30", "--device", "cpu"]


def predictions(results) -> dict:
    store = RunStore(results)
    found = {}
    for run_id in store.run_ids():
        with np.load(store.run_dir(run_id) / PREDICTIONS_FILE) as arrays:
            found[run_id] = {key: arrays[key] for key in arrays.files}
    return found


def test_finished_runs_are_evaluated_as_one_array(slurm_cluster, fashion_mnist, tmp_path, capsys):
    results, local = tmp_path / "results", tmp_path / "local"
    # trained here, without save_predictions; crt's evaluation reads its stage-1 CE checkpoint
    assert main(["run", *SMOKE, "--methods", "ce,crt,focal", "--results-dir", str(results)]) == 0
    shutil.copytree(results, local)
    assert main(["evaluate", "--results-dir", str(local), "--device", "cpu"]) == 0
    capsys.readouterr()

    assert main(["evaluate", "--results-dir", str(results), "--device", "cpu", "--launcher", "slurm", "--wait"]) == 0
    out = capsys.readouterr().out
    assert "3 finished runs, 0 with predictions already, 3 to evaluate" in out
    assert "submitted 3 evaluation(s) as Slurm job" in out, out
    record = json.loads((results / "slurm" / "evaluations.json").read_text())
    assert set(record) == set(RunStore(results).run_ids())
    assert len({entry["job_id"].split("_")[0] for entry in record.values()}) == 1  # one array
    # the training record is the training jobs' only: the finished runs are not shown as queued
    assert not (results / "slurm" / "submissions.json").exists() and scheduler_states(results) == {}

    got, expected = predictions(results), predictions(local)
    assert set(got) == set(expected)
    for run_id, arrays in expected.items():
        for key, value in arrays.items():
            if value.dtype.kind == "f":  # the job's thread count may order the sums otherwise
                np.testing.assert_allclose(got[run_id][key].astype(float), value.astype(float), rtol=1e-2, atol=1e-3)
            else:
                assert (got[run_id][key] == value).mean() > 0.999, (run_id, key)

    written = {p: p.stat().st_mtime_ns for p in results.glob(f"*/{PREDICTIONS_FILE}")}
    assert main(["evaluate", "--results-dir", str(results), "--launcher", "slurm", "--wait"]) == 0
    out = capsys.readouterr().out
    assert "3 with predictions already, 0 to evaluate" in out and "submitted" not in out
    assert {p: p.stat().st_mtime_ns for p in written} == written
