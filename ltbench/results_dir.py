"""Reading a results dir: the one reader of the store's format.

    <results>/<run_id>/spec.json       the RunSpec
                       result.csv      one row, RESULT_COLUMNS; written last, so its presence
                                       marks a finished (done or failed) run
                       per_class.csv   class, name, n_train, correct, total
                       history.csv     one row per finished epoch
                       checkpoint.pt   latest epoch (ltbench.checkpoints: never read here)

The folder name, the spec's run id and the result row must all name the same run, and the
row's copy of the spec's fields must be the spec's: a folder where they disagree is corrupt,
and everything that reads results (the store before it trains, `ltbench status`, `show`, the
report) reads it through this module, so none of them can count a run another calls corrupt.

Imports neither torch nor pandas: status, show and the report start without them.
"""

import csv
import json
import math
from pathlib import Path

from ltbench.errors import CorruptFile, UserError
from ltbench.results_schema import HISTORY_FILE, NUMERIC_COLUMNS, REQUIRED_COLUMNS, RESULT_COLUMNS
from ltbench.spec import RunSpec

SPEC_FILE, RESULT_FILE, PER_CLASS_FILE, CHECKPOINT_FILE = "spec.json", "result.csv", "per_class.csv", "checkpoint.pt"
STATUSES = ("done", "failed")
# result-row columns that repeat the spec: a row that disagrees with its spec is another run's
ROW_SPEC_COLUMNS = ("method", "dataset", "imbalance_factor", "profile", "backbone", "seed", "epochs", "batch_size")


def is_legacy(spec_data) -> bool:
    """A spec.json of ltbench 0.1: one flat `params` dict (ltbench.migrate rewrites such runs)."""
    return isinstance(spec_data, dict) and "params" in spec_data and "hyperparameters" not in spec_data


def read_spec(folder: Path) -> RunSpec | None:
    """spec.json as a RunSpec whose run id is the folder's name; None for a 0.1 spec (its run
    id hashed other fields; ltbench.migrate renames it) or no spec at all. CorruptFile when it
    is not a spec or is another run's."""
    path = Path(folder) / SPEC_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if is_legacy(data):
            return None
        spec = RunSpec.from_dict(data)
        actual = spec.run_id
    except (OSError, ValueError, TypeError) as exc:
        raise CorruptFile(f"{path}: not a run spec ({exc})") from None
    if actual != path.parent.name:
        raise CorruptFile(f"{path} is the spec of run {actual} ({spec.label}), not of the folder's run "
                          f"{path.parent.name}")
    return spec


def read_result(folder: Path) -> dict | None:
    """The folder's result row (every RESULT_COLUMNS key, text), or None where there is none;
    CorruptFile when it cannot be read, is not a result, or names another run than its folder
    and spec."""
    folder = Path(folder)
    path = folder / RESULT_FILE
    if not path.exists():
        return None
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CorruptFile(f"{path}: unreadable CSV ({exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if rows and c not in rows[0]]
    if missing:
        more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        raise CorruptFile(f"{path}: missing columns {', '.join(missing[:4])}{more} (not a result of ltbench's)")
    if len(rows) != 1:
        raise CorruptFile(f"{path}: expected one data row, found {len(rows)}")
    # columns added since it was written: empty, as never recorded
    row = {c: (rows[0].get(c) or "").strip() for c in RESULT_COLUMNS}
    if row["run_id"] != folder.name:
        raise CorruptFile(f"{path}: the row is run {row['run_id']!r}'s, not the folder's run {folder.name}")
    if row["status"] not in STATUSES:
        raise CorruptFile(f"{path}: status {row['status']!r} is not one of {', '.join(STATUSES)}")
    bad = [c for c in NUMERIC_COLUMNS if row[c] and not _number(row[c])]
    if bad:
        raise CorruptFile(f"{path}: not a number: {', '.join(f'{c} ({row[c]!r})' for c in bad)}")
    if row["status"] == "done" and not _finite(row["top1"]):
        raise CorruptFile(f"{path}: status done but top1 is {row['top1'] or 'empty'}")
    if not _json_object(row["params"]):
        raise CorruptFile(f"{path}: params is not a JSON object ({row['params'][:40]!r})")
    spec = read_spec(folder)
    if spec is not None:
        wrong = [c for c in ROW_SPEC_COLUMNS if row[c] and not _same_value(row[c], getattr(spec, c))]
        if wrong:
            raise CorruptFile(f"{path}: its {', '.join(wrong)} ({', '.join(repr(row[c]) for c in wrong)}) "
                              f"disagree with the run's spec.json ({spec.label})")
    return row


def inspect(folder: Path) -> tuple[str, str]:
    """done | failed | partial (started, not finished) | corrupt | missing, and when it is
    corrupt, why."""
    folder = Path(folder)
    try:
        row = read_result(folder)
        if row is not None:
            return row["status"], ""
        read_spec(folder)
    except CorruptFile as exc:
        return "corrupt", str(exc)
    started = (folder / CHECKPOINT_FILE).exists() or (folder / SPEC_FILE).exists()
    return ("partial" if started else "missing"), ""


def read_table(path: Path) -> list[dict]:
    """A CSV of the run's (per-class, history) as rows of text; CorruptFile when unreadable."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CorruptFile(f"{path}: {exc}") from None


def read_history(folder: Path) -> list[dict]:
    """history.csv's rows as text (an empty list where there is none: a run not yet through
    its first epoch, or one written before ltbench kept histories)."""
    path = Path(folder) / HISTORY_FILE
    return read_table(path) if path.exists() else []


def _finite(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _number(text: str) -> bool:
    try:
        return not math.isnan(float(text))
    except ValueError:
        return False


def _json_object(text: str) -> bool:
    try:
        return not text or isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _same_value(cell: str, value) -> bool:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(cell) == float(value)
        except ValueError:
            return False
    return cell == str(value)


class ResultsDir:
    """A results dir read by run id: one folder per run, named by it."""

    def __init__(self, root):
        self.root = Path(root)

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def ensure_readable(self) -> None:
        """A UserError where the results dir is missing or is not a folder: nothing to read."""
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"results dir {self.root} is not a folder",
                            hint="pass --results-dir with the folder that holds the run folders")
        if not self.root.is_dir():
            raise UserError(f"results dir {self.root} does not exist",
                            hint="run a sweep first, or pass --results-dir with the folder that holds the run folders")

    def run_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / SPEC_FILE).is_file())

    def read_spec(self, run_id: str) -> RunSpec:
        """The run's spec; CorruptFile when it is missing, cannot be read or is another run's."""
        path = self.run_dir(run_id) / SPEC_FILE
        spec = read_spec(path.parent)
        if spec is None and not path.exists():
            raise CorruptFile(f"{path} is missing")
        if spec is None:
            raise CorruptFile(f"{path}: a spec of ltbench 0.1 not migrated yet (or that could not be: "
                              "`ltbench status` says why)")
        return spec

    def read_result(self, run_id: str) -> dict | None:
        return read_result(self.run_dir(run_id))

    def read_per_class(self, run_id: str) -> list[dict]:
        return read_table(self.run_dir(run_id) / PER_CLASS_FILE)

    def read_history(self, run_id: str) -> list[dict]:
        return read_history(self.run_dir(run_id))

    def inspect(self, run_id: str) -> tuple[str, str]:
        return inspect(self.run_dir(run_id))

    def state(self, run_id: str) -> str:
        return self.inspect(run_id)[0]
