"""`ltbench show RUN_ID`: one run's spec, provenance, result and a summary of its history.

Everything shown is read from the run's folder (spec.json, result.csv, history.csv), whose
text is escaped before rich prints it: a crafted file is shown, never read as markup.
"""

import json

from rich.markup import escape
from rich.table import Table

from ltbench.display import accuracy
from ltbench.errors import CorruptFile, UserError
from ltbench.results_dir import ResultsDir
from ltbench.results_schema import HISTORY_FILE, HISTORY_LEADING, HISTORY_TRAILING

SHOWN_MATCHES = 5  # run ids listed when a prefix is ambiguous
SHOWN_EVALUATIONS = 12  # evaluated epochs listed in full; more are thinned to about this many


def find_run(store: ResultsDir, prefix: str) -> str:
    """The run id in the store that is `prefix` or starts with it; a UserError when none or
    several do."""
    prefix = prefix.strip()
    if not prefix:
        raise UserError("the run id is empty",
                        hint="give a run id or its first characters, as `ltbench status` lists them")
    store.ensure_readable()
    run_ids = store.run_ids()
    if prefix in run_ids:
        return prefix
    matches = [run_id for run_id in run_ids if run_id.startswith(prefix)]
    if not matches:
        raise UserError(f"no run in {store.root} has an id starting with {prefix!r}",
                        hint=f"`ltbench status --results-dir {store.root}` lists the runs; pass --results-dir if "
                        "the run is in another folder")
    if len(matches) > 1:
        listed = ", ".join(f"{run_id} ({_label(store, run_id)})" for run_id in matches[:SHOWN_MATCHES])
        more = f" and {len(matches) - SHOWN_MATCHES} more" if len(matches) > SHOWN_MATCHES else ""
        raise UserError(f"{len(matches)} runs in {store.root} have ids starting with {prefix!r}: {listed}{more}",
                        hint="give more characters of the run id")
    return matches[0]


def _label(store: ResultsDir, run_id: str) -> str:
    try:
        return store.read_spec(run_id).label
    except CorruptFile:
        return "spec unreadable"


def show(results_dir, prefix: str, console) -> int:
    store = ResultsDir(results_dir)
    run_id = find_run(store, prefix)
    spec = store.read_spec(run_id)
    state, why = store.inspect(run_id)
    row = store.read_result(run_id) if state in ("done", "failed") else None
    console.print(f"[bold]Run {escape(run_id)}[/bold]: {escape(spec.label)} ({escape(state)})")
    if why:
        console.print(f"  [red]{escape(why)}[/red]")
    console.print(spec_table(spec))
    console.print(provenance_table(spec, row))
    if row is not None:
        console.print(result_table(row))
    else:
        console.print("No result yet: the run is still going, was interrupted, or never started "
                      "(`ltbench run` with the same arguments resumes it).")
    console.print("[bold]History[/bold]")
    for line in history_summary(store, run_id):
        console.print(f"  {escape(line)}")
    return 0


def _table(title: str) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    return table


def _add(table: Table, name: str, value) -> None:
    table.add_row(escape(name), escape("" if value is None else str(value)))


def spec_table(spec) -> Table:
    """What the run is: the fields of its run id, its trainer settings and hyperparameters."""
    table = _table("Spec (what the run is: its run id hashes all of it but the preset)")
    _add(table, "method", spec.method)
    _add(table, "dataset", spec.dataset)
    _add(table, "imbalance factor", f"{spec.imbalance_factor:g}")
    for name in ("profile", "backbone", "seed", "epochs", "batch_size"):
        _add(table, name.replace("_", " "), getattr(spec, name))
    _add(table, "n_max", "the dataset's" if spec.n_max is None else spec.n_max)
    _add(table, "preset", spec.preset)
    for key, value in sorted(spec.params.items()):
        _add(table, key, _value(value))
    for owner, values in spec.hyperparameters.items():
        for key, value in sorted(values.items()):
            _add(table, f"{owner}.{key}", _value(value))
    return table


def provenance_table(spec, row: dict | None) -> Table:
    """Where and how the run was computed, as its result row records it."""
    table = _table("Provenance (how and where it ran: recorded, never part of the run id)")
    row = row or {}
    execution = row.get("execution") or json.dumps(spec.execution)
    for name, value in [
        ("git SHA", row.get("git_sha")), ("ltbench", row.get("ltbench_version")), ("torch", row.get("torch")),
        ("device", row.get("device")), ("threads", row.get("threads")),
        ("execution", _settings(execution)), ("split fingerprint", row.get("split_fingerprint")),
        ("started", row.get("started_at")), ("finished", row.get("finished_at")),
        ("Slurm job", row.get("slurm_job_id")), ("tag", row.get("tag")),
    ]:
        if value not in (None, ""):
            _add(table, name, value)
    for role, prefix in (("stage 1", "stage1"), ("teacher", "teacher")):
        if row.get(f"{prefix}_run_id"):
            reused = "reused" if row.get(f"{prefix}_reused") in ("True", "true", "1") else "trained with it"
            _add(table, role, f"run {row[prefix + '_run_id']} ({reused}; {row.get(prefix + '_wall_s') or '?'} s)")
    if row.get("calibration"):
        _add(table, "calibration", _settings(row["calibration"]))
    return table


