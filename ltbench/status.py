"""`ltbench status`: every run of a results dir, what state it is in and why.

Reads the results dir through ltbench.results_dir, as the report does, so a run this lists
as corrupt is one the report leaves out. Imports neither torch nor the trainer.
"""

from rich.markup import escape
from rich.table import Table

from ltbench import run_lock
from ltbench.display import accuracy, console, wide
from ltbench.errors import CorruptFile
from ltbench.launch.slurm_queue import job_logs, scheduler_states
from ltbench.migrate import migrate_store
from ltbench.results_dir import ResultsDir
from ltbench.store import SET_ASIDE


def partial_progress(results: ResultsDir, run_id: str, epochs: str) -> str:
    """How far a partial run got, from its history: its last finished epoch, and its last
    evaluated top-1 when there is one."""
    history = results.read_history(run_id)
    if not history:
        return "started, no epoch finished"
    last = history[-1]
    evaluated = [row for row in history if row.get("top1")]
    top1 = f", top-1 {accuracy(evaluated[-1]['top1'])}% at epoch {evaluated[-1]['epoch']}" if evaluated else ""
    return f"epoch {last['epoch']} of {epochs}{top1}"


def status(results_dir) -> int:
    results = ResultsDir(results_dir)
    results.ensure_readable()
    migrate_store(results.root, log=console.print)
    run_ids = results.run_ids()
    if not run_ids:
        console.print(f"no runs in {results_dir}")
        return 0
    scheduler, logs = scheduler_states(results_dir), job_logs(results_dir)
    table = Table(title=escape(f"Runs in {results_dir}"))
    for col in ("run id", "method", "dataset", "IF", "seed", "preset", "epochs", "state", "top-1 %", "detail"):
        table.add_column(col, overflow="fold")  # a long name is wrapped, never cut to an ellipsis
    counts, lines = {}, []
    for run_id in run_ids:
        (state, why), top1, detail = results.inspect(run_id), "", ""
        try:
            spec = results.read_spec(run_id)
            key = (spec.method, spec.dataset, spec.imbalance_factor, spec.seed)
            label = (spec.method, spec.dataset, f"{spec.imbalance_factor:g}", str(spec.seed), spec.preset,
                     str(spec.epochs))
        except CorruptFile as exc:
            key, label, state, why = ("~",), ("?",) * 6, "corrupt", str(exc)
        if state in ("done", "failed"):
            row = results.read_result(run_id)
            top1 = accuracy(row["top1"]) if row["top1"] else ""
            if state == "failed":
                job_log = f"; job log: {logs[run_id]}" if run_id in logs else ""
                detail = f"{row['error']} (log: {results.run_dir(run_id) / 'error.log'}{job_log})"
        elif state == "corrupt":
            detail = f"{why}; a rerun of the sweep moves the folder to {results.root / SET_ASIDE}/ and redoes the run"
        elif state == "partial":
            detail = partial_progress(results, run_id, label[-1])
            holder = run_lock.holder_pid(results.run_dir(run_id))
            detail += f"; training now (pid {holder})" if holder is not None else ""
        # scheduler_states leaves out runs whose current result is in the store, so it wins:
        # a retried failure keeps its old row until the new job starts
        if run_id in scheduler:
            state = scheduler[run_id]
            if state == "lost":
                state, detail = "failed", ("its Slurm job ended without a result (killed, cancelled, "
                                           f"out of memory?); log: {logs.get(run_id, '?')}")
        counts[state] = counts.get(state, 0) + 1
        lines.append((key, run_id, (run_id, *label, state, top1, detail)))
    # by what a run is, not by its hash: a method's seeds side by side
    for _, _, cells in sorted(lines, key=lambda line: (line[0], line[1])):
        table.add_row(*(escape(cell) for cell in cells))  # a crafted file's text is shown, never read as markup
    wide().print(table)
    console.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return 0
