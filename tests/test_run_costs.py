"""What a run records about itself: its peak memory is its own, not the largest of the runs
the process ran before it; a write that fails names the file or folder it was for."""

import errno
import os
import re
import resource
import subprocess
import sys

import pytest

from ltbench.cli import main
from ltbench.store import RunStore
from ltbench.sweep import resolve

SMOKE = ["run", "--dataset", "fashion_mnist_lt", "--if", "100", "--preset", "smoke", "--device", "cpu"]


def test_each_run_of_a_sweep_records_its_own_peak_memory(tmp_path, fashion_mnist, capsys):
    results = tmp_path / "results"
    # ce, then a hybrid at four times the batch (two views each: far more activations), then ce
    # again, in this one process
    for method, seed, extra in [("ce", 0, []), ("psc_hybrid", 0, ["--batch-size", "256"]), ("ce", 1, [])]:
        assert main(SMOKE + ["--methods", method, "--seeds", str(seed), "--results-dir", str(results), *extra]) == 0
        out = capsys.readouterr().out
        assert re.search(r"\n  done, top-1 \d+\.\d\d %\n", out), out  # --jobs 1 says each run's end
        assert f"next: ltbench report --results-dir {results}" in out.replace("\n", ""), out
    store = RunStore(results)
    rows = {(row["method"], int(row["seed"])): row for row in map(store.read_result, store.run_ids())}
    assert {row["peak_mem_measure"] for row in rows.values()} == {"rss"}  # Linux: the peak since the run began
    first, hybrid, again = (float(rows[key]["peak_mem_mb"]) for key in [("ce", 0), ("psc_hybrid", 0), ("ce", 1)])
    assert hybrid > first + 100, rows
    assert again == pytest.approx(first, abs=0.25 * (hybrid - first)), (first, hybrid, again)


def run_in_child(results, *extra, limit_bytes=None) -> subprocess.CompletedProcess:
    def limit():
        if limit_bytes is not None:  # files past it fail to write, for root as for anyone
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return subprocess.run([sys.executable, "-m", "ltbench.cli", *SMOKE, "--methods", "ce", "--results-dir", str(results),
                           *extra], capture_output=True, text=True, preexec_fn=limit, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def failed_row(results) -> dict:
    store = RunStore(results)
    [run_id] = store.run_ids()
    row = store.read_result(run_id)
    assert row["status"] == "failed", row
    return row


def test_a_write_that_fails_for_want_of_space_names_its_file(tmp_path, fashion_mnist):
    # a full disk's error (ENOSPC) names no file, as does this one: a file over the process's
    # size limit (EFBIG), which stops the checkpoint but not the small files
    results = tmp_path / "results"
    done = run_in_child(results, limit_bytes=64 * 1024)
    row = failed_row(results)
    checkpoint = results / row["run_id"] / "checkpoint.pt"
    assert row["error"] == f"OSError: [Errno {errno.EFBIG}] File too large: '{checkpoint}'", done.stdout
    assert str(checkpoint) in done.stdout


def test_when_not_even_the_failure_can_be_written_the_first_failed_write_is_named(tmp_path, fashion_mnist):
    results = tmp_path / "results"
    done = run_in_child(results, limit_bytes=1024)  # the spec fits; the checkpoint and the error log do not
    [run_id] = RunStore(results).run_ids()
    assert done.returncode == 2, done.stderr
    assert f"ltbench: error: File too large: {results / run_id / 'checkpoint.pt'}" in done.stderr, done.stderr
    assert RunStore(results).state(run_id) == "partial"


def test_a_write_over_a_folder_names_the_file_not_its_temporary_name(tmp_path, fashion_mnist):
    results = tmp_path / "results"
    spec = resolve("ce", "fashion_mnist_lt", 100, 0, "smoke")
    (results / spec.run_id / "history.csv").mkdir(parents=True)  # a folder where a file goes
    run_in_child(results)
    history = results / spec.run_id / "history.csv"
    assert failed_row(results)["error"] == f"IsADirectoryError: [Errno {errno.EISDIR}] Is a directory: '{history}'"
    assert not [p.name for p in (results / spec.run_id).iterdir() if p.name.endswith(".tmp")]


def test_a_read_only_run_folder_is_named(tmp_path, fashion_mnist):
    results = tmp_path / "results"
    spec = resolve("ce", "fashion_mnist_lt", 100, 0, "smoke")
    folder = results / spec.run_id
    folder.mkdir(parents=True)
    (folder / "train.lock").touch()  # the lock is taken; the first write in the folder fails
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("this user writes into read-only folders (root): nothing refuses the write")
        done = run_in_child(results)
    finally:
        folder.chmod(0o755)
    assert done.returncode == 2 and f"Permission denied: {folder}" in done.stderr, done.stderr
    assert ".tmp" not in done.stderr


def test_evaluate_adds_predictions_to_finished_runs_once(tmp_path, fashion_mnist, capsys):
    from ltbench.report.calibration import collect
    from ltbench.report.load import load_results

    results = tmp_path / "results"
    assert main(SMOKE + ["--methods", "ce,crt", "--results-dir", str(results)]) == 0  # no save_predictions
    assert load_results(results).predictions == {}
    capsys.readouterr()
    assert main(["evaluate", "--results-dir", str(results), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "2 finished runs, 0 with predictions already, 2 to evaluate" in out, out
    assert out.count("predictions written, top-1") == 2, out
    store = RunStore(results)
    written = {run_id: (store.run_dir(run_id) / "predictions.npz").stat().st_mtime_ns for run_id in store.run_ids()}
    loaded = load_results(results)
    assert sorted(loaded.predictions) == sorted(written)
    # the report's calibration, from what evaluate wrote: accuracy as each result row has it
    per_run = collect(loaded.runs.assign(label=loaded.runs["method"]), loaded.predictions).per_run.set_index("run_id")
    for run_id in written:
        assert per_run.loc[run_id, "accuracy"] == pytest.approx(float(store.read_result(run_id)["top1"]), abs=0.01)
        assert 0 <= per_run.loc[run_id, "ece"] <= 100
    assert main(["evaluate", "--results-dir", str(results), "--device", "cpu"]) == 0  # again: nothing to do
    assert "2 with predictions already, 0 to evaluate" in capsys.readouterr().out
    assert {run_id: (store.run_dir(run_id) / "predictions.npz").stat().st_mtime_ns for run_id in written} == written
