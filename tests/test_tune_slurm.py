"""`ltbench tune --launcher slurm` on the single-node test cluster: each round of a study is
one job array, and the command that asked the trials tells their scores into one journal."""

import json

import pytest

from ltbench.cli import main
from ltbench.store import RunStore
from ltbench.tune import TRIAL_TAG, TUNED_TAG
from ltbench import tune_study

pytestmark = [pytest.mark.slurm, pytest.mark.slow]  # real runs on the Slurm cluster the session starts

SMOKE = ["--dataset", "fashion_mnist_lt", "--if", "10", "--preset", "smoke", "--n-max", "30", "--device", "cpu"]


def test_a_round_of_trials_is_one_array_told_into_one_journal(slurm_cluster, fashion_mnist, tmp_path):
    flags = ["tune", *SMOKE, "--methods", "ce", "--budget", "2", "--seeds", "0", "--results-dir", str(tmp_path),
             "--launcher", "slurm", "--slurm-array-parallelism", "2"]
    assert main(flags) == 0
    store = RunStore(tmp_path)
    rows = {run_id: store.read_result(run_id) for run_id in store.run_ids()}
    summary = json.loads(next((tmp_path / "tune").glob("ce_*.json")).read_text())
    trials = summary["trials"]
    assert [t["state"] for t in trials] == ["COMPLETE", "COMPLETE"]
    jobs = [rows[t["run_id"]]["slurm_job_id"] for t in trials]
    assert all(jobs) and len({job.split("_")[0] for job in jobs}) == 1, jobs  # the round: one array
    assert all(rows[t["run_id"]]["tag"] == TRIAL_TAG for t in trials)
    assert all(t["value"] == pytest.approx(float(rows[t["run_id"]]["val_top1"])) for t in trials)
    assert [p.name for p in (tmp_path / "tune").iterdir() if not p.name.endswith(".json")] == [tune_study.JOURNAL]
    tuned = rows[summary["tuned"]["0"]]
    assert (tuned["status"], tuned["tag"]) == ("done", TUNED_TAG) and tuned["slurm_job_id"]
    # the study is whole: a rerun submits nothing and trains nothing
    before = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/result.csv")}
    submitted = json.loads((tmp_path / "slurm" / "submissions.json").read_text())
    assert main(flags) == 0
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/result.csv")} == before
    assert json.loads((tmp_path / "slurm" / "submissions.json").read_text()) == submitted
