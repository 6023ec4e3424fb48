"""`ltbench run --launcher slurm` on the single-node test cluster (scripts/slurm_cluster.sh).

Runs are smoke-sized Fashion-MNIST-LT runs of a few seconds each; most of a job's time is
Python start-up and the test-set evaluation.
"""

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from ltbench.cli import main
from ltbench.launch.slurm import scheduler_states
from ltbench.store import RunStore

pytestmark = [pytest.mark.slurm, pytest.mark.slow]  # real runs on the Slurm cluster the session starts

SMOKE = ["--dataset", "fashion_mnist_lt", "--if", "10", "--preset", "smoke", "--n-max", "30", "--device", "cpu"]


def run_on_slurm(results, *flags) -> int:
    return main(["run", *SMOKE, "--results-dir", str(results), "--launcher", "slurm", *flags])


def submissions(results) -> dict:
    return json.loads((results / "slurm" / "submissions.json").read_text())


def result_rows(results) -> dict[str, dict]:
    store = RunStore(results)
    return {run_id: store.read_result(run_id) for run_id in store.run_ids()}


@pytest.fixture(scope="module")
def sweep_with_a_failure(slurm_cluster, fashion_mnist, tmp_path_factory):
    """ce and focal as one array, focal with a learning rate that makes its loss NaN."""
    results = tmp_path_factory.mktemp("sweep")
    exit_code = run_on_slurm(results, "--methods", "ce,focal", "--set", "focal.lr=1e30", "--wait")
    return results, exit_code


def test_sweep_is_one_array_and_each_row_carries_its_job_id(sweep_with_a_failure):
    results, exit_code = sweep_with_a_failure
    assert exit_code == 1  # one run failed
    rows, record = result_rows(results), submissions(results)
    assert len(rows) == 2 and set(rows) == set(record)
    for run_id, row in rows.items():
        assert row["slurm_job_id"] == record[run_id]["job_id"]
        assert Path(record[run_id]["stderr"]).is_relative_to((results / "slurm").resolve())
    arrays = {row["slurm_job_id"].split("_")[0] for row in rows.values()}
    assert len(arrays) == 1, f"expected one job array, got job ids {[r['slurm_job_id'] for r in rows.values()]}"


def test_failed_job_is_recorded_with_its_error_and_the_other_goes_on(sweep_with_a_failure):
    results, _ = sweep_with_a_failure
    by_method = {row["method"]: row for row in result_rows(results).values()}
    assert by_method["ce"]["status"] == "done" and float(by_method["ce"]["top1"]) > 0
    assert by_method["focal"]["status"] == "failed"
    assert "nan" in by_method["focal"]["error"].lower()


def test_rerun_retries_only_the_failed_run(sweep_with_a_failure, capsys):
    results, _ = sweep_with_a_failure
    before = submissions(results)
    capsys.readouterr()
    assert run_on_slurm(results, "--methods", "ce,focal", "--set", "focal.lr=1e30", "--wait") == 1
    assert "submitted 1 run(s)" in capsys.readouterr().out
    after, rows = submissions(results), result_rows(results)
    failed = next(run_id for run_id, row in rows.items() if row["status"] == "failed")
    done = next(run_id for run_id, row in rows.items() if row["status"] == "done")
    assert after[done] == before[done]
    assert after[failed]["job_id"] != before[failed]["job_id"]
    assert rows[failed]["slurm_job_id"] == after[failed]["job_id"]


def test_finished_sweep_submits_nothing(sweep_with_a_failure, capsys):
    results, _ = sweep_with_a_failure
    before = submissions(results)
    assert run_on_slurm(results, "--methods", "ce") == 0
    assert "nothing to submit" in capsys.readouterr().out
    assert submissions(results) == before


def test_unknown_partition_is_refused_before_submitting(slurm_cluster, fashion_mnist, tmp_path, capsys):
    assert run_on_slurm(tmp_path, "--methods", "ce", "--slurm-partition", "no-such-partition") == 2
    err = capsys.readouterr().err
    assert "unknown Slurm partition 'no-such-partition'" in err and "debug" in err
    assert not (tmp_path / "slurm" / "submissions.json").exists()


