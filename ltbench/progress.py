"""How a run reports its progress: rich bars on a terminal, one plain line per epoch in a log
(a Slurm job's, a redirected run's), optionally TensorBoard events; and result tables."""

import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ltbench.display import accuracy, console, number
from ltbench.train import Reporter


class RichReporter(Reporter):
    def __init__(self, console: Console = console):
        self.console = console
        self.progress = None

    def start(self, label, epochs, steps, start_epoch):
        self.steps = steps
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, transient=False,
        )
        self.progress.start()
        self.epoch_task = self.progress.add_task(f"{label} epochs", total=epochs, completed=start_epoch, info="")
        self.step_task = self.progress.add_task("  steps", total=steps, info="")

    def step(self, epoch, step, loss, images_per_s):
        self.progress.update(self.step_task, completed=step + 1,
                             info=f"loss {loss:.4f}  {images_per_s:,.0f} img/s")

    def epoch_end(self, record):
        info = f"top-1 {record['top1']:.2f}%" if record.get("top1") is not None else ""
        self.progress.update(self.epoch_task, completed=record["epoch"], info=info)
        self.progress.reset(self.step_task, total=self.steps)

    def finish(self):
        if self.progress is not None:
            self.progress.stop()


class PlainReporter(Reporter):
    """One line per epoch, flushed as it is written, for output that is not a terminal: a job
    log shows how far a run is while it runs (rich's bars print nothing there until the end)."""

    def __init__(self, stream=None):
        self.stream = stream

    def start(self, label, epochs, steps, start_epoch):
        self.label, self.epochs = label, epochs
        self.last = time.perf_counter()
        self.plain, self.evaluated = [], {}  # seconds of epochs without a test evaluation; epoch -> seconds

    def epoch_end(self, record):
        epoch, now = record["epoch"], time.perf_counter()
        spent, self.last = now - self.last, now
        if record.get("top1") is not None:
            self.evaluated[epoch] = spent
        else:
            self.plain.append(spent)
        parts = [f"{self.label}  epoch {epoch}/{self.epochs}", f"loss {record['loss']:.4f}", f"lr {record['lr']:.4g}"]
        if record.get("top1") is not None:
            parts.append(f"top-1 {record['top1']:.2f}%")
        left, complete = remaining_seconds(epoch, self.epochs, self.plain, self.evaluated)
        parts += [f"{record['images_per_s']:,.0f} img/s", f"ETA {duration(left)}" + ("" if complete else " + evaluation")]
        print("  ".join(parts), file=self.stream or sys.stdout, flush=True)


def remaining_seconds(epoch: int, epochs: int, plain: list[float], evaluated: dict[int, float]) -> tuple[float, bool]:
    """Seconds left after `epoch`, from this process's epochs so far: each epoch left at the
    mean of those without a test evaluation, and each evaluation left (every k-th epoch, k
    the first evaluated epoch seen, and always the last) at what one added. False with it
    where no evaluation has been timed yet: the figure is then training only."""
    if epoch >= epochs:
        return 0.0, True
    per_epoch = sum(plain) / len(plain) if plain else min(evaluated.values())
    left = (epochs - epoch) * per_epoch
    if not evaluated:
        return left, False
    every = min(evaluated)
    evaluations = epochs // every - epoch // every + (epochs % every != 0)
    per_evaluation = max(0.0, sum(evaluated.values()) / len(evaluated) - per_epoch)
    return left + evaluations * per_evaluation, True


def duration(seconds: float) -> str:
    """H:MM:SS."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class TensorBoardReporter(Reporter):
    """The history rows as TensorBoard scalars in `log_dir`, one step per epoch. history.csv
    stays the record; this is a view of it. TensorBoard is imported only when one is made."""

    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.writer = None

    def start(self, label, epochs, steps, start_epoch):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            from ltbench.errors import UserError

            raise UserError("log_tensorboard=true needs the tensorboard package, which is not installed",
                            hint="pip install 'ltbench[tensorboard]' (or pip install tensorboard), or leave "
                            "log_tensorboard off: history.csv holds the same figures") from None
        # a resumed run drops the events of epochs after its checkpoint, as it drops the epochs
        self.writer = SummaryWriter(str(self.log_dir), purge_step=start_epoch + 1)

    def epoch_end(self, record):
        for name, value in record.items():
            if name != "epoch" and value is not None:
                self.writer.add_scalar(name, value, record["epoch"])
        self.writer.flush()

    def finish(self):
        if self.writer is not None:
            self.writer.close()


class Reporters(Reporter):
    """Several reporters as one."""

    def __init__(self, *reporters: Reporter):
        self.reporters = reporters

    def start(self, *args):
        for r in self.reporters:
            r.start(*args)

    def step(self, *args):
        for r in self.reporters:
            r.step(*args)

    def epoch_end(self, record):
        for r in self.reporters:
            r.epoch_end(record)

    def finish(self):
        for r in self.reporters:
            r.finish()


def reporter_for_output(console: Console = console) -> Reporter:
    """Bars on a terminal, one line per epoch anywhere else."""
    return RichReporter(console) if console.is_terminal else PlainReporter()




def results_table(rows: list[dict], title: str = "Results") -> Table:
    """One line per run: top-1 and many/medium/few (an empty group shows as —)."""
    table = Table(title=title)
    for name, justify in [("method", "left"), ("dataset", "left"), ("IF", "right"), ("seed", "right"),
                          ("top-1 %", "right"), ("many", "right"), ("medium", "right"), ("few", "right"),
                          ("best* %", "right"), ("img/s", "right"), ("wall s", "right"), ("status", "left")]:
        table.add_column(name, justify=justify)
    for r in rows:
        table.add_row(r["method"], r["dataset"], number(r["imbalance_factor"], 0), str(r["seed"]),
                      accuracy(r["top1"]), accuracy(r["many"]), accuracy(r["medium"]), accuracy(r["few"]),
                      accuracy(r["top1_best"]),
                      number(r["images_per_s"], 0), number(r["wall_s"], 1), r["status"] or "")
    table.caption = "top-1 is the last epoch; best* is the best epoch chosen on the test set (for reference only)"
    return table
