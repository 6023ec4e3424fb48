"""The results store: one folder per run, named by its run id.

    <results>/<run_id>/spec.json       the RunSpec
                       checkpoint.pt   latest epoch (weights, optimiser, RNG and sampler state),
                                       stamped with the run id and spec it belongs to
                       per_class.csv   class, n_train, correct, total
                       result.csv      one row, RESULT_COLUMNS; written last, so its presence
                                       (status done) marks a finished run

Every file is written to a temporary name and renamed into place, so a killed process
leaves either the old file or the new one, never half of one. Each run has its own folder,
so concurrent jobs never write to one shared file. The folder name, the spec's run id, the
result row and the checkpoint must all name the same run; a folder where they disagree is
reported as corrupt and never counted.

Who can write a results dir can make ltbench read what they wrote, so folders are created
writable by their owner only (0755 less the umask) and files 0644 less the umask: readable
by collaborators as the umask allows, writable by no one else. Checkpoints are read
weights-only (tensors and plain data): loading one never runs code.
"""

import contextlib
import csv
import io
import json
import math
import os
import pickletools
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from ltbench.environment import now
from ltbench.errors import CorruptFile, UserError
from ltbench.results_schema import (HISTORY_FILE, HISTORY_LEADING, HISTORY_TRAILING, PER_CLASS_COLUMNS,
                                    PREDICTIONS_FILE, REQUIRED_COLUMNS, RESULT_COLUMNS)
from ltbench.spec import RunSpec

DIR_MODE, FILE_MODE = 0o755, 0o644  # less the umask; group and others never write
SET_ASIDE = ".corrupt"  # run folders whose files disagree, moved here rather than deleted
STATUSES = ("done", "failed")
# result-row columns that repeat the spec: a row that disagrees with its spec is another run's
ROW_SPEC_COLUMNS = ("method", "dataset", "imbalance_factor", "profile", "backbone", "seed", "epochs", "batch_size")


def umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it
    os.umask(mask)
    return mask


@contextlib.contextmanager
def owner_writes_only():
    """Files and folders created inside (by ltbench or by a library, e.g. submitit's job
    pickles) are not writable by group or others, whatever the user's umask."""
    before = os.umask(0o022)
    os.umask(before | 0o022)
    try:
        yield
    finally:
        os.umask(before)


def make_dirs(path: Path) -> None:
    """`mkdir -p` with every folder it creates at DIR_MODE less the umask (os.makedirs
    gives the parents it creates the default mode)."""
    path = Path(path)
    missing = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            if not folder.is_dir():
                raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    make_dirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:  # the folder takes no new file
        raise failed_write(exc, path.parent) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            # mkstemp creates 0600: give the file the mode any other file of the user gets
            os.fchmod(fh.fileno(), FILE_MODE & ~umask())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise failed_write(exc, path) from None
        raise


def failed_write(exc: OSError, path: Path) -> OSError:
    """`exc` naming the file or folder whose write failed: a full disk's error names none, a
    refused one the temporary file, which is gone by the time anyone reads the message."""
    return type(exc)(exc.errno, exc.strerror, str(path)) if exc.errno else exc


