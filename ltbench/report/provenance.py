"""Which runs, code and data stand behind every number of the report.

Each table cell carries the ids of its runs (`Table.sources`); from them this module writes
a companion `<table>.provenance.csv` (one line per cell and run, with the run's git SHA,
ltbench and torch versions, device and split fingerprint), the HTML tooltip of each cell,
and warnings where a number mixes runs that saw different data or ran different code.
"""

from dataclasses import dataclass

import pandas as pd

from .tables import Section, Table, dataset_name, fmt_factor, plural, shown_label

# What a run records about where it came from (ltbench.results_schema), in the order shown.
RECORDED = ["git_sha", "ltbench_version", "torch", "device", "split_fingerprint"]
RECORDED_NAMES = {"git_sha": "git", "ltbench_version": "ltbench", "torch": "torch",
                  "device": "device", "split_fingerprint": "split"}
# Within one cell (the seeds of one spec) these must agree: a mean over seeds trained on
# different data or by different code is not a mean over seeds of one experiment.
CODE_AND_DATA = ["split_fingerprint", "git_sha", "ltbench_version"]
WHAT = {"split_fingerprint": "split fingerprints", "git_sha": "git SHAs",
        "ltbench_version": "ltbench versions"}
SUMMARY_MIXES = 5  # the section's opening names this many mixes; its table lists them all
TOOLTIP_RUNS = 12  # a tooltip lists this many runs; the companion CSV lists them all
COMPANION_COLUMNS = ["table", "row", "column", "row_label", "column_header", "cell", "run_id",
                     "method", "dataset", "imbalance_factor", "seed", *RECORDED, "path",
                     "warning"]


@dataclass(frozen=True)
class Mix:
    """A report cell whose runs differ in data or code."""
    where: str  # "CE, CIFAR-10-LT IF 100" or "CIFAR-10-LT IF 100 (every method)"
    what: str  # "split fingerprints 1a2b3c4d (2 runs), 5e6f7a8b (1 run)"
    run_ids: tuple[str, ...]
    columns: tuple[str, ...]  # the recorded columns whose values differ

    def text(self) -> str:
        return f"{self.where}: runs with different {self.what}."


class Provenance:
    """The recorded origin of every run the report uses (`runs`: labelled result rows)."""

    def __init__(self, runs: pd.DataFrame):
        columns = ["run_id", "label", "method", "dataset", "imbalance_factor", "profile",
                   "n_train", "seed", *RECORDED, "path"]
        table = runs.reindex(columns=columns).copy()
        for column in RECORDED:
            table[column] = table[column].fillna("").astype(str).str.strip()
        self.runs = table.set_index("run_id", drop=False)
        self.mixes = _cell_mixes(self.runs) + _column_mixes(self.runs)
        self._mixes_of = {}  # run id -> the mixes it is part of, so a cell checks only those
        for mix in self.mixes:
            for run_id in mix.run_ids:
                self._mixes_of.setdefault(run_id, []).append(mix)

    def warning(self, run_ids) -> str:
        """The warning a cell built from `run_ids` carries, or "": the mixes whose
        difference shows among these runs themselves (a rank over many settings is not
        warned for the settings' own different splits, only for a mix inside one of them)."""
        run_ids = set(run_ids)
        candidates = {id(m): m for r in run_ids for m in self._mixes_of.get(r, [])}
        found = []
        for mix in sorted(candidates.values(), key=self.mixes.index):
            shared = self.runs.loc[[r for r in mix.run_ids if r in run_ids]]
            if any(_distinct(shared[c]) > 1 for c in mix.columns):
                found.append(mix)
        return " ".join(m.text() for m in found)

    def tooltip(self, run_ids) -> str:
        """"2 runs: 1a2b3c4d5e6f (seed 0; git abc1234, ltbench 0.1.0, ...); ..."."""
        run_ids = [r for r in run_ids if r in self.runs.index]
        if not run_ids:
            return ""
        lines = [f"{plural(len(run_ids), 'run')}:"]
        for run_id in run_ids[:TOOLTIP_RUNS]:
            run = self.runs.loc[run_id]
            recorded = ", ".join(f"{RECORDED_NAMES[c]} {run[c] or 'not recorded'}"
                                 for c in RECORDED)
            seed = "" if pd.isna(run["seed"]) else f"seed {run['seed']:g}; "
            lines.append(f"{run_id} ({seed}{recorded})")
        if len(run_ids) > TOOLTIP_RUNS:
            lines.append(f"... and {len(run_ids) - TOOLTIP_RUNS} more (see the table's "
                         ".provenance.csv)")
        warning = self.warning(run_ids)
        return ("Warning: " + warning + "\n" if warning else "") + "\n".join(lines)

    def companion(self, section: Section) -> pd.DataFrame | None:
        """One line per (cell, run) of every table in `section`; None when no table names
        its runs. A whole-row source has column "" and column_header "(whole row)"."""
        records = []
        for t, table in enumerate(section.tables):
            for (i, j), run_ids in sorted(table.sources.items(),
                                          key=lambda item: (item[0][0], -1 if item[0][1] is None
                                                            else item[0][1])):
                cell = dict(table=table.title or f"{section.name} {t + 1}", row=i,
                            column="" if j is None else j, row_label=table.rows[i][0],
                            column_header="(whole row)" if j is None else _header(table, j),
                            cell="" if j is None else table.rows[i][j],
                            warning=self.warning(run_ids))
                for run_id in run_ids:
                    if run_id not in self.runs.index:
                        continue
                    run = self.runs.loc[run_id]
                    records.append({**cell, **{c: run[c] for c in COMPANION_COLUMNS
                                               if c in run.index}})
        if not records:
            return None
        return pd.DataFrame(records, columns=COMPANION_COLUMNS)

    def section(self) -> Section:
        """The report's provenance section: what differs where (a table), and every run's
        recorded origin (the CSV)."""
        rows = [[m.where, m.what, plural(len(m.run_ids), "run")] for m in self.mixes]
        tables = []
        if rows:
            tables.append(Table(
                header=["Cell", "What differs", "Runs"], rows=rows,
                title="Cells that mix data or code",
                notes=["A cell's seeds should be one experiment: the same split (split "
                       "fingerprint: a hash of the training and test images and labels) and "
                       "the same code (git SHA, ltbench version). Methods compared in one "
                       "column should share the split when their construction (imbalance "
                       "factor, profile, training-set size) is the same. The runs: each "
                       "table's .provenance.csv; in the HTML, each marked cell's tooltip."]))
        data = self.runs.reset_index(drop=True)
        return Section("provenance", "Provenance", tables, data, intro=self.summary())

    def summary(self) -> str:
        """One paragraph: the code and data versions seen, and whether anything mixes."""
        seen = []
        for column in ("git_sha", "ltbench_version", "torch"):
            values = sorted(v for v in self.runs[column].unique() if v)
            if values:
                seen.append(f"{RECORDED_NAMES[column]} {', '.join(values[:6])}"
                            + (f" and {len(values) - 6} more" if len(values) > 6 else ""))
        recorded = self.runs["split_fingerprint"].ne("").sum()
        text = (f"{plural(len(self.runs), 'run')}" + (f" ({'; '.join(seen)})" if seen else "")
                + f"; {recorded} of them record a split fingerprint. ")
        if self.mixes:
            shown = " ".join(m.text() for m in self.mixes[:SUMMARY_MIXES])
            more = len(self.mixes) - SUMMARY_MIXES
            text += (f"Warning: {shown}" + (f" And {more} more (below)." if more > 0 else ""))
        else:
            text += "No cell mixes runs with different split fingerprints or code versions."
        return (text + " Every table's runs, cell by cell: tables/<table>.provenance.csv; "
                "in the HTML, each cell's tooltip names its runs.")


