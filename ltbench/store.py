"""The results store: one folder per run, named by its run id.

    <results>/<run_id>/spec.json       the RunSpec
                       checkpoint.pt   latest epoch (weights, optimiser, RNG and sampler state)
                       per_class.csv   class, n_train, correct, total
                       result.csv      one row, RESULT_COLUMNS; written last, so its presence
                                       (status done) marks a finished run

Every file is written to a temporary name and renamed into place, so a killed process
leaves either the old file or the new one, never half of one. Each run has its own folder,
so concurrent jobs never write to one shared file.
"""

import csv
import io
import math
import json
import os
import tempfile
from pathlib import Path

import torch

from ltbench.errors import UserError
from ltbench.results_schema import PER_CLASS_COLUMNS, REQUIRED_COLUMNS, RESULT_COLUMNS
from ltbench.spec import RunSpec



def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def csv_bytes(columns: list[str], rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return out.getvalue().encode()


class CorruptFile(Exception):
    pass


def _finite(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


class RunStore:
    def __init__(self, root):
        self.root = Path(root)

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def ensure_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.root, prefix=".write-probe-")
            probe.close()
        except OSError as exc:
            raise UserError(
                f"results dir {self.root} is not writable ({exc.strerror or exc})",
                hint="pass --results-dir with a folder you can write to, or fix its permissions",
            ) from None

    # --------------------------------------------------------------- spec and result

    def write_spec(self, spec: RunSpec) -> None:
        atomic_write_bytes(self.run_dir(spec.run_id) / "spec.json", json.dumps(spec.to_dict(), indent=2).encode())

    def read_spec(self, run_id: str) -> RunSpec:
        path = self.run_dir(run_id) / "spec.json"
        try:
            return RunSpec.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise CorruptFile(f"{path}: {exc}") from None

    def write_result(self, row: dict, per_class: list[dict] | None = None) -> None:
        folder = self.run_dir(row["run_id"])
        if per_class is not None:
            atomic_write_bytes(folder / "per_class.csv", csv_bytes(PER_CLASS_COLUMNS, per_class))
        atomic_write_bytes(folder / "result.csv", csv_bytes(RESULT_COLUMNS, [row]))

    def read_result(self, run_id: str) -> dict | None:
        path = self.run_dir(run_id) / "result.csv"
        if not path.exists():
            return None
        try:
            with open(path, newline="") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise CorruptFile(f"{path}: {exc}") from None
        if len(rows) != 1 or not set(REQUIRED_COLUMNS) <= set(rows[0]) or rows[0]["run_id"] != run_id:
            raise CorruptFile(f"{path}: expected one row with the result columns for run {run_id}")
        row = {c: rows[0].get(c) or "" for c in RESULT_COLUMNS}  # columns added since it was written: empty
        if row["status"] == "done" and not _finite(row["top1"]):
            raise CorruptFile(f"{path}: status done but top1 is {row['top1']!r}, not a number")
        return row

    def read_per_class(self, run_id: str) -> list[dict]:
        with open(self.run_dir(run_id) / "per_class.csv", newline="") as fh:
            return list(csv.DictReader(fh))

    def state(self, run_id: str) -> str:
        """done | failed | partial (started, not finished) | corrupt | missing."""
        try:
            row = self.read_result(run_id)
        except CorruptFile:
            return "corrupt"
        if row is not None:
            return row["status"]
        folder = self.run_dir(run_id)
        return "partial" if (folder / "checkpoint.pt").exists() or (folder / "spec.json").exists() else "missing"

    def run_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "spec.json").is_file())

    # --------------------------------------------------------------- checkpoints

    def checkpoint_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "checkpoint.pt"

    def save_checkpoint(self, run_id: str, state: dict) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.checkpoint_path(run_id), buffer.getvalue())

    def load_checkpoint(self, run_id: str) -> dict | None:
        """The latest checkpoint, or None. A corrupt one is moved aside (kept for inspection)
        and reported, and the run starts over rather than failing for ever."""
        path = self.checkpoint_path(run_id)
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            aside = path.with_name("checkpoint.corrupt.pt")
            os.replace(path, aside)
            raise CorruptFile(f"checkpoint {path} could not be read ({exc}); moved to {aside.name}") from None
