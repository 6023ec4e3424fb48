"""The local launcher: runs specs one after another in this process."""

from ltbench.shared_store import open_store
from ltbench.runner import execute
from ltbench.spec import RunSpec
from ltbench.store import RunStore


def run_local(specs: list[RunSpec], results_dir, device: str = "auto", reporter_factory=None, log=print) -> dict:
    """Run specs one after another in this process; returns run_id -> status."""
    statuses = {}
    for i, spec in enumerate(specs, 1):
        if open_store(results_dir).state(spec.run_id) == "done":
            log(f"[{i}/{len(specs)}] {spec.label} ({spec.run_id}): done meanwhile, as another run's stage 1")
            statuses[spec.run_id] = "done"
            continue
        log(f"[{i}/{len(specs)}] {spec.label} ({spec.run_id})")
        reporter = reporter_factory() if reporter_factory else None
        statuses[spec.run_id] = execute(spec, results_dir, device, reporter, log=log)
        if statuses[spec.run_id] == "failed":
            row = RunStore(results_dir).read_result(spec.run_id)
            log(f"  failed: {row['error']} (see {RunStore(results_dir).run_dir(spec.run_id) / 'error.log'})")
    return statuses
