"""What a finished sweep left, for tests that compare two sweeps of the same grid."""

from ltbench.store import RunStore

# what a result row says about when and how fast a run went, which two sweeps of one grid
# need not share
TIMING = {"wall_s", "images_per_s", "peak_mem_mb", "started_at", "finished_at", "stage1_wall_s", "stage1_reused",
          "teacher_wall_s", "teacher_reused"}


def finished_runs(results, ignore=frozenset()) -> dict:
    """run_id -> (result row less TIMING and `ignore`, per-class rows); every run must be done."""
    store = RunStore(results)
    runs = {}
    for run_id in store.run_ids():
        row = store.read_result(run_id)
        assert row is not None and row["status"] == "done", (run_id, row)
        kept = {k: v for k, v in row.items() if k not in TIMING | set(ignore)}
        runs[run_id] = (kept, store.read_per_class(run_id))
    return runs
