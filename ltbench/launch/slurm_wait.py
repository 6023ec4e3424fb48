"""`--wait`: follow submitted runs until none is queued or running, then say how each ended.

The store says which runs finished and how; squeue says which are still to come. Neither
sacct nor submitit's result files are needed, so this works on clusters without accounting
and also notices a job that died without writing a result.
"""

import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ltbench.launch.slurm_queue import SUBMISSIONS, SubmissionRecord, outcome, submission_states
from ltbench.progress import console
from ltbench.store import RunStore

POLL_SECONDS = 2.0


def wait_for(run_ids: list[str], results_dir: Path, poll_seconds: float = POLL_SECONDS, record_name: str = SUBMISSIONS,
             ended=outcome) -> int:
    """Blocks until none of the runs is queued or running; returns 0 if all are done, else 1.
    `record_name` and `ended`: which jobs (ltbench.launch.slurm_queue.SubmissionRecord), and
    how the store says one of them ended."""
    record = SubmissionRecord(results_dir, record_name).read()
    submissions = {run_id: record[run_id] for run_id in run_ids if run_id in record}
    store = RunStore(results_dir)
    columns = (TextColumn("[bold]Slurm"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[counts]}"),
               TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("runs", total=len(submissions), counts="")
            while True:
                states = submission_states(submissions, store, ended)
                finished = sum(state in ("done", "failed", "lost") for state in states.values())
                progress.update(task, completed=finished, counts=_counts(states))
                if finished == len(states):
                    break
                time.sleep(poll_seconds)
    except KeyboardInterrupt:
        console.print(f"stopped waiting; the jobs go on. Follow them with: ltbench status --results-dir {results_dir}")
        return 130
    console.print(summary(states, submissions, store))
    return 0 if all(state == "done" for state in states.values()) else 1


def _counts(states: dict[str, str]) -> str:
    order = ("pending", "running", "requeued", "suspended", "done", "failed", "lost")
    return "  ".join(f"{n} {s}" for s in order if (n := sum(v == s for v in states.values())))


def summary(states: dict[str, str], submissions: dict, store: RunStore) -> Table:
    table = Table(title="Slurm runs")
    for column in ("run id", "job", "state", "top-1 %", "detail"):
        table.add_column(column)
    for run_id, state in states.items():
        submission, top1, detail = submissions[run_id], "", ""
        if state in ("done", "failed"):
            row = store.read_result(run_id)
            top1 = row["top1"]
            if state == "failed":
                detail = f"{row['error']} (log: {store.run_dir(run_id) / 'error.log'})"
        elif state == "lost":
            detail = f"the job ended without writing a result (killed? time limit?); log: {submission.stderr}"
        table.add_row(run_id, submission.job_id, state, top1, detail)
    return table
