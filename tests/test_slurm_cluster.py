"""The test cluster itself: submitit can submit to it, and a job survives a requeue."""

import operator
import subprocess
import time

import pytest
import submitit

pytestmark = [pytest.mark.slurm, pytest.mark.slow]  # the session starts a Slurm cluster; a requeued job waits 10 s


def test_submitit_job_runs_on_the_cluster(slurm_cluster, tmp_path):
    executor = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    executor.update_parameters(timeout_min=5, cpus_per_task=1, slurm_partition="debug")
    # a function the job can import: one defined in this test module is not on its path
    job = executor.submit(operator.add, 2, 2)
    # No accounting on the test cluster: sacct fails and submitit falls back on the
    # result file, which is all `result()` needs.
    assert job.result() == 4


def test_scontrol_requeue_restarts_a_batch_job(slurm_cluster, tmp_path):
    log = tmp_path / "job.log"
    script = 'echo "start restart=${SLURM_RESTART_COUNT:-0}"; sleep 30'
    job_id = subprocess.run(
        ["sbatch", "--parsable", f"--output={log}", "--open-mode=append", "--wrap", script],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    try:
        _wait_for(lambda: "restart=0" in _read(log), "the job to start")
        subprocess.run(["scontrol", "requeue", job_id], check=True)
        _wait_for(lambda: "restart=1" in _read(log), "the requeued job to start again", 60)
    finally:
        subprocess.run(["scancel", job_id], check=False)


def _read(path):
    return path.read_text() if path.exists() else ""


def _wait_for(condition, what, timeout_s=30):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(0.2)
