"""What `ltbench run --jobs N` shows while its jobs run.

In a log (output that is not a terminal) every job writes its own lines, one per epoch, to
this process's output as it goes: each line names its run, so interleaved lines still read.
On a terminal those lines would scroll past as a jumble, so there each job writes to a file
of its own, `<results>/jobs/<run_id>.log`, and the terminal shows one line per running job,
the latest its file holds, under the launcher's own lines (started, done, failed).
"""

import time
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ltbench.progress import duration
from ltbench.store import make_dirs, owner_writes_only

LOG_DIR = "jobs"
TAIL_BYTES = 4096  # enough for a job's last line
REFRESH_PER_SECOND = 2


class PassThrough:
    """A job's output goes where this process's goes."""

    def output_for(self, run_id: str) -> Path | None:
        return None

    def started(self, job) -> None:
        pass

    def ended(self, job) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


class LiveView(PassThrough):
    """Each job's output in its own file; on the terminal a line per running job."""

    def __init__(self, console: Console, results_dir, total: int):
        self.console, self.log_dir, self.total = console, Path(results_dir) / LOG_DIR, total
        self.running: dict[str, tuple[object, float]] = {}  # run id -> (job, when it started)
        self.ended_count = 0
        self.live = None

    def output_for(self, run_id: str) -> Path:
        make_dirs(self.log_dir)
        return self.log_dir / f"{run_id}.log"

    def started(self, job) -> None:
        self.running[job.spec.run_id] = (job, time.monotonic())

    def ended(self, job) -> None:
        self.running.pop(job.spec.run_id, None)
        self.ended_count += 1

    def __enter__(self):
        # the launcher's lines print above the table (rich moves the live part down)
        self.live = Live(self, console=self.console, refresh_per_second=REFRESH_PER_SECOND, transient=True)
        self.live.start()
        return self

    def __exit__(self, *exc) -> None:
        self.live.stop()

    def __rich__(self):
        summary = Text(f"{self.ended_count} of {self.total} ended, {len(self.running)} running; each job's "
                       f"output is in {self.log_dir}/", style="dim")
        if not self.running:
            return summary
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("job", "device", "for", "latest"):
            table.add_column(column, no_wrap=column != "latest", overflow="ellipsis")
        for job, since in sorted(self.running.values(), key=lambda entry: entry[0].number):
            # Text, not markup: a line a job printed is shown as it is
            table.add_row(Text(f"[{job.number}/{self.total}] {job.spec.label}"), Text(job.device),
                          duration(time.monotonic() - since), Text(last_line(job.output) or "starting"))
        return Group(table, summary)


def open_output(path: Path):
    """A job's output file, for appending, with the store's modes: writable by its owner only,
    whatever the umask."""
    with owner_writes_only():
        return open(path, "ab")


def last_line(path: Path | None) -> str:
    """The last non-empty line of a job's output file, without its run label (the table has it)."""
    if path is None or not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - TAIL_BYTES))
        lines = [line.strip() for line in f.read().decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return ""
    label, _, rest = lines[-1].partition("  ")  # "<label>  epoch 3/200  loss ...": the plain reporter's
    return rest if rest.startswith("epoch ") else lines[-1]