def csv_bytes(columns: list[str], rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return out.getvalue().encode()


def history_columns(history: list[dict]) -> list[str]:
    """The fixed leading and trailing columns, and between them what the method recorded, in
    the order it first appeared."""
    fixed = set(HISTORY_LEADING) | set(HISTORY_TRAILING)
    recorded = dict.fromkeys(k for row in history for k in row if k not in fixed)
    return [*HISTORY_LEADING, *recorded, *HISTORY_TRAILING]


class CheckpointRefused(Exception):
    """A checkpoint that is not used: loading it could run code, or it belongs to another run
    (or to other data). It is left where it is, for the user to look at."""


def _finite(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _same_value(cell: str, value) -> bool:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(cell) == float(value)
        except ValueError:
            return False
    return cell == str(value)


class RunStore:
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

    def ensure_writable(self) -> None:
        try:
            make_dirs(self.root)
            probe = tempfile.NamedTemporaryFile(dir=self.root, prefix=".write-probe-")
            probe.close()
        except OSError as exc:
            raise UserError(
                f"results dir {self.root} is not writable ({exc.strerror or exc})",
                hint="pass --results-dir with a folder you can write to, or fix its permissions",
            ) from None

    def write_text(self, run_id: str, name: str, text: str) -> None:
        """A file of the run's own (an error log), written as the store writes every file."""
        atomic_write_bytes(self.run_dir(run_id) / name, text.encode())

    # --------------------------------------------------------------- spec and result

    def write_spec(self, spec: RunSpec) -> None:
        atomic_write_bytes(self.run_dir(spec.run_id) / "spec.json", json.dumps(spec.to_dict(), indent=2).encode())

    def read_spec(self, run_id: str) -> RunSpec:
        """The run's spec; CorruptFile when it cannot be read or is another run's."""
        spec = self._checked_spec(run_id)
        if spec is None and not (self.run_dir(run_id) / "spec.json").exists():
            raise CorruptFile(f"{self.run_dir(run_id) / 'spec.json'} is missing")
        if spec is None:
            raise CorruptFile(f"{self.run_dir(run_id) / 'spec.json'}: a spec of ltbench 0.1 not migrated yet (or "
                              "that could not be: `ltbench status` says why)")
        return spec

    def _checked_spec(self, run_id: str) -> RunSpec | None:
        """spec.json as a RunSpec whose run id is the folder's; None for a 0.1 spec (its run
        id hashed other fields; ltbench.migrate renames it) or no spec at all."""
        from ltbench.migrate import is_legacy

        path = self.run_dir(run_id) / "spec.json"
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
        if actual != run_id:
            raise CorruptFile(f"{path} is the spec of run {actual} ({spec.label}), not of the folder's run {run_id}")
        return spec

    def write_result(self, row: dict, per_class: list[dict] | None = None) -> None:
        folder = self.run_dir(row["run_id"])
        if per_class is not None:
            atomic_write_bytes(folder / "per_class.csv", csv_bytes(PER_CLASS_COLUMNS, per_class))
        atomic_write_bytes(folder / "result.csv", csv_bytes(RESULT_COLUMNS, [row]))

    def write_history(self, run_id: str, history: list[dict]) -> None:
        """history.csv, rewritten whole from the checkpointed rows at each epoch end, so after
        a resume it holds exactly the epochs the weights have seen."""
        # six significant digits: a loss or lr reads as 0.693147, not 0.6931471805599453
        rows = [{k: format(v, ".6g") if isinstance(v, float) else v for k, v in row.items()} for row in history]
        atomic_write_bytes(self.run_dir(run_id) / HISTORY_FILE, csv_bytes(history_columns(history), rows))

    def read_history(self, run_id: str) -> list[dict]:
        """history.csv's rows as text (an empty list where there is none: a run not yet
        through its first epoch, or one written before ltbench kept histories)."""
        path = self.run_dir(run_id) / HISTORY_FILE
        if not path.exists():
            return []
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def write_predictions(self, run_id: str, arrays: dict) -> None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        atomic_write_bytes(self.run_dir(run_id) / PREDICTIONS_FILE, buffer.getvalue())

    def read_result(self, run_id: str) -> dict | None:
        """The run's result row, or None; CorruptFile when it cannot be read, is not a result,
        or names another run than its folder and spec."""
        path = self.run_dir(run_id) / "result.csv"
        if not path.exists():
            return None
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise CorruptFile(f"{path}: {exc}") from None
        if len(rows) != 1 or not set(REQUIRED_COLUMNS) <= set(rows[0]):
            raise CorruptFile(f"{path}: expected one row with the result columns for run {run_id}")
        row = {c: rows[0].get(c) or "" for c in RESULT_COLUMNS}  # columns added since it was written: empty
        if row["run_id"] != run_id:
            raise CorruptFile(f"{path}: the row is run {row['run_id']!r}'s, not the folder's run {run_id}")
        if row["status"] not in STATUSES:
            raise CorruptFile(f"{path}: status {row['status']!r} is not one of {', '.join(STATUSES)}")
        if row["status"] == "done" and not _finite(row["top1"]):
            raise CorruptFile(f"{path}: status done but top1 is {row['top1']!r}, not a number")
        spec = self._checked_spec(run_id)
        if spec is not None:
            wrong = [c for c in ROW_SPEC_COLUMNS if row[c] and not _same_value(row[c], getattr(spec, c))]
            if wrong:
                raise CorruptFile(f"{path}: its {', '.join(wrong)} ({', '.join(repr(row[c]) for c in wrong)}) "
                                  f"disagree with the run's spec.json ({spec.label})")
        return row

    def read_per_class(self, run_id: str) -> list[dict]:
        with open(self.run_dir(run_id) / "per_class.csv", newline="") as fh:
            return list(csv.DictReader(fh))

    def state(self, run_id: str) -> str:
        """done | failed | partial (started, not finished) | corrupt | missing."""
        return self.inspect(run_id)[0]

    def inspect(self, run_id: str) -> tuple[str, str]:
        """The run's state and, when it is corrupt, why."""
        try:
            row = self.read_result(run_id)
            if row is not None:
                return row["status"], ""
            self._checked_spec(run_id)
        except CorruptFile as exc:
            return "corrupt", str(exc)
        folder = self.run_dir(run_id)
        return ("partial" if (folder / "checkpoint.pt").exists() or (folder / "spec.json").exists() else "missing"), ""

    def run_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "spec.json").is_file())

    def set_aside(self, run_id: str) -> Path:
        """Moves a run folder whose files cannot be trusted out of the way (never deletes
        it), so the run can start over; returns where it went."""
        aside = self.root / SET_ASIDE / f"{run_id}.{now().replace(':', '')}"
        make_dirs(aside.parent)
        n = 1
        while aside.exists():
            n += 1
            aside = aside.with_name(f"{aside.name.split('~')[0]}~{n}")
        os.rename(self.run_dir(run_id), aside)
        return aside

    # --------------------------------------------------------------- checkpoints

    def checkpoint_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "checkpoint.pt"

    def save_checkpoint(self, spec: RunSpec, state: dict) -> None:
        """`state` (tensors and plain data only), stamped with the run it belongs to."""
        buffer = io.BytesIO()
        torch.save({**state, "run_id": spec.run_id, "spec": spec.to_dict()}, buffer)
        atomic_write_bytes(self.checkpoint_path(spec.run_id), buffer.getvalue())

    def load_checkpoint(self, run_id: str) -> dict | None:
        """The run's latest checkpoint, or None.

        Read weights-only, so nothing in it runs. One that would need more (a pickle that
        imports code) or that names another run is refused (CheckpointRefused) and left
        where it is; one that is merely unreadable is moved aside and reported (CorruptFile),
        and the run starts over rather than failing for ever."""
        path = self.checkpoint_path(run_id)
        if not path.exists():
            return None
        code = code_in_pickle(path)
        if code:
            raise CheckpointRefused(
                f"checkpoint {path} is not plain data: unpickling it would call {code}. It was not loaded; "
                "if you did not put it there, someone who can write this results dir did. Move it away "
                "(or delete it) to start the run over")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a damaged file
            aside = path.with_name("checkpoint.corrupt.pt")
            os.replace(path, aside)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CorruptFile(f"checkpoint {path} could not be read ({first}); moved to {aside.name}") from None
        check_checkpoint_identity(path, state, run_id)
        return state