def _distinct(values: pd.Series) -> int:
    """How many different recorded values (an empty cell was not recorded: not a value)."""
    return values[values != ""].nunique()


def _spread(rows: pd.DataFrame, column: str) -> str:
    """"split fingerprints 1a2b (2 runs), 3c4d (1 run)"."""
    counts = rows[column].replace("", "not recorded").value_counts(sort=False)
    return WHAT[column] + " " + ", ".join(f"{value} ({plural(n, 'run')})"
                                          for value, n in sorted(counts.items()))


def _cell_mixes(runs: pd.DataFrame) -> list[Mix]:
    """Seeds of one table row in one (dataset, IF) cell that differ in data or code."""
    mixes = []
    for (label, dataset, factor), cell in runs.groupby(
            ["label", "dataset", "imbalance_factor"], dropna=False, sort=True):
        columns = [c for c in CODE_AND_DATA if _distinct(cell[c]) > 1]
        if columns:
            mixes.append(Mix(f"{shown_label(label)}, {_cell_name(dataset, factor)}",
                             "; ".join(_spread(cell, c) for c in columns),
                             tuple(cell["run_id"]), tuple(columns)))
    return mixes


def _column_mixes(runs: pd.DataFrame) -> list[Mix]:
    """Methods compared in one column whose runs were built the same way (dataset, IF,
    profile, training-set size) but saw different data; each method consistent on its own
    (a method that is not is already a cell mix)."""
    mixes = []
    keys = ["dataset", "imbalance_factor", "profile", "n_train"]
    for (dataset, factor, profile, _), column in runs.groupby(keys, dropna=False, sort=True):
        per_label = column.groupby("label")["split_fingerprint"].agg(
            lambda v: set(v) - {""})
        consistent = per_label[per_label.map(len) == 1]
        if consistent.map(lambda v: next(iter(v))).nunique() > 1:
            runs_of = column[column["label"].isin(consistent.index)]
            by_print = {}
            for label, prints in consistent.items():
                by_print.setdefault(next(iter(prints)), []).append(shown_label(label))
            what = "split fingerprints between methods: " + "; ".join(
                f"{fp} ({', '.join(labels)})" for fp, labels in sorted(by_print.items()))
            suffix = "" if profile in ("exp", "") or pd.isna(profile) else f", {profile} profile"
            mixes.append(Mix(f"{_cell_name(dataset, factor)}{suffix} (methods compared)", what,
                             tuple(runs_of["run_id"]), ("split_fingerprint",)))
    return mixes


def _cell_name(dataset, factor) -> str:
    return f"{dataset_name(dataset)} IF {fmt_factor(factor)}"


def _header(table: Table, j: int) -> str:
    groups = [name for name, span in table.groups for _ in range(span)]
    group = groups[j] if j < len(groups) else ""
    return f"{group} {table.header[j]}".strip()
