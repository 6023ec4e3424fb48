"""The local launcher: runs specs one after another in this process (`ltbench run --jobs 1`;
ltbench.launch.jobs runs several at once)."""

from ltbench.run_context import RunContext
from ltbench.shared_store import open_store
from ltbench.runner import execute
from ltbench.spec import RunSpec
from ltbench.store import RunStore


def run_local(specs: list[RunSpec], results_dir, device: str = "auto", reporter_factory=None, log=print,
              context: RunContext | None = None) -> dict:
    """Run specs one after another in this process; returns run_id -> status. A run another
    process is training (ltbench.run_lock) is skipped, and waited for once the rest are done."""
    statuses, busy = {}, []
    for i, spec in enumerate(specs, 1):
        if open_store(results_dir).state(spec.run_id) == "done":
            log(f"[{i}/{len(specs)}] {spec.label} ({spec.run_id}): done meanwhile, as another run's stage 1 "
                "or by another process")
            statuses[spec.run_id] = "done"
            continue
        log(f"[{i}/{len(specs)}] {spec.label} ({spec.run_id})")
        statuses[spec.run_id] = _execute(spec, results_dir, device, reporter_factory, log, context, wait=False)
        if statuses[spec.run_id] == "busy":
            log("  another process is training it; back to it once the rest are done")
            busy.append(spec)
    for spec in busy:
        # the holder may end without a result (killed): this process then trains it
        statuses[spec.run_id] = _execute(spec, results_dir, device, reporter_factory, log, context, wait=True)
    return statuses


def _execute(spec: RunSpec, results_dir, device: str, reporter_factory, log, context, wait: bool) -> str:
    reporter = reporter_factory() if reporter_factory else None
    status = execute(spec, results_dir, device, reporter, context, log=log, wait=wait)
    if status == "failed":
        row = RunStore(results_dir).read_result(spec.run_id)
        log(f"  failed: {row['error']} (see {RunStore(results_dir).run_dir(spec.run_id) / 'error.log'})")
    elif status == "done":
        log(f"  done, top-1 {float(RunStore(results_dir).read_result(spec.run_id)['top1']):.2f} %")
    return status
