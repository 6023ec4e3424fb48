"""`ltbench evaluate` launched as `ltbench run` launches runs: `--jobs N` gives the files
`--jobs 1` gives, each evaluation holds its run's lock, and a finished evaluation is not redone."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ltbench.results_schema import PREDICTIONS_FILE
from ltbench.store import RunStore

from test_jobs import lock_holder

ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
# one-stage runs and a two-stage one, whose evaluation reads its stage-1 CE run's checkpoint
SWEEP = ["run", "--methods", "ce,crt,focal", "--dataset", "fashion_mnist_lt", "--if", "100", "--preset", "smoke",
         "--device", "cpu"]


def ltbench(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ltbench.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=ONE_THREAD)


def finished(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fashion_mnist):
    """A results dir of three finished runs trained without save_predictions."""
    results = tmp_path_factory.mktemp("trained") / "results"
    finished(ltbench(*SWEEP, "--results-dir", str(results)))
    assert not list(results.glob(f"*/{PREDICTIONS_FILE}"))
    return results


@pytest.fixture(scope="module")
def one_at_a_time(trained, tmp_path_factory):
    results = tmp_path_factory.mktemp("jobs1") / "results"
    shutil.copytree(trained, results)
    out = finished(ltbench("evaluate", "--results-dir", str(results), "--device", "cpu", "--jobs", "1"))
    assert out.count("predictions written") == 3, out
    return results


def run_files(results) -> dict:
    """run id -> {file name: its bytes, or a predictions file's arrays}."""
    store = RunStore(results)
    files = {}
    for run_id in store.run_ids():
        files[run_id] = {}
        for path in sorted(store.run_dir(run_id).iterdir()):
            if path.name == PREDICTIONS_FILE:  # a zip: its members carry the time they were written
                with np.load(path) as arrays:
                    files[run_id][path.name] = {key: arrays[key].tolist() for key in sorted(arrays.files)}
            else:
                files[run_id][path.name] = path.read_bytes()
    return files


@pytest.mark.slow  # trains three smoke runs, then evaluates each on the 10,000 test images
def test_jobs_2_gives_the_files_of_jobs_1_and_waits_for_a_run_another_process_holds(trained, one_at_a_time,
                                                                                      tmp_path):
    results = tmp_path / "results"
    shutil.copytree(trained, results)
    store = RunStore(results)
    held = next(run_id for run_id in store.run_ids() if store.read_spec(run_id).method == "focal")
    holder = lock_holder(store.run_dir(held))
    try:
        proc = ltbench("evaluate", "--results-dir", str(results), "--device", "cpu", "--jobs", "2")
        lines = []
        for line in proc.stdout:
            lines.append(line)
            # the held run is put back in the queue, and evaluated once the holder lets it go
            if f"({held}): another process is evaluating it; back to it after the rest of the queue" in line:
                assert not (store.run_dir(held) / PREDICTIONS_FILE).exists()
                holder.kill()
    finally:
        holder.kill()
        holder.wait()
    proc.wait(timeout=600)
    out = "".join(lines)
    assert proc.returncode == 0, out
    assert "2 jobs at once on cpu, 1 CPU thread(s) each" in out
    assert "back to it after the rest of the queue" in out, out
    assert out.count("): done, top-1") == 3, out
    assert run_files(results) == run_files(one_at_a_time)
    # again: every run has its predictions, and nothing is evaluated or written twice
    written = {p: p.stat().st_mtime_ns for p in results.glob(f"*/{PREDICTIONS_FILE}")}
    again = finished(ltbench("evaluate", "--results-dir", str(results), "--device", "cpu", "--jobs", "2"))
    assert "3 finished runs, 3 with predictions already, 0 to evaluate" in again, again
    assert {p: p.stat().st_mtime_ns for p in written} == written


def test_slurm_flags_without_the_slurm_launcher_are_refused(tmp_path, capsys):
    from ltbench.cli import main

    results = str(tmp_path / "results")
    assert main(["evaluate", "--results-dir", results, "--slurm-time", "5"]) == 2
    assert "--slurm-time: Slurm option(s), read only with --launcher slurm" in capsys.readouterr().err
    assert main(["evaluate", "--results-dir", results, "--launcher", "slurm", "--jobs", "2"]) == 2
    assert "--jobs and --devices are options of the local launcher" in capsys.readouterr().err
    assert main(["evaluate", "--results-dir", results, "--jobs", "0"]) == 2
    assert "--jobs '0' is not a whole number of at least 1" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
