"""What Slurm knows about submitted runs: the submission record kept under the results dir,
and `squeue` for the jobs that are still queued or running.

The record (`<results>/slurm/submissions.json`) maps each run id to its latest job and log
files, so `ltbench status` and a re-run can ask the scheduler about exactly those jobs.
"""

import fcntl
import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from ltbench.display import console
from ltbench.errors import UserError
from ltbench.store import CorruptFile, RunStore, atomic_write_bytes, make_dirs

CLIENT_COMMANDS = ("sbatch", "squeue", "srun", "sinfo")
NO_SLURM_HINT = ("--launcher slurm needs Slurm's client commands (sbatch, squeue, srun, sinfo): run on a machine "
                 "of the cluster, or start the single-node test cluster with `scripts/slurm_cluster.sh start` "
                 "and export the SLURM_CONF it prints")
NO_CONTROLLER_HINT = "is slurmctld up and SLURM_CONF right? (`scripts/slurm_cluster.sh status` for the test cluster)"

# squeue keeps listing a job for a while (MinJobAge) after it ends; these mean it is over.
ENDED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
REQUEUED = {"REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "SPECIAL_EXIT", "PREEMPTED"}


class SlurmUnavailable(UserError):
    pass


@dataclass(frozen=True)
class Submission:
    job_id: str  # 123_4 for a task of array 123
    stdout: str
    stderr: str
    submitted_at: str  # UTC ISO time, comparable with a result row's finished_at


def slurm_command(*argv: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise SlurmUnavailable(f"{argv[0]} not found on PATH", hint=NO_SLURM_HINT) from None
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(f"`{' '.join(argv)}` got no answer within 60 s", hint=NO_CONTROLLER_HINT) from None
    if done.returncode != 0:
        raise SlurmUnavailable(f"`{' '.join(argv)}` failed: {done.stderr.strip() or done.stdout.strip()}",
                               hint=NO_CONTROLLER_HINT)
    return done.stdout


def check_cluster(partition: str | None) -> None:
    """Fail before anything is submitted: no client commands, no controller, or a partition
    the cluster does not have (several may be given, comma-separated, as sbatch allows)."""
    missing = [cmd for cmd in CLIENT_COMMANDS if shutil.which(cmd) is None]
    if missing:
        raise SlurmUnavailable(f"{', '.join(missing)} not found on PATH", hint=NO_SLURM_HINT)
    known = set(slurm_command("sinfo", "--all", "--noheader", "--format=%R").split())
    for name in (partition or "").split(","):
        if name and name not in known:
            raise UserError(f"unknown Slurm partition '{name}'",
                            hint=f"partitions on this cluster: {', '.join(sorted(known))} (from sinfo)")


def queued_states(job_ids) -> dict[str, str]:
    """Job id -> pending | running | requeued | suspended, for the jobs that are still to run
    or running; a job that has ended, or that the scheduler has forgotten, is left out."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    if not arrays:
        return {}
    try:
        out = slurm_command("squeue", "--noheader", "--array", f"--jobs={','.join(arrays)}",
                            "--Format=JobArrayID:|,State:|,RestartCnt:|")
    except SlurmUnavailable as exc:
        # squeue refuses a list in which it knows no job at all: every one has ended
        if "Invalid job id" in str(exc):
            return {}
        raise
    states = {}
    for line in out.splitlines():
        job_id, state, restarts = (part.strip() for part in line.split("|")[:3])
        if state not in ENDED:
            states[job_id] = run_state(state, int(restarts or 0))
    return states


def run_state(slurm_state: str, restarts: int) -> str:
    if slurm_state in REQUEUED or (slurm_state == "PENDING" and restarts > 0):
        return "requeued"
    if slurm_state == "PENDING":
        return "pending"
    if slurm_state in ("SUSPENDED", "STOPPED"):
        return "suspended"
    return "running"


SUBMISSIONS, EVALUATIONS = "submissions.json", "evaluations.json"  # the training jobs', the evaluation jobs'


class SubmissionRecord:
    """`<results>/slurm/submissions.json`: run id -> its latest Submission (the jobs that
    train runs; `evaluations.json` keeps those of `ltbench evaluate` apart, so a finished
    run's evaluation is never taken for its training)."""

    def __init__(self, results_dir, name: str = SUBMISSIONS):
        self.path = Path(results_dir) / "slurm" / name

    def read(self) -> dict[str, Submission]:
        if not self.path.exists():
            return {}
        try:
            return {run_id: Submission(**entry) for run_id, entry in json.loads(self.path.read_text()).items()}
        except (ValueError, TypeError, AttributeError) as exc:  # UnicodeDecodeError is a ValueError
            raise CorruptFile(f"{self.path} is not ltbench's record of Slurm submissions ({exc})") from None

    def add(self, submissions: dict[str, Submission]) -> None:
        with self._locked():
            merged = {run_id: asdict(s) for run_id, s in {**self.read(), **submissions}.items()}
            atomic_write_bytes(self.path, json.dumps(merged, indent=1, sort_keys=True).encode())

    @contextmanager
    def _locked(self):
        # two sweeps submitted into one results dir at once must not drop each other's entries
        make_dirs(self.path.parent)
        with open(os.open(self.path.with_suffix(".lock"), os.O_WRONLY | os.O_CREAT, 0o644), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def outcome(store: RunStore, run_id: str, submission: Submission) -> str | None:
    """done or failed when the run's result row comes from this submission (or a later run,
    e.g. a local one); None when the job has left no result of its own."""
    try:
        row = store.read_result(run_id)
    except CorruptFile:
        return None
    if row is None:
        return None
    if row["slurm_job_id"] == submission.job_id or row["finished_at"] >= submission.submitted_at:
        return row["status"]
    return None


def submission_states(submissions: dict[str, Submission], store: RunStore, ended=outcome) -> dict[str, str]:
    """Run id -> pending | running | requeued | suspended while its job is in the queue, then
    done | failed from its result (`ended`: how the store says it), or lost: the job ended
    without writing one (killed for memory, cancelled, node failure; its log says why)."""
    queued = queued_states(s.job_id for s in submissions.values())
    return {
        run_id: queued.get(submission.job_id) or ended(store, run_id, submission) or "lost"
        for run_id, submission in submissions.items()
    }


# `ltbench status` asks these, so they import neither submitit nor torch
def scheduler_states(results_dir) -> dict[str, str]:
    """Run id -> pending | running | requeued | suspended | lost (see submission_states) for
    the runs submitted to Slurm whose result the store does not hold yet; {} when there is no
    scheduler to ask, so `ltbench status` still shows what the store knows."""
    record = SubmissionRecord(results_dir).read()
    if not record or shutil.which("squeue") is None:
        return {}
    try:
        states = submission_states(record, RunStore(results_dir))
    except SlurmUnavailable as exc:
        console.print(f"[yellow]Slurm not asked[/yellow]: {exc}")
        return {}
    return {run_id: state for run_id, state in states.items() if state not in ("done", "failed")}


def job_logs(results_dir) -> dict[str, str]:
    """Run id -> the stderr log of its latest Slurm job."""
    return {run_id: s.stderr for run_id, s in SubmissionRecord(results_dir).read().items()}