def test_queued_runs_are_not_submitted_twice_and_a_cancelled_one_is_lost(slurm_cluster, fashion_mnist, tmp_path,
                                                                           capsys):
    # a begin time an hour ahead keeps the job pending without using the cluster
    later = ["--methods", "ce", "--slurm-extra", "begin=now+3600"]
    assert run_on_slurm(tmp_path, *later) == 0
    record = submissions(tmp_path)
    (run_id, submission), = record.items()
    assert scheduler_states(tmp_path) == {run_id: "pending"}
    capsys.readouterr()
    assert run_on_slurm(tmp_path, *later) == 0
    assert "already queued or running" in capsys.readouterr().out and submissions(tmp_path) == record
    subprocess.run(["scancel", submission["job_id"]], check=True)
    _wait_for(lambda: scheduler_states(tmp_path) == {run_id: "lost"}, "the cancelled run to show as lost")


def test_two_stage_runs_wait_for_their_stage1_job_and_reuse_it(slurm_cluster, fashion_mnist, tmp_path, capsys):
    assert run_on_slurm(tmp_path, "--methods", "ce,crt,tau_norm", "--wait") == 0
    out = capsys.readouterr().out
    rows, record = result_rows(tmp_path), submissions(tmp_path)
    by_method = {row["method"]: (run_id, row) for run_id, row in rows.items()}
    assert set(by_method) == {"ce", "crt", "tau_norm"}  # CE once: no second CE run folder
    ce_id, ce = by_method["ce"]
    ce_job = record[ce_id]["job_id"]
    assert f"to start once job(s) {ce_job} have ended" in out
    for method in ("crt", "tau_norm"):
        run_id, row = by_method[method]
        assert row["status"] == "done" and row["stage1_run_id"] == ce_id
        assert row["stage1_reused"] == "True", f"{method} trained its own stage 1"
        assert record[run_id]["job_id"].split("_")[0] != ce_job.split("_")[0]  # the second array


def test_preempted_runs_resume_and_match_uninterrupted_ones(slurm_cluster, fashion_mnist, tmp_path):
    # Long enough (in epochs) that the interruption lands between two epoch checkpoints.
    flags = ["--methods", "ce", "--seeds", "0,1", "--epochs", "8", "--n-max", "60", "--set", "eval_every=100"]
    interrupted, reference = tmp_path / "interrupted", tmp_path / "reference"
    assert run_on_slurm(interrupted, *flags) == 0
    record = submissions(interrupted)
    by_seed = {json.loads((interrupted / run_id / "spec.json").read_text())["seed"]: run_id for run_id in record}
    # seed 0: submitit's own signal (what Slurm sends before a time limit, or a pre-emption
    # warning): the job checkpoints itself and asks for the requeue.
    # seed 1: the scheduler requeues it (pre-emption with PreemptMode=REQUEUE): the job is
    # killed and runs again from its submitted call.
    interrupt = {by_seed[0]: ["scancel", "--signal=USR2"], by_seed[1]: ["scontrol", "requeue"]}

    def job_log(run_id) -> str:
        return "".join(p.read_text() for p in (interrupted / "slurm" / record[run_id]["job_id"]).glob("*_log.out"))

    def interrupt_each_after_its_first_checkpoint():
        # the job log shows the epoch line while the job is still running (no result yet)
        for run_id in [r for r in interrupt if (interrupted / r / "checkpoint.pt").exists()
                       and "epoch 1/8" in job_log(r)]:
            assert not (interrupted / run_id / "result.csv").exists(), "the run ended before it was interrupted"
            subprocess.run([*interrupt.pop(run_id), record[run_id]["job_id"]], check=True)
        return not interrupt

    _wait_for(interrupt_each_after_its_first_checkpoint, "both runs' first epoch checkpoints")
    _wait_for(lambda: set(scheduler_states(interrupted).values()) == {"requeued"}, "both runs to be requeued")
    assert run_on_slurm(reference, *flags) == 0
    # the re-run finds both interrupted runs still in the queue: it submits nothing and waits
    assert run_on_slurm(interrupted, *flags, "--wait") == 0
    assert submissions(interrupted) == record
    assert run_on_slurm(reference, *flags, "--wait") == 0

    for seed, run_id in by_seed.items():
        log = job_log(run_id)
        resumed = re.findall(r"resuming from epoch (\d+) of 8", log)
        assert resumed and 1 <= int(resumed[0]) < 8, f"seed {seed} did not resume from a mid-run checkpoint"
        assert "epoch 8/8" in log  # one line per epoch, through the requeue
        got, want = RunStore(interrupted), RunStore(reference)
        assert got.read_result(run_id)["top1"] == want.read_result(run_id)["top1"]
        assert got.read_per_class(run_id) == want.read_per_class(run_id)


def _wait_for(condition, what, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(0.1)
