"""What a run records about its own cost: its peak memory is its own, not the largest of the
runs the process ran before it."""

import pytest

from ltbench.cli import main
from ltbench.store import RunStore

SMOKE = ["run", "--dataset", "fashion_mnist_lt", "--if", "100", "--preset", "smoke", "--device", "cpu"]


def test_each_run_of_a_sweep_records_its_own_peak_memory(tmp_path, fashion_mnist):
    results = tmp_path / "results"
    # ce, then a hybrid at four times the batch (two views each: far more activations), then ce
    # again, in this one process
    for method, seed, extra in [("ce", 0, []), ("psc_hybrid", 0, ["--batch-size", "256"]), ("ce", 1, [])]:
        assert main(SMOKE + ["--methods", method, "--seeds", str(seed), "--results-dir", str(results), *extra]) == 0
    store = RunStore(results)
    rows = {(row["method"], int(row["seed"])): row for row in map(store.read_result, store.run_ids())}
    assert {row["peak_mem_measure"] for row in rows.values()} == {"rss"}  # Linux: the peak since the run began
    first, hybrid, again = (float(rows[key]["peak_mem_mb"]) for key in [("ce", 0), ("psc_hybrid", 0), ("ce", 1)])
    assert hybrid > first + 100, rows
    assert again == pytest.approx(first, abs=0.25 * (hybrid - first)), (first, hybrid, again)
