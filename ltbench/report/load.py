"""Read a results directory: the finished runs, what was left out and why, bench data.

Nothing here is fatal: a file that cannot be used becomes a `LeftOut` entry with a reason,
so one bad CSV in a sweep of hundreds never hides the rest. A run's result row is read by
ltbench.results_dir, as `ltbench status` reads it: a row that disagrees with its folder or
its spec is left out as corrupt, never counted as a run of what it claims.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ltbench.errors import CorruptFile
from ltbench.results_dir import PER_CLASS_FILE, RESULT_FILE, SPEC_FILE, read_result
from ltbench.results_schema import (HISTORY_FILE, HISTORY_LEADING, NUMERIC_COLUMNS, PER_CLASS_COUNTS,
                                    PREDICTIONS_FILE, RESULT_COLUMNS)

from .names import remember_titles

BENCH_COLUMNS = ["loss", "batch_size", "peak_mem_mb", "step_ms", "device"]
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")


@dataclass(frozen=True)
class LeftOut:
    """A run or file the report could not use. `kind` is one of KINDS."""

    path: str
    kind: str
    reason: str
    method: str | None = None
    dataset: str | None = None
    imbalance_factor: float | None = None


# Kinds that stand for a run (counted as "runs left out"); the rest are files. An unused
# file is known output the report has no use for: listed, but not counted as a problem.
RUN_KINDS = ("failed", "partial", "corrupt", "duplicate")
KINDS = RUN_KINDS + ("skipped file", "unused file")


@dataclass
class Results:
    runs: pd.DataFrame  # one row per finished run; `params` parsed into `params_dict`
    per_class: dict[str, pd.DataFrame] = field(default_factory=dict)  # by run_id
    bench: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=BENCH_COLUMNS))
    left_out: list[LeftOut] = field(default_factory=list)
    # per-epoch history.csv by run_id, every column numeric (empty: NaN); runs of an older
    # ltbench have none
    history: dict[str, pd.DataFrame] = field(default_factory=dict)
    # predictions.npz by run_id, read only where a figure or table needs them (they hold one
    # row per test image)
    predictions: dict[str, Path] = field(default_factory=dict)


def load_results(results_dir: str | os.PathLike) -> Results:
    root = Path(results_dir)
    rows, per_class, bench, left_out, history, predictions = [], {}, [], [], {}, {}
    for kind, path in _walk(root):
        rel = _relative(path, root)
        if kind == "run":
            row, problems = _read_run(path, rel)
            left_out += problems
            if row is not None:
                rows.append(row)
                table, problem = _read_per_class(path / PER_CLASS_FILE, f"{rel}/{PER_CLASS_FILE}")
                if table is not None:
                    per_class[row["run_id"]] = table
                elif problem is not None:
                    left_out.append(problem)
                table, problem = _read_history(path / HISTORY_FILE, f"{rel}/{HISTORY_FILE}")
                if table is not None:
                    history[row["run_id"]] = table
                elif problem is not None:
                    left_out.append(problem)
                if (path / PREDICTIONS_FILE).is_file():
                    predictions[row["run_id"]] = path / PREDICTIONS_FILE
        elif kind == "partial":
            left_out.append(_partial(path, rel))
        else:
            table, problem = _read_csv(path, [])
            if table is None:
                left_out.append(LeftOut(rel, "skipped file", problem))
            elif set(BENCH_COLUMNS) <= set(table.columns):
                bench.append(_typed_bench(table))
            else:
                columns = ", ".join(list(table.columns)[:6])
                # Other benchmarks (throughput, ...) write here too: listed, not a problem.
                if "bench" in path.relative_to(root).parts[:-1]:
                    left_out.append(LeftOut(rel, "unused file", "benchmark output this report "
                                            f"does not plot (its columns: {columns})"))
                else:
                    left_out.append(LeftOut(rel, "skipped file", "not a result, per-class or "
                                            f"benchmark CSV (its columns: {columns})"))
    runs = pd.DataFrame(rows, columns=RESULT_COLUMNS + ["path", "params_dict", "params_key"])
    runs, duplicates = _drop_duplicates(runs)
    left_out += duplicates
    remember_titles(dict(zip(runs["method"], runs["method_title"])))
    for files in (per_class, history, predictions):
        for run_id in set(files) - set(runs["run_id"]):
            del files[run_id]
    bench_table = (pd.concat(bench, ignore_index=True) if bench
                   else pd.DataFrame(columns=BENCH_COLUMNS))
    return Results(runs.reset_index(drop=True), per_class, bench_table, left_out, history,
                   predictions)


def _walk(root: Path):
    """Yield ("run", folder), ("partial", folder) or ("csv", file), in a stable order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        if RESULT_FILE in filenames:
            dirnames[:] = []
            yield "run", here
        elif SPEC_FILE in filenames or any(f.endswith(CHECKPOINT_SUFFIXES) for f in filenames):
            dirnames[:] = []
            yield "partial", here
        else:
            for name in sorted(filenames):
                if name.lower().endswith(".csv"):
                    yield "csv", here / name