def check_checkpoint_identity(path: Path, state, run_id: str) -> None:
    """The checkpoint names `run_id`, and its spec hashes to it: never another run's weights
    under this run's id."""
    if not isinstance(state, dict) or not isinstance(state.get("spec"), dict) or "run_id" not in state:
        raise CheckpointRefused(f"checkpoint {path} names no run (written by ltbench 0.1, or not by ltbench); "
                                "it was not used. Move it away (or delete it) to start the run over")
    if state["run_id"] != run_id:
        try:
            label = RunSpec.from_dict(state["spec"]).label
        except (TypeError, ValueError):
            label = "?"
        raise CheckpointRefused(f"checkpoint {path} is run {state['run_id']}'s ({label}), not run {run_id}'s: "
                                "copied from another run? It was not used. Move it away (or delete it) to start "
                                "the run over")
    try:
        hashed = RunSpec.from_dict(state["spec"]).run_id
    except (TypeError, ValueError) as exc:
        raise CheckpointRefused(f"checkpoint {path}: its spec is not a run spec ({exc})") from None
    if hashed != run_id:
        raise CheckpointRefused(f"checkpoint {path} says it is run {run_id}'s but holds the spec of run {hashed}; "
                                "it was not used. Move it away (or delete it) to start the run over")


# the pickle opcodes that import a global: a file torch.save wrote has its globals checked by
# torch (get_unsafe_globals_in_checkpoint); any other pickle was not written by ltbench
IMPORTS = {"GLOBAL", "STACK_GLOBAL", "INST"}
TEXT = {"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"}


def code_in_pickle(path: Path) -> str:
    """What a checkpoint's pickle would import beyond tensors and plain data ("" for none),
    found by reading its opcodes, never by running them. torch.load(weights_only=True)
    refuses such a file too; this tells a planted file from a damaged one."""
    try:
        if zipfile.is_zipfile(path):
            return ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        data = path.read_bytes()
    except (OSError, ValueError, RuntimeError, zipfile.BadZipFile):
        return ""  # unreadable: torch.load says how
    names, strings, stream = [], [], io.BytesIO(data)
    try:
        while stream.tell() < len(data):  # a legacy torch file is several pickles in a row
            start = stream.tell()
            for opcode, arg, _ in pickletools.genops(stream):
                if opcode.name in TEXT:
                    strings.append(arg)
                elif opcode.name == "STACK_GLOBAL":
                    names.append(".".join(strings[-2:]))
                elif opcode.name in IMPORTS:
                    names.append(str(arg).replace(" ", "."))
            if stream.tell() == start:
                break
    except Exception:  # noqa: BLE001 - not a pickle, or a damaged one: what it names so far
        pass
    return ", ".join(n for n in dict.fromkeys(names) if n not in _allowed_globals())


def _allowed_globals() -> set[str]:
    try:  # what torch's weights-only unpickler itself allows (a legacy-format torch file names them)
        from torch._weights_only_unpickler import _get_allowed_globals
        return set(_get_allowed_globals())
    except (ImportError, AttributeError):
        return set()