def result_table(row: dict) -> Table:
    table = _table("Result (test set, last epoch)")
    _add(table, "status", row["status"])
    if row["status"] == "failed":
        _add(table, "error", row["error"])
        return table
    _add(table, "top-1 %", accuracy(row["top1"]))
    for group in ("many", "medium", "few"):
        classes = f" ({row[f'n_{group}']} classes)" if row.get(f"n_{group}") else ""
        _add(table, f"{group} %", f"{accuracy(row[group])}{classes}" if row[group] else "— (no class in the group)")
    if row.get("top1_best"):
        _add(table, "best top-1 % (chosen on the test set: for reference only)",
             f"{accuracy(row['top1_best'])} at epoch {row['top1_best_epoch']}")
    for name, column in (("training images", "n_train"), ("classes", "n_classes"), ("wall s", "wall_s"),
                         ("images/s", "images_per_s"), ("peak memory MB", "peak_mem_mb")):
        if row.get(column):
            _add(table, name, row[column])
    if row.get("forward_flops"):  # absent from the rows of an older ltbench
        _add(table, "forward GFLOPs (one image)", f"{float(row['forward_flops']) / 1e9:.4g}")
    return table


def history_summary(store: ResultsDir, run_id: str) -> list[str]:
    """A few lines on history.csv: its epochs, the loss, the learning rate, the method's own
    components, and top-1 at the evaluated epochs."""
    path = store.run_dir(run_id) / HISTORY_FILE
    if not path.exists():
        return [f"no {HISTORY_FILE}: no epoch finished yet, or the run was written by an ltbench that kept none"]
    try:
        rows = store.read_history(run_id)
    except CorruptFile as exc:
        return [f"could not be read: {exc}"]
    if not rows:
        return [f"{path} holds no epoch"]
    epochs = [_number(r.get("epoch")) for r in rows]
    lines = [f"{len(rows)} epoch(s) in {path.name}, epoch {_fmt(epochs[0])} to {_fmt(epochs[-1])}"]
    lines.append(_series("loss", rows, "loss"))
    rates = [v for v in (_number(r.get("lr")) for r in rows) if v is not None]
    if rates:
        lines.append(f"lr: {_fmt(rates[0])} at the first epoch, {_fmt(rates[-1])} at the last "
                     f"(range {_fmt(min(rates))} to {_fmt(max(rates))})")
    fixed = set(HISTORY_LEADING) | set(HISTORY_TRAILING)
    for column in (c for c in rows[0] if c not in fixed):
        lines.append(_series(column, rows, column))
    speeds = [v for v in (_number(r.get("images_per_s")) for r in rows) if v is not None]
    wall = _number(rows[-1].get("wall_s"))
    if speeds or wall is not None:
        lines.append("throughput: " + (f"{sum(speeds) / len(speeds):,.0f} images/s on average" if speeds else "?")
                     + (f"; {wall:,.1f} s of training to the last epoch" if wall is not None else ""))
    evaluated = [r for r in rows if _number(r.get("top1")) is not None]
    if not evaluated:
        lines.append("no evaluated epoch yet")
        return lines
    best = max(evaluated, key=lambda r: _number(r["top1"]))
    shown = _thin(evaluated, best)
    lines.append(f"top-1 % (many / medium / few) at {len(evaluated)} evaluated epoch(s)"
                 + (f", {len(shown)} shown" if len(shown) < len(evaluated) else "") + ":")
    for r in shown:
        groups = " / ".join(accuracy(r.get(g)) for g in ("many", "medium", "few"))
        mark = "  (best)" if r is best else ""
        lines.append(f"  epoch {r.get('epoch')}: {accuracy(r['top1'])} ({groups}){mark}")
    return lines


def _series(name: str, rows: list[dict], column: str) -> str:
    values = [(r.get("epoch"), _number(r.get(column))) for r in rows]
    values = [(epoch, v) for epoch, v in values if v is not None]
    if not values:
        return f"{name}: not recorded"
    (first_epoch, first), (last_epoch, last) = values[0], values[-1]
    text = f"{name}: {_fmt(first)} at epoch {first_epoch}, {_fmt(last)} at epoch {last_epoch}"
    if name.startswith("loss"):  # a loss's lowest epoch says whether it was still falling
        low_epoch, low = min(values, key=lambda item: item[1])
        return text + f" (lowest {_fmt(low)} at epoch {low_epoch})"
    numbers = [v for _, v in values]
    return text + f" (range {_fmt(min(numbers))} to {_fmt(max(numbers))})"


def _thin(evaluated: list[dict], best: dict) -> list[dict]:
    """All evaluated epochs when few; else about SHOWN_EVALUATIONS evenly spaced, with the
    first, the last and the best."""
    if len(evaluated) <= SHOWN_EVALUATIONS:
        return evaluated
    step = len(evaluated) / (SHOWN_EVALUATIONS - 1)
    keep = {round(i * step) for i in range(SHOWN_EVALUATIONS - 1)} | {len(evaluated) - 1}
    keep.add(next(i for i, r in enumerate(evaluated) if r is best))
    return [evaluated[i] for i in sorted(keep) if i < len(evaluated)]


def _number(text) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _fmt(value) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}"


def _value(value) -> str:
    return json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)


def _settings(text: str) -> str:
    """A JSON object of settings as `key=value, ...`; other text as it is."""
    try:
        values = json.loads(text)
    except (TypeError, ValueError):
        return text
    if not isinstance(values, dict):
        return text
    return ", ".join(f"{key}={_value(value)}" for key, value in sorted(values.items())) or "(defaults)"