def _relative(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    return (root / rel).as_posix() if rel != "." else root.as_posix()


def _read_csv(path: Path, columns: list[str]) -> tuple[pd.DataFrame | None, str | None]:
    """All cells as stripped strings (empty stays empty), or None and why not."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (ValueError, OSError) as error:  # pandas' parser errors are ValueErrors
        return None, "unreadable CSV: " + (str(error).strip().splitlines() or ["empty"])[0]
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        return None, f"missing columns {', '.join(missing[:4])}{more}"
    return table.apply(lambda col: col.str.strip()), None


def _read_run(folder: Path, rel: str) -> tuple[dict | None, list[LeftOut]]:
    where = f"{rel}/{RESULT_FILE}"
    try:
        row = read_result(folder)
    except CorruptFile as exc:  # its path is the entry's own
        reason = str(exc).removeprefix(f"{folder / RESULT_FILE}: ")
        return None, [LeftOut(where, "corrupt", reason, **_spec_tag(folder))]
    numbers = {c: pd.to_numeric(row[c], errors="coerce") if row[c] else float("nan")
               for c in NUMERIC_COLUMNS}
    tag = dict(method=row["method"], dataset=row["dataset"],
               imbalance_factor=numbers["imbalance_factor"])
    if row["status"] == "failed":
        return None, [LeftOut(rel, "failed", row["error"] or "failed without a message", **tag)]
    params = json.loads(row["params"]) if row["params"] else {}  # an object: the reader checked
    row.update(numbers)
    row["path"] = rel
    row["params_dict"] = params
    # Canonical text so that key order or spacing never splits one spec into two.
    row["params_key"] = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return row, []


def _read_per_class(path: Path, rel: str) -> tuple[pd.DataFrame | None, LeftOut | None]:
    if not path.exists():
        return None, None
    table, problem = _read_csv(path, PER_CLASS_COUNTS)
    if table is not None:
        # the `name` column (missing in older files) names the classes in the per-class plot
        names = table["name"] if "name" in table.columns else None
        table = table[PER_CLASS_COUNTS].apply(pd.to_numeric, errors="coerce")
        if table.isna().any().any() or not len(table):
            table, problem = None, "empty or non-numeric cells"
        elif names is not None:
            table["class_name"] = names.where(names != "")
    if table is None:
        return None, LeftOut(rel, "skipped file", f"{problem} (the run still counts; only "
                                                  "its per-class plot is missing)")
    return table, None


def _read_history(path: Path, rel: str) -> tuple[pd.DataFrame | None, LeftOut | None]:
    """history.csv as numbers, one row per epoch in order; None and why when unusable."""
    if not path.exists():
        return None, None
    table, problem = _read_csv(path, HISTORY_LEADING)
    if table is not None:
        numbers = table.apply(pd.to_numeric, errors="coerce")
        # a cell that held text is not a number; an empty cell (no evaluation) is allowed
        bad = [c for c in table.columns if (numbers[c].isna() & (table[c] != "")).any()]
        if bad:
            table, problem = None, f"not a number in column {', '.join(bad[:4])}"
        elif not len(numbers) or numbers["epoch"].isna().any():
            table, problem = None, "no epochs, or an epoch without a number"
        else:
            table = numbers.sort_values("epoch").reset_index(drop=True)
    if table is None:
        return None, LeftOut(rel, "skipped file", f"{problem} (the run still counts; only "
                                                  "its training curves are missing)")
    return table, None


def _spec_tag(folder: Path) -> dict:
    """What the folder's spec.json says the run is, as far as it can be read: a run left out
    is still listed under its method and dataset."""
    try:
        spec = json.loads((folder / SPEC_FILE).read_text())
        return dict(method=spec.get("method"), dataset=spec.get("dataset"),
                    imbalance_factor=float(spec["imbalance_factor"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _partial(folder: Path, rel: str) -> LeftOut:
    return LeftOut(rel, "partial", f"no {RESULT_FILE} yet: still running or interrupted", **_spec_tag(folder))


def _typed_bench(table: pd.DataFrame) -> pd.DataFrame:
    table = table[BENCH_COLUMNS].copy()
    for column in ("batch_size", "peak_mem_mb", "step_ms"):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    return table.dropna(subset=["batch_size", "peak_mem_mb"])


def _drop_duplicates(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[LeftOut]]:
    """A run copied into two folders would count its seed twice; keep the latest."""
    ordered = runs.sort_values(["run_id", "finished_at", "path"], ascending=[True, False, True])
    repeated = ordered.duplicated("run_id", keep="first")
    kept = ordered[~repeated].set_index("run_id")["path"]
    left_out = [LeftOut(r.path, "duplicate", f"same run_id as {kept[r.run_id]}",
                        r.method, r.dataset, r.imbalance_factor)
                for r in ordered[repeated].itertuples()]
    return ordered[~repeated].sort_values("path"), left_out
