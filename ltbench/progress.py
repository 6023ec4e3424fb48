"""Rich progress bars for training (epoch, step, loss, throughput, ETA) and result tables."""

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ltbench.train import Reporter

# Wide enough for the results table when output goes to a file or CI log (rich's default
# there is 80 columns).
console = Console(width=None if Console().is_terminal else 140)


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

    def epoch_end(self, epoch, top1):
        info = f"top-1 {top1:.2f}%" if top1 is not None else ""
        self.progress.update(self.epoch_task, completed=epoch + 1, info=info)
        self.progress.reset(self.step_task, total=self.steps)

    def finish(self):
        if self.progress is not None:
            self.progress.stop()


def _fmt(value, digits=2):
    if value in (None, ""):
        return "—"
    try:
        return f"{float(value):.{digits}f}"
    except ValueError:
        return str(value)


def results_table(rows: list[dict], title: str = "Results") -> Table:
    """One line per run: top-1 and many/medium/few (an empty group shows as —)."""
    table = Table(title=title)
    for name, justify in [("method", "left"), ("dataset", "left"), ("IF", "right"), ("seed", "right"),
                          ("top-1 %", "right"), ("many", "right"), ("medium", "right"), ("few", "right"),
                          ("best* %", "right"), ("img/s", "right"), ("wall s", "right"), ("status", "left")]:
        table.add_column(name, justify=justify)
    for r in rows:
        table.add_row(r["method"], r["dataset"], _fmt(r["imbalance_factor"], 0), str(r["seed"]), _fmt(r["top1"]),
                      _fmt(r["many"]), _fmt(r["medium"]), _fmt(r["few"]), _fmt(r["top1_best"]),
                      _fmt(r["images_per_s"], 0), _fmt(r["wall_s"], 1), r["status"] or "")
    table.caption = "top-1 is the last epoch; best* is the best epoch chosen on the test set (for reference only)"
    return table
